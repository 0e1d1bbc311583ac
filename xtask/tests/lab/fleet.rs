//! The Docker target over the 3 lab hosts, reached over SSH as from any
//! runner (the lab's ssh wrapper on PATH, pinned host keys): images pulled
//! by each host from the lab registry with its credentials, one balancer
//! per host, keep-alive load on every host's public URL. What runs on each
//! host is checked through that host's own engine socket, not through the
//! tool under test.
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use xtask::{engine, lab::Lab};

use super::{
    env::{pushed_images, LabEnv},
    shared_lab,
};

/// `hosts prepare` builds the balancer image on each host over SSH.
pub fn prepared(fleet: &LabEnv) {
    let out = fleet.xtask(&["hosts", "prepare"]);
    assert!(
        out.status.success(),
        "hosts prepare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ssh_hosts(lab: &Lab) -> Vec<String> {
    lab.hosts.iter().map(|h| h.ssh_docker_host()).collect()
}

/// Rolling (host by host: surge = replicas) and blue-green over 3 hosts
/// under load on every host's URL with no failed request; a crashing
/// release undone on every host and recorded as failed; a deploy killed
/// with SIGKILL half-way, then the next deploy recovers by itself; a
/// rollback from a runner with none of this machine's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_over_ssh_deploys_undoes_recovers_and_rolls_back_on_every_host() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (v1, v2) = pushed_images(lab).await;
    let fleet = LabEnv::fleet(lab, "roll", "rolling", &ssh_hosts(lab));
    prepared(&fleet);

    let (ok, first, stderr) = fleet.json(&["deploy", "--image", &v1]);
    assert!(ok, "first deploy: {first}\n{stderr}");
    let r1 = first["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r1, "after the first deploy").await;

    let loads = fleet.load().await;
    let (ok, rolled, stderr) = fleet.json(&["deploy", "--image", &v2]);
    assert!(ok, "rolling deploy: {rolled}\n{stderr}");
    let r2 = rolled["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r2, "after the rolling deploy").await;

    let (ok, green, stderr) = fleet.json(&["deploy", "--image", &v1, "--strategy", "blue-green"]);
    assert!(ok, "blue-green deploy: {green}\n{stderr}");
    let r3 = green["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r3, "after the blue-green deploy").await;

    let (ok, crashed, _) = fleet.json(&["deploy", "--image", &v2, "--env", "PORT=abc"]);
    assert!(!ok, "a crashing release fails: {crashed}");
    assert_eq!(crashed["release"]["outcome"], "failed", "{crashed}");
    fleet
        .assert_only(&r3, "after the crashing release was undone")
        .await;
    for (url, load) in fleet.urls().iter().zip(loads) {
        let report = load.stop().await;
        assert!(report.ok > 100, "{url}: {report:?}");
        assert_eq!(report.failed, 0, "{url}: {report:?}");
    }

    // SIGKILL once the new release has instances on the first host.
    let mut child = fleet.spawn(&["deploy", "--image", &v2, "--json"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let running = fleet.running().await;
        if running[0].keys().any(|r| *r != r3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new instance on h1: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, recovered, stderr) = fleet.json(&["deploy", "--image", &v2]);
    assert!(ok, "the deploy after a killed one: {recovered}\n{stderr}");
    let r5 = recovered["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r5, "after the recovering deploy").await;

    // A fresh runner: none of this machine's runtime files.
    for host in &lab.hosts {
        let _ = std::fs::remove_dir_all(xtask::targets::docker::runtime_root().join(format!(
            "{}@{}",
            fleet.scope(),
            host.address
        )));
    }
    let (ok, rolled_back, stderr) = fleet.json(&["rollback"]);
    assert!(ok, "rollback from a fresh runner: {rolled_back}\n{stderr}");
    let back = rolled_back["release"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        rolled_back["release"]["restores"],
        r3.as_str(),
        "{rolled_back}"
    );
    fleet.assert_only(&back, "after the rollback").await;
    let (_, history, _) = fleet.json(&["history"]);
    let outcomes: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["id"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        format!("{r2}=superseded"),
        format!("{r5}=rolled-back"),
        format!("{back}=active"),
    ] {
        assert!(outcomes.contains(&expected), "{outcomes:?}");
    }
    assert!(
        outcomes.iter().filter(|o| o.ends_with("=failed")).count() >= 2,
        "the crash and the killed run are recorded as failed: {outcomes:?}"
    );
    fleet.destroy().await;
}

/// One host whose sshd does not answer: the deploy is refused naming it,
/// and nothing (no instance, no balancer, no record) is made on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_be_reached_stops_the_deploy_before_anything_changes() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (v1, _) = pushed_images(lab).await;
    let mut hosts = ssh_hosts(lab);
    // Nothing listens there: what a stopped sshd looks like from the runner.
    let lost = format!("{}:2222", hosts[2]);
    hosts[2] = lost.clone();
    let fleet = LabEnv::fleet(lab, "lost", "rolling", &hosts);
    let out = fleet.xtask(&["deploy", "--image", &v1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&lost) && stderr.contains("nothing was changed on any host"),
        "{stderr}"
    );
    for host in &lab.hosts[..2] {
        let docker = engine::connect(&host.docker_host()).await.unwrap();
        let by_scope = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("xtask.scope={}", fleet.scope())],
        )]);
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&by_scope)
                    .build(),
            ))
            .await
            .unwrap();
        let volumes = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&by_scope)
                    .build(),
            ))
            .await
            .unwrap();
        assert!(containers.is_empty(), "{}: {containers:?}", host.name);
        assert!(
            volumes.volumes.unwrap_or_default().is_empty(),
            "{}: no lock or history record",
            host.name
        );
    }
}
