//! `cargo xtask hosts prepare -e ENV`: makes every engine of an environment
//! ready for deploys from this machine. A deploy never builds the balancer
//! image (that needs haproxy here, and no deploy installs packages): this
//! builds it on each host, from this machine's haproxy, through the
//! host's Docker API (over SSH for ssh:// hosts). Run it once per host, and
//! again after an HAProxy upgrade here.
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use futures_util::future::join_all;

use super::releases::{load_env, EnvJsonArgs};
use crate::{engine, report};

#[derive(Subcommand)]
pub enum HostsAction {
    /// Reach every host of the environment and build the balancer image there
    Prepare(EnvJsonArgs),
}

pub async fn run(action: HostsAction) -> Result<ExitCode> {
    let HostsAction::Prepare(args) = action;
    let env = load_env(&args.env)?;
    let mut hosts: Vec<String> = match (env.engine_hosts(), env.engine_host()) {
        (many, _) if !many.is_empty() => many.to_vec(),
        (_, Some(one)) => vec![one.to_owned()],
        (_, None) => match std::env::var("DOCKER_HOST") {
            Ok(host) => vec![host],
            Err(_) => vec![engine::load_state()?
                .context("no engine named: set target.host or target.hosts, or run `cargo xtask engine start`")?
                .docker_host],
        },
    };
    // A swarm's other balancer nodes need the image too.
    hosts.extend(env.balancer_nodes().iter().cloned());
    let prepared = join_all(hosts.iter().map(|host| prepare(host, args.json))).await;
    let mut table = report::Table::new(
        &format!("hosts of {}", env.name),
        &["host", "engine", "balancer image"],
    );
    let mut rows = Vec::new();
    let mut failed = 0;
    for (host, result) in hosts.iter().zip(prepared) {
        let (engine, image) = match result {
            Ok(done) => done,
            Err(e) => {
                failed += 1;
                ("unreachable".to_owned(), format!("FAILED: {e:#}"))
            }
        };
        table.row(vec![host.clone(), engine.clone(), image.clone()]);
        rows.push(serde_json::json!({ "host": host, "engine": engine, "balancer_image": image }));
    }
    if args.json {
        report::print_json(
            &serde_json::json!({ "environment": env.name, "hosts": rows, "ok": failed == 0 }),
        );
        report::append_job_summary(&table.render_markdown());
    } else {
        table.emit();
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn prepare(host: &str, quiet: bool) -> Result<(String, String)> {
    let docker = engine::connect(host).await?;
    let version = docker
        .version()
        .await
        .with_context(|| format!("asking {host} for its version"))?;
    let image = crate::haproxy::image::ensure(&docker, quiet)
        .await
        .with_context(|| format!("building the balancer image on {host}"))?;
    Ok((
        format!(
            "{} (API {})",
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        ),
        image,
    ))
}
