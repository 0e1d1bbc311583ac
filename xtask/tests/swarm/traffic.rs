//! Zero failed requests through rolling and blue-green deploys, and through a
//! rollback that replaces tasks already serving.
use std::time::Duration;

use serde_json::Value;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_and_blue_green_deploys_of_3_replicas_under_keep_alive_load_fail_no_request() {
    let (_serial, v1, v2, env) = setup("sw-roll", "rolling", "cpus = 0.5\nmemory_mb = 64").await;
    // The first release comes from the authenticated registry: the node pulls it
    // with the credentials sent along with the service create.
    let pushed = support::xtask(&["push", &v1, "--json"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let reference = serde_json::from_slice::<Value>(&pushed.stdout).unwrap()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let docker = support::swarm().await;
    docker
        .remove_image(
            &reference,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();
    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &reference]);
    assert!(ok, "{first} {stderr}");
    let target = env.swarm_target().await;
    assert_eq!(running(&target).await, all("blue", "r1"));

    // The service carries swarm's own policies, start-first both ways.
    let spec = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap()
        .spec
        .unwrap();
    let spec = serde_json::to_value(&spec).unwrap();
    assert_eq!(spec["UpdateConfig"]["Order"], "start-first");
    assert_eq!(spec["UpdateConfig"]["FailureAction"], "rollback");
    assert_eq!(
        spec["RollbackConfig"]["Order"], "start-first",
        "moby#34111/#43081"
    );
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
        64 * 1024 * 1024
    );
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"],
        500_000_000
    );
    // Spread over the nodes: no placement constraint; reached on the
    // environment's overlay by address (DNS round-robin, no VIP, no ingress).
    assert!(
        spec["TaskTemplate"]["Placement"]["Constraints"].is_null(),
        "no pinning: {spec}"
    );
    // The engine stores the network's id where the spec named it.
    let overlay = docker
        .inspect_network(
            target.network(),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(overlay.driver.as_deref(), Some("overlay"));
    let attached = spec["TaskTemplate"]["Networks"][0]["Target"]
        .as_str()
        .unwrap_or_default();
    assert!(
        attached == target.network() || Some(attached) == overlay.id.as_deref(),
        "{spec}"
    );
    assert_eq!(spec["EndpointSpec"]["Mode"], "dnsrr", "{spec}");
    assert!(
        spec["EndpointSpec"]["Ports"].is_null(),
        "no ingress: {spec}"
    );
    let balancer = docker
        .inspect_container(&format!("{}-balancer", target.scope()), None)
        .await
        .unwrap();
    let networks = balancer.network_settings.unwrap().networks.unwrap();
    assert!(
        networks.contains_key(target.network()),
        "the balancer is on the overlay: {networks:?}"
    );

    let load = load_against(&env).await;
    let before = load.ok_so_far();
    let (ok, rolled, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "{rolled} {stderr}");
    let blue = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        xtask::targets::swarm::service::update_state(&blue).0,
        Some(bollard::models::ServiceUpdateStatusStateEnum::COMPLETED),
        "swarm did the update"
    );
    assert_eq!(running(&target).await, all("blue", "r2"));

    let (ok, green, stderr) =
        env.xtask_json(&["deploy", "--image", &v1, "--strategy", "blue-green"]);
    assert!(ok, "{green} {stderr}");
    assert_eq!(running(&target).await, all("green", "r3"));
    // The old colour is kept at 0 replicas, as history.
    let blue = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            release_of(&blue).as_deref(),
            xtask::targets::swarm::service::replicas_of(&blue)
        ),
        (Some("r2"), 0)
    );

    let (ok, back, stderr) =
        env.xtask_json(&["deploy", "--image", &v2, "--strategy", "blue-green"]);
    assert!(ok, "{back} {stderr}");
    assert_eq!(running(&target).await, all("blue", "r4"));
    assert!(
        load.ok_so_far() > before + 300,
        "load ran through all three deploys"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    for r in [&rolled, &green, &back] {
        assert!(r["traffic_moved_seconds"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_traffic_moved_starts_the_old_tasks_first_without_a_failed_request() {
    // moby#34111 / #43081: a stop-first rollback drops every serving task at
    // once. Here the new release serves all traffic when the run is told to
    // stop (Ctrl-C during verification), so its rollback replaces serving tasks.
    let (_serial, v1, v2, env) = setup("sw-undo", "rolling", "").await;
    let text = std::fs::read_to_string(env.arg())
        .unwrap()
        .replace("verify_seconds = 1", "verify_seconds = 20");
    std::fs::write(env.arg(), text).unwrap();
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let target = env.swarm_target().await;
    let load = load_against(&env).await;

    let deploy = env.spawn_deploy(&v2);
    let mut moved = false;
    for _ in 0..1500 {
        if running(&target).await == all("blue", "r2") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "r2 took all traffic");
    let served_before = load.ok_so_far();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(deploy.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| deploy.wait_with_output()).unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert!(
        report["release"]["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted by SIGINT"),
        "{report}"
    );
    assert_eq!(
        running(&target).await,
        all("blue", "r1"),
        "swarm's rollback put r1 back; the run said: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        load.ok_so_far() > served_before + 100,
        "load ran through the rollback"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
}
