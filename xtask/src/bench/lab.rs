//! `cargo xtask bench deploy --lab`: the swarm target on a 3-node lab swarm
//! (1 manager, 2 workers, reached over SSH as from a runner) against swarm
//! updating the same service spec by itself, in the same run on the same
//! lab. The peer is our live service's spec, copied under another name:
//! same image, HEALTHCHECK interval, start-first order, rollback on
//! failure, monitor and overlay; its update is `docker service update
//! --update-order start-first --update-failure-action rollback --image v2`
//! done through the API, timed until swarm reports it completed. Without
//! the routing mesh (no IPVS here) nothing serves the peer's tasks to a
//! client, so only its time is measured, not its failed requests.
use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use bollard::models::{ServiceSpec, ServiceUpdateStatusStateEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    deploy::{self, DeployReport, Source},
    engine,
    environment::{self, Strategy},
    lab::{self, Lab},
    load::Load,
    targets::{swarm::SwarmTarget, Target},
};

const PREFIX: &str = "xlbench";
const PEER: &str = "xtask-bench-lab-peer";

#[derive(Debug, Serialize)]
pub struct LabFigures {
    pub rolling_traffic_moved_seconds: f64,
    pub rolling_failed_requests: u64,
    pub blue_green_traffic_moved_seconds: f64,
    pub blue_green_failed_requests: u64,
    pub requests_ok: u64,
    pub peer_update_seconds: f64,
    pub nodes_with_tasks: usize,
}

pub async fn run(v1: &str, v2: &str) -> Result<LabFigures> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench deploy --lab makes a lab of network namespaces: run it as root");
    }
    let dir = crate::workspace::target_dir().join("lab-bench");
    lab::down(PREFIX, &dir).await?;
    let mut options = lab::Options::new(3, true);
    options.prefix = PREFIX.into();
    options.dir = dir.clone();
    let (made, _) = lab::up(&options).await?;
    let figures = measure(&made, &dir, v1, v2).await;
    lab::down(PREFIX, &dir).await?;
    figures
}

async fn measure(lab: &Lab, dir: &Path, v1: &str, v2: &str) -> Result<LabFigures> {
    let registry = lab.registry.as_ref().context("the lab has a registry")?;
    let credentials = registry.credentials()?;
    // Every engine of the lab is reached over SSH through the lab's own
    // client, and the nodes pull with the lab registry's credentials, as a
    // runner would (see docs/LAB.md).
    std::env::set_var("PATH", lab.ssh.path_env());
    std::env::set_var("XTASK_REGISTRY", &registry.address);
    std::env::set_var("REGISTRY_USERNAME", &credentials.username);
    std::env::set_var("REGISTRY_PASSWORD", &credentials.password);
    let (v1, v2) = push(lab, v1, v2).await?;
    for host in &lab.hosts {
        crate::haproxy::image::ensure_on(&host.ssh_docker_host(), true).await?;
    }
    let env = environment::load(&write_env(lab, dir)?)?;
    let target = SwarmTarget::connect(&env).await?;
    let figures = async {
        let warm = run_deploy(&target, &env, &v1, Strategy::Rolling).await?;
        anyhow::ensure!(
            warm.succeeded,
            "the first deploy failed: {:?}",
            warm.release.reason
        );
        let load = Load::start(
            target.public_client()?,
            format!("{}/version", target.public_url()),
            4,
        );
        while load.ok_so_far() < 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = load.failed_so_far();
        let rolling = run_deploy(&target, &env, &v2, Strategy::Rolling).await?;
        let rolling_failed = load.failed_so_far() - before;
        let before = load.failed_so_far();
        let blue_green = run_deploy(&target, &env, &v1, Strategy::BlueGreen).await?;
        let blue_green_failed = load.failed_so_far() - before;
        let report = load.stop().await;
        anyhow::ensure!(
            rolling.succeeded && blue_green.succeeded,
            "a measured deploy failed"
        );
        let nodes = nodes_with_tasks(&target).await?;
        let peer = peer_update(&target, &v2).await;
        let _ = target.docker().delete_service(PEER).await;
        Ok(LabFigures {
            rolling_traffic_moved_seconds: rolling.traffic_moved_seconds.unwrap_or(f64::NAN),
            rolling_failed_requests: rolling_failed,
            blue_green_traffic_moved_seconds: blue_green.traffic_moved_seconds.unwrap_or(f64::NAN),
            blue_green_failed_requests: blue_green_failed,
            requests_ok: report.ok,
            peer_update_seconds: peer?,
            nodes_with_tasks: nodes,
        })
    }
    .await;
    let _ = target.destroy().await;
    figures
}

