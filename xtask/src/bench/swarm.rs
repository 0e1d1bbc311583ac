//! Deploy figures on the swarm target, and in the same run the peer: plain
//! `docker service update --update-order start-first --update-failure-action
//! rollback` on a service with the same image and HEALTHCHECK behind a
//! static nginx (through unix sockets, as our swarm target reached tasks
//! before it moved to HAProxy on an overlay), whose slots are pointed at
//! its tasks once, before the load starts, as a static config would. Nothing moves them afterwards: without
//! the ingress mesh (not available here) that is what plain swarm gives.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bollard::{query_parameters::ListTasksOptionsBuilder, Docker};
use serde::Serialize;

use crate::{
    balancer::Balancer,
    deploy::{Options, Source},
    engine,
    environment::{BalancerConfig, Strategy},
    load::Load,
    targets::swarm::{service::update_state, SwarmTarget},
    targets::Target,
};

const PEER: &str = "xtask-bench-peer";

#[derive(Debug, Serialize)]
pub struct Figure {
    pub seconds: f64,
    /// Ours: until every slot served the new release; the peer: until the CLI returned.
    pub traffic_moved_seconds: Option<f64>,
    pub rollback_seconds: Option<f64>,
    pub failed_requests: u64,
    pub succeeded: bool,
}

#[derive(Debug, Serialize)]
pub struct SwarmFigures {
    pub rolling: Figure,
    pub blue_green: Figure,
    pub never_ready: Figure,
    pub crashing: Figure,
    pub peer_rolling: Figure,
    pub peer_never_ready: Figure,
}

pub async fn run(docker: &Docker, docker_host: &str, v1: &str, v2: &str) -> Result<SwarmFigures> {
    let was_swarm = docker
        .info()
        .await?
        .swarm
        .and_then(|s| s.control_available)
        .unwrap_or(false);
    engine::swarm::ensure_single_node(docker).await?;
    let figures = async {
        let (rolling, blue_green, never_ready, crashing) = ours(v1, v2).await?;
        let (peer_rolling, peer_never_ready) = peer(docker, docker_host, v1, v2).await?;
        Ok(SwarmFigures {
            rolling,
            blue_green,
            never_ready,
            crashing,
            peer_rolling,
            peer_never_ready,
        })
    }
    .await;
    if !was_swarm {
        engine::swarm::leave_if_ours(docker).await?;
    }
    figures
}

