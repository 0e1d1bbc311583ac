//! A balancer port another process already holds.
//!
//! Expected: the deploy exits 1 with an error naming `balancer.https_port`
//! and `balancer.http_port`, the address and the fix, before anything is
//! recorded: no release in the history (so no failed release and no
//! rollback that would fail the same way), no instance, no balancer
//! container. Once the port is free, the same deploy succeeds.
use super::setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_process_is_refused_before_anything_is_recorded() {
    let (_serial, v1, _v2, env) = setup("port", 0).await;
    let (docker, _) = super::support::docker().await;
    let holder = std::net::TcpListener::bind(("127.0.0.1", env.https_port)).unwrap();

    let out = env.xtask(&["deploy", "--image", &v1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("balancer.https_port = {}", env.https_port))
            && stderr.contains("is in use by another process"),
        "{stderr}"
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert!(
        history.as_array().is_some_and(|h| h.is_empty()),
        "nothing recorded: {history}"
    );
    let left = env.containers(&docker, None).await;
    assert!(
        left.is_empty(),
        "no instance and no balancer left: {left:?}"
    );

    drop(holder);
    let (ok, deployed, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "once the port is free: {deployed}\n{stderr}");
}
