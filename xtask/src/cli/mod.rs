//! The command line: one line of help per command, each dispatched to its module.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

pub mod backup;
pub mod compose;
pub mod diagnose;
pub mod hosts;
pub mod image;
pub mod lab;
pub mod lifecycle;
pub mod observe;
pub mod releases;
pub mod watch;

use crate::{ci, engine, lint, report};

#[derive(Parser)]
#[command(
    name = "cargo-xtask",
    bin_name = "cargo xtask",
    about = "Build, scan, push, deploy, roll back and probe the app",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start, stop or show the Docker engine and registry the workspace uses
    Engine(EngineArgs),
    /// Everything CI runs: fmt, clippy, engine start, all tests, engine stop
    Ci,
    /// Build the app as a static binary in a FROM-scratch image [--scan] [--push]
    Build(image::BuildArgs),
    /// Scan an image: RustSec advisories, image policy, trivy/grype when installed
    Scan(image::ScanArgs),
    /// Push an image to a registry and print its digest
    Push(image::PushArgs),
    /// Deploy an image to an environment, health-gated, rolled back by itself on failure
    Deploy(releases::DeployArgs),
    /// Return to the previous good release (or --to one), health-gated
    Rollback(releases::RollbackArgs),
    /// What is deployed now: release, instances and their health, lock
    Status(releases::EnvJsonArgs),
    /// The releases kept in the target, with outcomes and reasons
    History(releases::EnvJsonArgs),
    /// Probe the public URL and every instance; exit 1 when anything is unhealthy
    Health(releases::EnvJsonArgs),
    /// After a deploy: watch the active release (--for SECONDS) and roll back by itself if it fails
    Watch(watch::WatchArgs),
    /// Docker and swarm: the balancer back onto the active release's live instances (once, or --watch)
    Route(lifecycle::RouteArgs),
    /// Show or free an environment's deploy lock
    #[command(subcommand)]
    Lock(lifecycle::LockAction),
    /// The main job on the local default: engine, build, scan, deploy dev, print the URL
    Up(releases::EnvArg),
    /// Stop an environment's instances and balancer (history is kept)
    Down(releases::EnvArg),
    /// Remove the images of releases no longer kept in history [--dry-run]
    Prune(lifecycle::PruneArgs),
    /// Benchmarks: image build and push, deploy and rollback, backup and restore, each against a baseline
    #[command(subcommand)]
    Bench(crate::bench::Bench),
    /// Render the compose stacks' HAProxy config (and a dev certificate) into target/balancer-compose
    ComposeConfig(compose::ComposeConfigArgs),
    /// The engines of an environment: `prepare` builds the balancer image on each (docs/FLEET.md)
    #[command(subcommand)]
    Hosts(hosts::HostsAction),
    /// A local multi-host lab: namespaces with their own dockerd and sshd [--swarm]
    #[command(subcommand)]
    Lab(lab::LabAction),
    /// PostgreSQL backups of an environment's database: create, list, verify, restore (docs/DATA.md)
    #[command(subcommand)]
    Backup(backup::BackupAction),
    /// Validate every infrastructure file with the tool that reads it
    Lint {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct EngineArgs {
    #[command(subcommand)]
    pub action: EngineAction,
}

#[derive(Subcommand)]
pub enum EngineAction {
    /// Use the engine that answers, or start a private one; start the registry
    Start {
        /// Also make the engine a single-node swarm manager (on 127.0.0.1), for swarm environments
        #[arg(long)]
        swarm: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop what `engine start` started (never an engine it found running); leave the swarm it made
    Stop,
    /// Show the engine and registry; exit 1 when they do not answer
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Engine(args) => engine_command(args.action).await,
        Command::Ci => ci::run().await.map(|()| ExitCode::SUCCESS),
        Command::Build(args) => image::build(args).await,
        Command::Scan(args) => image::scan(args).await,
        Command::Push(args) => image::push(args).await,
        Command::Deploy(args) => releases::deploy_command(args).await,
        Command::Rollback(args) => releases::rollback_command(args).await,
        Command::Status(args) => observe::status(args).await,
        Command::History(args) => releases::history_command(args).await,
        Command::Health(args) => observe::health_command(args).await,
        Command::Watch(args) => watch::watch_command(args).await,
        Command::Lock(action) => lifecycle::lock_command(action).await,
        Command::Route(args) => lifecycle::route(args).await,
        Command::Up(args) => lifecycle::up(args).await,
        Command::Down(args) => lifecycle::down(args).await,
        Command::Prune(args) => lifecycle::prune(args).await,
        Command::Bench(bench) => crate::bench::run(bench).await,
        Command::ComposeConfig(args) => compose::run(args),
        Command::Lab(action) => lab::run(action).await,
        Command::Hosts(action) => hosts::run(action).await,
        Command::Lint { json } => lint::run(json),
        Command::Backup(action) => backup::run(action).await,
    }
}

async fn engine_command(action: EngineAction) -> Result<ExitCode> {
    match action {
        EngineAction::Start { swarm, json } => {
            let started = engine::start().await?;
            // Deploys never build the balancer image (that needs haproxy on this machine).
            let balancer =
                crate::haproxy::image::ensure_on(&started.state.docker_host, json).await?;
            if !json {
                eprintln!("balancer image: {balancer}");
            }
            if swarm {
                let docker = engine::connect(&started.state.docker_host).await?;
                engine::swarm::ensure_single_node(&docker).await?;
                if !json {
                    eprintln!("swarm: this engine is a single-node swarm manager (control plane on 127.0.0.1)");
                }
            }
            if json {
                report::print_json(&status_json(&started.state, true, true));
            } else {
                let verb = if started.started_now {
                    "started"
                } else {
                    "already running"
                };
                eprintln!("engine {verb}: {}", started.state.docker_host);
                eprintln!(
                    "registry: {} (credentials in {})",
                    started.state.registry.address,
                    started.state.registry.credentials_file.display()
                );
                eprintln!(
                    "use it from a shell: export DOCKER_HOST={}",
                    started.state.docker_host
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        EngineAction::Stop => {
            if engine::leave_swarm_if_ours().await? {
                eprintln!("left the single-node swarm `engine start --swarm` made");
            }
            match engine::stop()? {
                Some(state) if state.dockerd.is_some() => {
                    eprintln!("stopped the private engine and the registry")
                }
                Some(_) => eprintln!(
                    "stopped the registry; the engine was not started by us and keeps running"
                ),
                None => eprintln!(
                    "nothing to stop: no engine was started by `cargo xtask engine start`"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        EngineAction::Status { json } => {
            let Some(state) = engine::load_state()? else {
                if json {
                    report::print_json(&json!({ "running": false }));
                } else {
                    eprintln!("not started: run `cargo xtask engine start`");
                }
                return Ok(ExitCode::FAILURE);
            };
            let docker_up = engine::answers(&state.docker_host).await;
            let registry_up = state.registry.process.is_running();
            if json {
                report::print_json(&status_json(&state, docker_up, registry_up));
            } else {
                let mut table = report::Table::new("engine", &["part", "address", "state"]);
                let word = |up: bool| if up { "up" } else { "DOWN" }.to_owned();
                table.row(vec![
                    "docker".into(),
                    state.docker_host.clone(),
                    word(docker_up),
                ]);
                table.row(vec![
                    "registry".into(),
                    state.registry.address.clone(),
                    word(registry_up),
                ]);
                table.emit();
            }
            Ok(if docker_up && registry_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn status_json(
    state: &engine::EngineState,
    docker_up: bool,
    registry_up: bool,
) -> serde_json::Value {
    json!({
        "running": docker_up && registry_up,
        "docker_host": state.docker_host,
        "socket": state.docker_host.strip_prefix("unix://"),
        "private_engine": state.dockerd.is_some(),
        "registry": {
            "address": state.registry.address,
            "credentials_file": state.registry.credentials_file,
            "up": registry_up,
        },
        "docker_up": docker_up,
    })
}
