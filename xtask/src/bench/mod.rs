//! `cargo xtask bench build|deploy|backup`: speed figures measured against a
//! baseline in the same run, reported as ratios (machines here are shared
//! and noisy; absolute seconds vary, ratios much less).
mod backup;
mod build;
mod canary;
mod deploy;
mod edge;
mod lab;
mod seed;
mod swarm;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// Image size; cold and warm image build against plain `cargo build --release`; push time
    Build {
        #[arg(long)]
        json: bool,
    },
    /// Rolling and blue-green deploy time and failed requests under load, rollback time, the balancer against a direct instance: Docker against the seed's docker+curl script, swarm against plain `docker service update`
    Deploy {
        #[arg(long)]
        json: bool,
        /// The Docker target only: skip the swarm figures (no swarm needed)
        #[arg(long)]
        docker_only: bool,
        /// Only the swarm target on a 3-node lab swarm (made and removed here; root) against swarm updating the same spec alone
        #[arg(long, conflicts_with = "docker_only")]
        lab: bool,
    },
    /// backup create and restore of N rows against plain pg_dump and pg_restore, on a throwaway PostgreSQL
    Backup {
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(bench: Bench) -> Result<ExitCode> {
    match bench {
        Bench::Build { json } => build::run(json).await,
        Bench::Deploy {
            json, lab: true, ..
        } => deploy::run_lab(json).await,
        Bench::Deploy {
            json, docker_only, ..
        } => deploy::run(json, docker_only).await,
        Bench::Backup { rows, json } => backup::run(rows, json).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A shipped environment under a throwaway name, on free loopback ports and
/// without the API rate limit (the load would hit it): what a benchmark deploys to.
fn throwaway_env(shipped: &str, name: &str) -> Result<crate::environment::Environment> {
    let mut env = crate::environment::load(shipped)?;
    env.name = name.to_owned();
    let balancer =
        env.file.balancer.as_mut().ok_or_else(|| {
            anyhow::anyhow!("{}: the benchmark needs [balancer]", env.path.display())
        })?;
    balancer.https_port = free_port()?;
    balancer.http_port = free_port()?;
    balancer.api_rate = 1_000_000;
    Ok(env)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}