/// v1 and v2 in the lab registry, where every node pulls them from.
async fn push(lab: &Lab, v1: &str, v2: &str) -> Result<(String, String)> {
    let registry = lab.registry.as_ref().context("the lab has a registry")?;
    let c = registry.credentials()?;
    let auth = crate::registry::Credentials::new(&c.username, &c.password, "the lab registry");
    let (machine, _) = engine::require().await?;
    let mut pushed = vec![];
    for source in [v1, v2] {
        pushed.push(
            crate::registry::push(&machine, source, &registry.address, Some(&auth), true)
                .await?
                .reference,
        );
    }
    Ok((pushed[0].clone(), pushed[1].clone()))
}

fn write_env(lab: &Lab, dir: &Path) -> Result<String> {
    let manager = lab.manager().context("a swarm lab has a manager")?;
    let registry = &lab
        .registry
        .as_ref()
        .context("the lab has a registry")?
        .address;
    let text = format!(
        "[target]\nkind = \"swarm\"\nhost = \"{}\"\n[image]\nrepo = \"{registry}/xtask-app\"\n\
         [deploy]\nreplicas = 3\nstrategy = \"rolling\"\nprune = false\n\
         [health]\npath = \"/ready\"\ninterval_ms = 100\ntimeout_ms = 2000\nsuccess_threshold = 2\n\
         failure_threshold = 3\ndeadline_seconds = 120\ndrain_seconds = 2\nverify_seconds = 1\n\
         [balancer]\nhttps_port = 9443\nhttp_port = 9080\napi_rate = 1000000\n\
         [swarm]\nhealthcheck_interval_ms = 250\nmonitor_seconds = 1\n",
        manager.ssh_docker_host()
    );
    let path = dir.join("benchlab.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

async fn run_deploy(
    target: &SwarmTarget,
    env: &environment::Environment,
    image: &str,
    strategy: Strategy,
) -> Result<DeployReport> {
    let options = deploy::Options {
        strategy: Some(strategy),
        quiet: true,
        command: "bench".into(),
        ..Default::default()
    };
    let source = Source::Image {
        image: image.to_owned(),
        overrides: BTreeMap::new(),
    };
    deploy::run(target, env, source, &options).await
}

async fn nodes_with_tasks(target: &SwarmTarget) -> Result<usize> {
    let filters =
        std::collections::HashMap::from([("desired-state".to_owned(), vec!["running".to_owned()])]);
    let options = bollard::query_parameters::ListTasksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let nodes: std::collections::BTreeSet<String> = target
        .docker()
        .list_tasks(Some(options))
        .await?
        .into_iter()
        .filter_map(|t| t.node_id)
        .collect();
    Ok(nodes.len())
}

/// The live service's spec as `PEER` on v1, converged; then swarm's own
/// start-first update to `v2`, timed until it reports completed.
async fn peer_update(target: &SwarmTarget, v2: &str) -> Result<f64> {
    let colour = target
        .serving_colour()
        .await?
        .context("no live service to copy for the peer")?;
    let live = target
        .inspect_service(&target.service_name(colour))
        .await?
        .and_then(|s| s.spec)
        .context("the live service has no spec")?;
    let mut spec = ServiceSpec {
        name: Some(PEER.into()),
        labels: None,
        ..live
    };
    target.apply(spec.clone(), None).await?;
    wait_converged(target, Duration::from_secs(120)).await?;
    let current = target
        .inspect_service(PEER)
        .await?
        .context("the peer service is gone")?;
    if let Some(c) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        c.image = Some(v2.to_owned());
    }
    let started = Instant::now();
    target.apply(spec, Some(&current)).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let service = target.docker().inspect_service(PEER, None).await?;
        match crate::targets::swarm::service::update_state(&service).0 {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => break,
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED)
            | Some(ServiceUpdateStatusStateEnum::PAUSED) => {
                bail!("the peer's update did not complete")
            }
            _ if Instant::now() > deadline => bail!("the peer's update took over 300 s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Until the peer's 3 tasks run.
async fn wait_converged(target: &SwarmTarget, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let running = target
            .tasks(PEER)
            .await?
            .iter()
            .filter(|t| t.running())
            .count();
        if running >= 3 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the peer service did not run 3 tasks in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
