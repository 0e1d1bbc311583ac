//! Deploy figures on the Docker target under keep-alive load, and the seed's
//! script doing the same in the same run.
use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use serde_json::json;

use super::{canary, edge, ratio, seed, swarm};
use crate::{
    deploy::{self, DeployReport, Source},
    engine, environment, image,
    load::Load,
    report,
    targets::{docker::DockerTarget, Target},
};

const REPLICAS: usize = 3;

fn bench_env() -> Result<environment::Environment> {
    let env = super::throwaway_env("dev", "bench")?;
    anyhow::ensure!(
        env.file.deploy.replicas == REPLICAS,
        "infrastructure/environments/dev.toml: the benchmark expects deploy.replicas = {REPLICAS}"
    );
    Ok(env)
}

struct Measured {
    report: DeployReport,
    failed: u64,
}

async fn measured(
    target: &DockerTarget,
    env: &environment::Environment,
    load: &Load,
    image: &str,
    vars: &[(&str, &str)],
    strategy: environment::Strategy,
) -> Result<Measured> {
    let failed_before = load.failed_so_far();
    let overrides: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let options = deploy::Options {
        strategy: Some(strategy),
        quiet: true,
        command: "bench".into(),
        ..Default::default()
    };
    let report = deploy::run(
        target,
        env,
        Source::Image {
            image: image.to_owned(),
            overrides,
        },
        &options,
    )
    .await?;
    Ok(Measured {
        report,
        failed: load.failed_so_far() - failed_before,
    })
}

/// The app built from this tree (`<repo>:<revision>`) and a second release
/// of it (`xtask-bench-app:v2`, one label more), in `docker`.
pub async fn images(docker: &bollard::Docker, repo: &str) -> Result<(String, String)> {
    let v1 = format!("{repo}:{}", image::revision::current()?.tag());
    if docker.inspect_image(&v1).await.is_err() {
        image::build(
            docker,
            &image::BuildRequest {
                repo: repo.to_owned(),
                ..Default::default()
            },
        )
        .await?;
    }
    let v2 = "xtask-bench-app:v2".to_owned();
    let tar = image::context::tar(&format!("FROM {v1}\nLABEL xtask.bench.release=v2\n"), &[])?;
    image::build_context(docker, tar, std::slice::from_ref(&v2), true).await?;
    Ok((v1, v2))
}

/// `--lab`: the swarm target over a 3-node lab swarm against swarm alone.
pub async fn run_lab(json: bool) -> Result<()> {
    let started = engine::start().await?;
    let docker = engine::connect(&started.state.docker_host).await?;
    let (v1, v2) = images(&docker, &bench_env()?.file.image.repo).await?;
    let f = super::lab::run(&v1, &v2).await?;
    if json {
        report::print_json(&f);
        return Ok(());
    }
    let mut table = report::Table::new(
        &format!(
            "bench deploy --lab: swarm over 3 nodes, tasks on {} nodes, {} requests ok",
            f.nodes_with_tasks, f.requests_ok
        ),
        &[
            "",
            "xtask",
            "failed requests",
            "swarm alone (update completed)",
            "ratio",
        ],
    );
    for (name, seconds, failed) in [
        (
            "rolling, all traffic on the new release",
            f.rolling_traffic_moved_seconds,
            f.rolling_failed_requests,
        ),
        (
            "blue-green, all traffic on the new release",
            f.blue_green_traffic_moved_seconds,
            f.blue_green_failed_requests,
        ),
    ] {
        table.row(vec![
            name.into(),
            format!("{seconds:.2}s"),
            failed.to_string(),
            format!("{:.2}s", f.peer_update_seconds),
            ratio(seconds, f.peer_update_seconds),
        ]);
    }
    table.emit();
    Ok(())
}