async fn ours(v1: &str, v2: &str) -> Result<(Figure, Figure, Figure, Figure)> {
    let env = super::throwaway_env("swarm-local", "bench-swarm")?;
    let target = SwarmTarget::connect(&env).await?;
    let deploy = |image: &str, vars: &[(&str, &str)], strategy| {
        let source = Source::Image {
            image: image.to_owned(),
            overrides: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        let options = Options {
            strategy: Some(strategy),
            quiet: true,
            command: "bench".into(),
            ..Default::default()
        };
        let (target, env) = (&target, &env);
        async move { crate::deploy::run(target, env, source, &options).await }
    };
    let figures = async {
        let warm_up = deploy(v1, &[], Strategy::Rolling).await?;
        anyhow::ensure!(
            warm_up.succeeded,
            "the first swarm deploy failed: {:?}",
            warm_up.release.reason
        );
        let load = started_load(target.public_client()?, &target.public_url()).await;
        let mut out = vec![];
        for (image, vars, strategy) in [
            (v2, &[][..], Strategy::Rolling),
            (v1, &[][..], Strategy::BlueGreen),
            (
                v2,
                &[("DATABASE_URL", "postgres://127.0.0.1:1/x")][..],
                Strategy::Rolling,
            ),
            (v2, &[("PORT", "abc")][..], Strategy::Rolling),
        ] {
            let failed_before = load.failed_so_far();
            let report = deploy(image, vars, strategy).await?;
            out.push(Figure {
                seconds: report.seconds,
                traffic_moved_seconds: report.traffic_moved_seconds,
                rollback_seconds: report.rollback_seconds,
                failed_requests: load.failed_so_far() - failed_before,
                succeeded: report.succeeded,
            });
        }
        load.stop().await;
        let mut out = out.into_iter();
        let mut next = || out.next().expect("four deploys");
        Ok((next(), next(), next(), next()))
    }
    .await;
    let _ = target.destroy().await;
    figures
}

async fn started_load(client: reqwest::Client, public_url: &str) -> Load {
    let load = Load::start(client, format!("{public_url}/version"), 4);
    while load.ok_so_far() < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load
}

/// `docker ARGS` against the engine, blocking (off the async workers).
async fn cli(docker_host: &str, args: Vec<String>) -> Result<bool> {
    let host = docker_host.to_owned();
    tokio::task::spawn_blocking(move || {
        duct::cmd("docker", &args)
            .env("DOCKER_HOST", host)
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
            .map(|o| o.status.success())
            .with_context(|| format!("docker {}", args.join(" ")))
    })
    .await?
}

async fn running_tasks(docker: &Docker) -> Result<Vec<String>> {
    let filters = HashMap::from([
        ("service".to_owned(), vec![PEER.to_owned()]),
        ("desired-state".to_owned(), vec!["running".to_owned()]),
    ]);
    let tasks = docker
        .list_tasks(Some(
            ListTasksOptionsBuilder::default().filters(&filters).build(),
        ))
        .await?;
    Ok(tasks.into_iter().filter_map(|t| t.id).collect())
}

async fn peer(docker: &Docker, docker_host: &str, v1: &str, v2: &str) -> Result<(Figure, Figure)> {
    let dir = tempfile::tempdir()?;
    let sockets = dir.path().join("sockets");
    std::fs::create_dir_all(&sockets)?;
    if nix::unistd::geteuid().is_root() {
        let uid = crate::targets::docker::APP_UID;
        nix::unistd::chown(&sockets, Some(uid.into()), Some(uid.into()))?;
    }
    let policy = [
        "--update-order",
        "start-first",
        "--update-failure-action",
        "rollback",
    ];
    let mut create: Vec<String> = [
        "service",
        "create",
        "-q",
        "--detach=false",
        "--name",
        PEER,
        "--replicas",
        "3",
    ]
    .map(String::from)
    .to_vec();
    create.extend([
        "--mount".into(),
        format!("type=bind,source={},target=/run/app", sockets.display()),
        "--env".into(),
        "LISTEN_SOCKET=/run/app/{{.Task.ID}}.sock".into(),
        "--env".into(),
        "DRAIN_SECONDS=2".into(),
        "--env".into(),
        "BIND=127.0.0.1".into(),
        "--health-interval".into(),
        "250ms".into(),
        "--rollback-order".into(),
        "start-first".into(),
    ]);
    create.extend(policy.map(String::from));
    create.push(v1.to_owned());
    let https_port = super::free_port()?;
    let balancer = Balancer::new(
        dir.path(),
        &BalancerConfig {
            https_port,
            http_port: super::free_port()?,
            api_rate: 1_000_000,
            metrics_port: None,
            publish_address: None,
        },
    );
    let figures = async {
        anyhow::ensure!(
            cli(docker_host, create).await?,
            "docker service create {PEER} failed"
        );
        balancer.ensure(3).await?;
        for (slot, task) in running_tasks(docker).await?.iter().enumerate() {
            balancer.route(slot, &sockets.join(format!("{task}.sock")))?;
        }
        let public = format!("https://127.0.0.1:{https_port}");
        let load = started_load(balancer.public_client()?, &public).await;

        let update = |extra: Vec<String>| {
            let mut args: Vec<String> = ["service", "update", "-q", "--detach=false"]
                .map(String::from)
                .to_vec();
            args.extend(policy.map(String::from));
            args.extend(extra);
            args.push(PEER.to_owned());
            cli(docker_host, args)
        };
        let (failed_before, started) = (load.failed_so_far(), Instant::now());
        let ok = update(vec!["--image".into(), v2.to_owned()]).await?;
        let seconds = started.elapsed().as_secs_f64();
        let rolling = Figure {
            seconds,
            traffic_moved_seconds: Some(seconds),
            rollback_seconds: None,
            failed_requests: load.failed_so_far() - failed_before,
            succeeded: ok,
        };
        // The failing release starts from working slots, as a fresh static config would.
        for (slot, task) in running_tasks(docker).await?.iter().enumerate() {
            balancer.route(slot, &sockets.join(format!("{task}.sock")))?;
        }
        // nginx keeps dead slots out for its fail_timeout (10 s): the second
        // measure starts once no request has failed for a second.
        let settle = Instant::now() + Duration::from_secs(30);
        loop {
            let failed = load.failed_so_far();
            tokio::time::sleep(Duration::from_secs(1)).await;
            if load.failed_so_far() == failed || Instant::now() > settle {
                break;
            }
        }
        let (failed_before, started) = (load.failed_so_far(), Instant::now());
        update(vec![
            "--env-add".into(),
            "DATABASE_URL=postgres://127.0.0.1:1/x".into(),
        ])
        .await?;
        // The CLI may return when the rollback starts; restored is when it completed.
        let deadline = Instant::now() + Duration::from_secs(120);
        let restored = loop {
            let service = docker.inspect_service(PEER, None).await?;
            let state = update_state(&service)
                .0
                .map(|s| s.to_string())
                .unwrap_or_default();
            if state == "rollback_completed" || Instant::now() > deadline {
                break state == "rollback_completed";
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let seconds = started.elapsed().as_secs_f64();
        let never_ready = Figure {
            seconds,
            traffic_moved_seconds: None,
            rollback_seconds: restored.then_some(seconds),
            failed_requests: load.failed_so_far() - failed_before,
            succeeded: false,
        };
        load.stop().await;
        Ok((rolling, never_ready))
    }
    .await;
    let _ = balancer.stop();
    let _ = docker.delete_service(PEER).await;
    figures
}
