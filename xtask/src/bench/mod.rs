//! `cargo xtask bench build|deploy`: speed figures measured against a
//! baseline in the same run, reported as ratios (machines here are shared
//! and noisy; absolute seconds vary, ratios much less).
mod build;
mod deploy;
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
    /// Rolling and blue-green deploy time and failed requests under load, rollback time: Docker against the seed's docker+curl script, swarm against plain `docker service update`
    Deploy {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(bench: Bench) -> Result<ExitCode> {
    match bench {
        Bench::Build { json } => build::run(json).await,
        Bench::Deploy { json } => deploy::run(json).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}