pub async fn run(json: bool, docker_only: bool) -> Result<()> {
    let started = engine::start().await?;
    let docker = engine::connect(&started.state.docker_host).await?;
    let env = bench_env()?;
    let (v1, v2) = images(&docker, &env.file.image.repo).await?;

    let target = DockerTarget::connect(&env).await?;
    let figures = async {
        let warm_up = deploy::run(
            &target,
            &env,
            Source::Image {
                image: v1.clone(),
                overrides: BTreeMap::new(),
            },
            &deploy::Options {
                strategy: None,
                quiet: true,
                command: "bench".into(),
                ..Default::default()
            },
        )
        .await?;
        anyhow::ensure!(
            warm_up.succeeded,
            "the first deploy failed: {:?}",
            warm_up.release.reason
        );
        // Before any load: wrk alone on the machine, the balancer against one instance.
        let edge = edge::run(&docker, &target.public_url(), &v1, env.file.app.port).await?;
        let load = Load::start(
            target.public_client()?,
            format!("{}/version", target.public_url()),
            4,
        );
        while load.ok_so_far() < 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rolling = measured(
            &target,
            &env,
            &load,
            &v2,
            &[],
            environment::Strategy::Rolling,
        )
        .await?;
        let blue_green = measured(
            &target,
            &env,
            &load,
            &v1,
            &[],
            environment::Strategy::BlueGreen,
        )
        .await?;
        let failing = measured(
            &target,
            &env,
            &load,
            &v2,
            &[("DATABASE_URL", "postgres://127.0.0.1:1/x")],
            environment::Strategy::Rolling,
        )
        .await?;
        let ok = load.stop().await.ok;
        Ok::<_, anyhow::Error>((rolling, blue_green, failing, ok, edge))
    }
    .await;
    let _ = target.destroy().await;
    let (rolling, blue_green, failing, ours_ok, edge) = figures?;
    let canary = canary::run(&v1, &v2).await?;
    let seed = seed::run(&docker, &started.state.docker_host, &v1, &v2).await?;
    let swarm = if docker_only {
        None
    } else {
        Some(swarm::run(&docker, &started.state.docker_host, &v1, &v2).await?)
    };

    let rollback = failing.report.rollback_seconds.unwrap_or(f64::NAN);
    let out = json!({
        "replicas": REPLICAS,
        "verify_seconds": env.file.health.verify_seconds,
        "rolling": { "seconds": rolling.report.seconds, "traffic_moved_seconds": rolling.report.traffic_moved_seconds, "failed_requests": rolling.failed, "succeeded": rolling.report.succeeded },
        "blue_green": { "seconds": blue_green.report.seconds, "traffic_moved_seconds": blue_green.report.traffic_moved_seconds, "failed_requests": blue_green.failed, "succeeded": blue_green.report.succeeded },
        "auto_rollback": { "first_failed_probe_to_previous_alone_seconds": rollback, "failed_requests": failing.failed, "rolled_back": !failing.report.succeeded },
        "requests_ok": ours_ok,
        "seed_script": { "deploy_seconds": seed.deploy_seconds, "deploy_failed_requests": seed.deploy_failed, "failure_to_restored_seconds": seed.rollback_seconds, "failure_failed_requests": seed.rollback_failed, "requests_ok": seed.ok },
        "rolling_traffic_moved_vs_seed": rolling.report.traffic_moved_seconds.unwrap_or(f64::NAN) / seed.deploy_seconds,
        "rollback_vs_seed": rollback / seed.rollback_seconds,
        "balancer_vs_direct": edge,
        "canary": canary,
        "swarm": swarm,
    });
    if json {
        report::print_json(&out);
    } else {
        let mut table = report::Table::new(
            &format!("bench deploy ({REPLICAS} replicas, 4 keep-alive connections)"),
            &[
                "measure",
                "xtask",
                "seed script",
                "ratio",
                "failed requests (xtask / seed)",
            ],
        );
        let moved = |r: &DeployReport| r.traffic_moved_seconds.unwrap_or(f64::NAN);
        table.row(vec![
            "rolling: all traffic on the new release".into(),
            format!("{:.2}s", moved(&rolling.report)),
            format!("{:.2}s", seed.deploy_seconds),
            ratio(moved(&rolling.report), seed.deploy_seconds),
            format!("{} / {}", rolling.failed, seed.deploy_failed),
        ]);
        table.row(vec![
            format!(
                "rolling: total, with {}s verification",
                env.file.health.verify_seconds
            ),
            format!("{:.2}s", rolling.report.seconds),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        table.row(vec![
            "blue-green: all traffic on the new release".into(),
            format!("{:.2}s", moved(&blue_green.report)),
            "-".into(),
            "-".into(),
            format!("{} / -", blue_green.failed),
        ]);
        table.row(vec![
            format!(
                "blue-green: total, with {}s verification",
                env.file.health.verify_seconds
            ),
            format!("{:.2}s", blue_green.report.seconds),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        table.row(vec![
            "failed release: first failed probe -> previous alone".into(),
            format!("{rollback:.2}s"),
            format!("{:.2}s", seed.rollback_seconds),
            ratio(rollback, seed.rollback_seconds),
            format!("{} / {}", failing.failed, seed.rollback_failed),
        ]);
        table.emit();
        canary_table(&canary);
        edge_table(&edge);
        if let Some(swarm) = &swarm {
            swarm_table(swarm);
        }
    }
    Ok(())
}

fn canary_table(c: &canary::CanaryFigures) {
    let seconds = |s: Option<f64>| s.map_or_else(|| "-".into(), |s| format!("{s:.2}s"));
    let mut table = report::Table::new(
        "bench canary (3 replicas, steps 10/50/100, same load)",
        &["measure", "canary", "blue-green", "ratio"],
    );
    table.row(vec![
        "zero pause: all traffic on the new release".into(),
        seconds(c.canary_traffic_moved_seconds),
        seconds(c.blue_green_traffic_moved_seconds),
        ratio(
            c.canary_traffic_moved_seconds.unwrap_or(f64::NAN),
            c.blue_green_traffic_moved_seconds.unwrap_or(f64::NAN),
        ),
    ]);
    table.row(vec![
        "50 % errors: failing evaluation -> stable alone".into(),
        format!(
            "{} ({})",
            seconds(c.abort_seconds),
            if c.aborted { "aborted" } else { "NOT aborted" }
        ),
        "-".into(),
        "-".into(),
    ]);
    table.row(vec![
        "failed requests (the injected errors of the bad canary)".into(),
        format!(
            "{} of {}",
            c.failed_requests,
            c.failed_requests + c.requests_ok
        ),
        "-".into(),
        "-".into(),
    ]);
    table.emit();
}

fn edge_table(e: &edge::EdgeFigures) {
    let mut table = report::Table::new(
        "bench deploy: the balancer against a direct instance (GET /health, wrk, 4 keep-alive connections, best of 2)",
        &["measure", "balancer (TLS)", "direct", "difference"],
    );
    table.row(vec![
        "p50 latency".into(),
        format!("{:.3}ms", e.balancer.p50_ms),
        format!("{:.3}ms", e.direct.p50_ms),
        format!("+{:.3}ms", e.added_p50_ms),
    ]);
    table.row(vec![
        "throughput".into(),
        format!("{:.0}/s", e.balancer.requests_per_second),
        format!("{:.0}/s", e.direct.requests_per_second),
        format!("{:.2}x", e.throughput_ratio),
    ]);
    table.row(vec![
        "errors".into(),
        e.balancer.errors.to_string(),
        e.direct.errors.to_string(),
        "-".into(),
    ]);
    table.emit();
}

fn swarm_table(s: &swarm::SwarmFigures) {
    let mut table = report::Table::new(
        &format!("bench deploy on swarm ({REPLICAS} replicas, 4 keep-alive connections)"),
        &[
            "measure",
            "xtask",
            "docker service update",
            "ratio",
            "failed requests (xtask / peer)",
        ],
    );
    let secs = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}s"));
    let moved = |f: &swarm::Figure| f.traffic_moved_seconds.unwrap_or(f64::NAN);
    table.row(vec![
        "rolling: all traffic on the new release".into(),
        secs(s.rolling.traffic_moved_seconds),
        secs(s.peer_rolling.traffic_moved_seconds),
        ratio(moved(&s.rolling), moved(&s.peer_rolling)),
        format!(
            "{} / {}",
            s.rolling.failed_requests, s.peer_rolling.failed_requests
        ),
    ]);
    table.row(vec![
        "blue-green: all traffic on the new release".into(),
        secs(s.blue_green.traffic_moved_seconds),
        "-".into(),
        "-".into(),
        format!("{} / -", s.blue_green.failed_requests),
    ]);
    let back = |f: &swarm::Figure| f.rollback_seconds.unwrap_or(f64::NAN);
    table.row(vec![
        "never-ready release: failure -> previous alone".into(),
        secs(s.never_ready.rollback_seconds),
        secs(s.peer_never_ready.rollback_seconds),
        ratio(back(&s.never_ready), back(&s.peer_never_ready)),
        format!(
            "{} / {}",
            s.never_ready.failed_requests, s.peer_never_ready.failed_requests
        ),
    ]);
    table.row(vec![
        "crashing release: failure -> previous alone".into(),
        secs(s.crashing.rollback_seconds),
        "-".into(),
        "-".into(),
        format!("{} / -", s.crashing.failed_requests),
    ]);
    table.emit();
}
