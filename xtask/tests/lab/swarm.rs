//! The swarm target over the 3-node lab swarm (1 manager, 2 workers),
//! reached through the manager's sshd: tasks spread over the nodes (no
//! pinning), pulled by each node from the lab registry with the
//! credentials sent along, reached by the balancer on the manager across
//! the overlay. Where tasks run is read from the manager's own socket.
use std::{collections::BTreeSet, time::Duration};

use bollard::query_parameters::{ListTasksOptionsBuilder, UpdateNodeOptionsBuilder};
use xtask::{engine, lab::Lab};

use super::{
    env::{pushed_images, LabEnv},
    fleet::prepared,
    shared_lab,
};

/// Nodes (by hostname) running a task of `scope`'s services now.
async fn nodes_running(lab: &Lab, scope: &str) -> BTreeSet<String> {
    let manager = engine::connect(&lab.manager().unwrap().docker_host())
        .await
        .unwrap();
    let running =
        std::collections::HashMap::from([("desired-state".to_owned(), vec!["running".to_owned()])]);
    let tasks = manager
        .list_tasks(Some(
            ListTasksOptionsBuilder::default().filters(&running).build(),
        ))
        .await
        .unwrap();
    let services = manager
        .list_services(None::<bollard::query_parameters::ListServicesOptions>)
        .await
        .unwrap();
    let ours: BTreeSet<String> = services
        .into_iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.name.as_deref())
                .is_some_and(|n| n.starts_with(scope))
        })
        .filter_map(|s| s.id)
        .collect();
    let mut nodes = BTreeSet::new();
    for task in tasks {
        let running = task
            .status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(|s| s == bollard::models::TaskState::RUNNING);
        if running && task.service_id.as_ref().is_some_and(|id| ours.contains(id)) {
            let node = task.node_id.unwrap_or_default();
            let name = lab
                .hosts
                .iter()
                .find(|h| h.swarm.as_ref().is_some_and(|s| s.node_id == node))
                .map_or(node, |h| h.name.clone());
            nodes.insert(name);
        }
    }
    nodes
}

/// `availability` (`active`, `drain`) for lab host `name`'s node.
async fn set_availability(
    lab: &Lab,
    name: &str,
    availability: bollard::models::NodeSpecAvailabilityEnum,
) {
    let manager = engine::connect(&lab.manager().unwrap().docker_host())
        .await
        .unwrap();
    let id = &lab.host(name).unwrap().swarm.as_ref().unwrap().node_id;
    let node = manager.inspect_node(id).await.unwrap();
    let mut spec = node.spec.unwrap();
    spec.availability = Some(availability);
    let version = node.version.unwrap().index.unwrap() as i64;
    manager
        .update_node(
            id,
            spec,
            UpdateNodeOptionsBuilder::default().version(version).build(),
        )
        .await
        .unwrap();
}

/// A rolling deploy to `v2`, a blue-green one back to `v1`, then a
/// crashing `v2` (`PORT=abc`) that fails and is recorded failed.
fn rolling_blue_green_and_a_crash(env: &LabEnv, v1: &str, v2: &str) {
    let (ok, rolled, stderr) = env.json(&["deploy", "--image", v2]);
    assert!(ok, "rolling deploy: {rolled}\n{stderr}");
    let (ok, green, stderr) = env.json(&["deploy", "--image", v1, "--strategy", "blue-green"]);
    assert!(ok, "blue-green deploy: {green}\n{stderr}");
    let (ok, crashed, _) = env.json(&["deploy", "--image", v2, "--env", "PORT=abc"]);
    assert!(!ok, "a crashing release fails: {crashed}");
    assert_eq!(crashed["release"]["outcome"], "failed", "{crashed}");
}

/// Rolling and blue-green over the three nodes under keep-alive load; a
/// crashing release rolled back; a worker drained while a deploy runs; not
/// one failed request through the manager's balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swarm_over_three_nodes_spreads_tasks_deploys_under_load_and_survives_a_drain() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (v1, v2) = pushed_images(lab).await;
    let env = LabEnv::swarm(lab, "sw", "rolling", 4);
    prepared(&env);

    let (ok, first, stderr) = env.json(&["deploy", "--image", &v1]);
    assert!(ok, "first deploy: {first}\n{stderr}");
    let nodes = nodes_running(lab, &env.scope()).await;
    assert!(
        nodes.len() >= 2,
        "4 tasks spread over at least 2 nodes: {nodes:?}"
    );

    let loads = env.load().await;
    rolling_blue_green_and_a_crash(&env, &v1, &v2);

    // A worker drained while a rolling deploy runs.
    let child = env.spawn(&["deploy", "--image", &v2, "--json"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    set_availability(lab, "h3", bollard::models::NodeSpecAvailabilityEnum::DRAIN).await;
    let out = tokio::task::block_in_place(|| child.wait_with_output().unwrap());
    set_availability(lab, "h3", bollard::models::NodeSpecAvailabilityEnum::ACTIVE).await;
    assert!(
        out.status.success(),
        "the deploy during a drain: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = nodes_running(lab, &env.scope()).await;
    assert!(
        !after.contains("h3"),
        "nothing runs on the drained node: {after:?}"
    );

    for (url, load) in env.urls().iter().zip(loads) {
        let report = load.stop().await;
        assert!(report.ok > 100, "{url}: {report:?}");
        assert_eq!(report.failed, 0, "{url}: {report:?}");
    }
    env.destroy().await;
}

/// `target.balancer_nodes`: a balancer on each of the three nodes, each
/// reaching the tasks over the overlay wherever they run. Under keep-alive
/// load on all three public URLs: rolling, blue-green and a crashing
/// release, not one failed request on any node; every node's balancer ends
/// on the release the history says is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balancer_on_every_node_serves_each_deploy_without_a_failed_request() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (v1, v2) = pushed_images(lab).await;
    let env = LabEnv::swarm_balanced_on_every_node(lab, "swn", 3);
    prepared(&env);

    let (ok, first, stderr) = env.json(&["deploy", "--image", &v1]);
    assert!(ok, "first deploy: {first}\n{stderr}");
    let balancers = balancer_nodes(lab, &env.scope()).await;
    assert_eq!(balancers.len(), 3, "a balancer on each node: {balancers:?}");

    let loads = env.load().await;
    rolling_blue_green_and_a_crash(&env, &v1, &v2);

    let client = env.client();
    let mut served = BTreeSet::new();
    for (url, load) in env.urls().iter().zip(loads) {
        let report = load.stop().await;
        assert!(report.ok > 100, "{url}: {report:?}");
        assert_eq!(report.failed, 0, "{url}: {report:?}");
        let version = client.get(format!("{url}/version")).send().await.unwrap();
        served.insert(version.text().await.unwrap());
    }
    assert_eq!(
        served.len(),
        1,
        "every node serves the same release: {served:?}"
    );
    env.destroy().await;
}

/// The lab hosts that run the environment's balancer container.
async fn balancer_nodes(lab: &Lab, scope: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for host in &lab.hosts {
        let docker = xtask::engine::connect(&host.docker_host()).await.unwrap();
        let name = format!("{scope}-balancer");
        if let Ok(inspect) = docker.inspect_container(&name, None).await {
            if inspect.state.and_then(|s| s.running) == Some(true) {
                found.insert(host.name.clone());
            }
        }
    }
    found
}
