//! This checkout's private dockerd restarted (SIGTERM, then `cargo xtask
//! engine start`) while a deploy runs.
use std::time::{Duration, Instant};

use xtask::{engine, targets::Target};

use crate::{figure, instances, load_against, lock_is_free, setup, wait_for_lock, wait_public};

/// Expected: the deploy in its gate loses the engine; it exits 1 (or,
/// should the engine be back in time, finishes), never hangs. Whatever it
/// left (a held lock of a dead process, a release in progress, a balancer
/// restarted with empty slots) the next command finishes: `status` exits 0
/// and leaves the lock free with nothing in progress, the previous release
/// (or the new one, if it had been verified) serving after `route` at most;
/// the next deploy needs no manual step and fails no keep-alive request.
/// Requests during the restart itself fail (every container stops with the
/// engine): counted and reported, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerd_restarted_mid_deploy_leaves_nothing_the_next_command_cannot_finish() {
    let (_serial, v1, v2, env) = setup("dockerd", 2000).await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let state = engine::load_state()
        .unwrap()
        .expect("the private engine of `cargo xtask engine start`");
    let dockerd = state
        .dockerd
        .clone()
        .expect("a private dockerd this checkout started (never another engine)");
    assert!(dockerd.is_running());
    let client = env.target().await.public_client().unwrap();
    let outage_load = load_against(&env).await;

    let mut deploy = env.spawn_deploy(&v2);
    wait_for_lock(&env).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let restarted = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dockerd.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    while dockerd.is_running() {
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "dockerd did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_after = restarted.elapsed();
    let out = crate::support::xtask(&["engine", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let engine_back = restarted.elapsed();

    let mut waited = 0;
    let exit = loop {
        if let Some(status) = deploy.try_wait().unwrap() {
            break status;
        }
        waited += 1;
        if waited > 1200 {
            let _ = deploy.kill();
            panic!("the deploy hung after the engine restart");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deploy_done = restarted.elapsed();
    let out = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("the deploy during the restart: {exit:?}\n{stderr}");
    let left_locked = !lock_is_free(&env).await;

    let (ok, status, stderr) = env.xtask_json(&["status"]);
    assert!(ok, "status finishes what was left: {stderr}");
    assert!(status["in_progress"].is_null(), "{status}");
    assert!(lock_is_free(&env).await, "{status}");
    let active = status["active_release"]["id"].as_str().unwrap().to_owned();
    let mut routed = false;
    if crate::public_status(&env, &client, "/health").await != Some(200) {
        let (ok, route, stderr) = env.xtask_json(&["route"]);
        assert!(ok, "{stderr}");
        assert_eq!(route["release"], active.as_str(), "{route}");
        routed = true;
    }
    wait_public(&env, &client, Duration::from_secs(15), |s| s == Some(200)).await;
    let recovered = restarted.elapsed();
    let outage = outage_load.stop().await;
    assert_eq!(instances(&env).await, vec![(active.clone(), true); 3]);

    let load = load_against(&env).await;
    let (ok, next, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "the next deploy needs no manual step: {stderr}");
    let next_id = next["release"]["id"].as_str().unwrap().to_owned();
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(instances(&env).await, vec![(next_id, true); 3]);

    let t = "dockerd_restarted_mid_deploy";
    figure(
        t,
        "SIGTERM to dockerd gone",
        format!("{:.1}s", stopped_after.as_secs_f64()),
    );
    figure(
        t,
        "SIGTERM to engine answering again",
        format!("{:.1}s", engine_back.as_secs_f64()),
    );
    figure(
        t,
        "SIGTERM to the deploy's exit",
        format!(
            "{:.1}s ({exit:?}, lock left held: {left_locked})",
            deploy_done.as_secs_f64()
        ),
    );
    figure(
        t,
        "SIGTERM to public 200",
        format!(
            "{:.1}s (status recovered it{})",
            recovered.as_secs_f64(),
            if routed { ", then route" } else { "" }
        ),
    );
    figure(
        t,
        "requests during the restart",
        format!("{} ok, {} failed", outage.ok, outage.failed),
    );
    figure(
        t,
        "next deploy under load",
        format!("{} ok, {} failed", report.ok, report.failed),
    );
}
