//! lock, up and down: an environment's lock, and the local default's main job.
use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{bail, Result};

use super::releases::{connect, current_image, load_env, print_report, EnvArg, EnvJsonArgs};
use crate::{
    deploy::{self, lock, Source},
    engine,
    environment::Environment,
    report,
    targets::{AnyTarget, Target},
};

#[derive(clap::Subcommand)]
pub enum LockAction {
    /// Show who holds the lock, if anyone
    Status(EnvJsonArgs),
    /// Free the lock by hand (for a holder that is stuck)
    Release(EnvJsonArgs),
}

pub async fn lock_command(action: LockAction) -> Result<ExitCode> {
    let (args, free) = match action {
        LockAction::Status(a) => (a, false),
        LockAction::Release(a) => (a, true),
    };
    let env = load_env(&args.env)?;
    let target = connect(&env, &args.env).await?;
    lock_action(&target, &env, &args, free).await
}

async fn lock_action(
    target: &impl lock::LockStore,
    env: &Environment,
    args: &EnvJsonArgs,
    free: bool,
) -> Result<ExitCode> {
    let current = target.lock_read().await?;
    if free {
        if let Some((token, info)) = &current {
            target.lock_remove(token).await?;
            eprintln!(
                "released the lock on {} held by {}",
                env.name,
                info.describe()
            );
        } else {
            eprintln!("{} is not locked", env.name);
        }
    } else if args.json {
        report::print_json(
            &serde_json::json!({ "locked": current.is_some(), "holder": current.as_ref().map(|c| &c.1) }),
        );
    } else {
        match &current {
            Some((_, info)) => eprintln!("{} is locked by {}", env.name, info.describe()),
            None => eprintln!("{} is not locked", env.name),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RouteArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// Keep going: one pass every --interval-ms until SIGTERM or Ctrl-C
    #[arg(long)]
    pub watch: bool,
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u64,
    #[arg(long)]
    pub json: bool,
}

/// `route`: traffic back onto the live instances of the active release
/// between deploys: where the orchestrator replaced some (swarm), or where
/// the balancer restarted and lost its runtime state (Docker; Kubernetes
/// routes through its Service and has nothing to repair).
pub async fn route(args: RouteArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let target = connect(&env, &args.env).await?;
    let interval = std::time::Duration::from_millis(args.interval_ms.max(100));
    // Registered once, so a signal that arrives mid-pass is not lost.
    let stop = crate::deploy::interrupted();
    tokio::pin!(stop);
    loop {
        let Some(routed) = target.repair().await? else {
            bail!(
                "{}: route is for the Docker and swarm targets; Kubernetes routes through its Service",
                env.path.display()
            );
        };
        if args.json {
            report::print_json(&routed);
        } else if let Some(why) = routed["skipped"].as_str() {
            eprintln!("{}: slots left as they are: {why}", env.name);
        } else if routed["moved"].as_u64() > Some(0) || !args.watch {
            eprintln!(
                "{}: {} slot(s) moved; slots now on {}",
                env.name, routed["moved"], routed["slots"]
            );
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            signal = &mut stop => {
                eprintln!("route: stopping on {signal}");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// `up`: the main job on the local default. Engine, build, scan, deploy dev, print the URL.
pub async fn up(env_arg: EnvArg) -> Result<ExitCode> {
    let started = engine::start().await?;
    crate::haproxy::image::ensure_on(&started.state.docker_host, true).await?;
    let env = load_env(&env_arg)?;
    let target = connect(&env, &env_arg).await?;
    let image = current_image(&target, &env, false).await?;
    let AnyTarget::Docker(docker_target) = &target else {
        bail!(
            "{}: `up` runs the main job on a local Docker target; use `deploy` for other kinds",
            env.path.display()
        );
    };
    let scan = crate::scan::scan(
        docker_target.docker(),
        &image,
        &crate::scan::ScanOptions {
            advisory_db: None,
            max_size_bytes: (crate::scan::DEFAULT_MAX_SIZE_MB * 1_000_000) as i64,
        },
    )
    .await?;
    for f in &scan.findings {
        eprintln!("scan: {} {} {}", f.severity.as_str(), f.id, f.title);
    }
    if scan.fails(crate::scan::Severity::High) {
        bail!("scan of {image} found problems at or above high; not deploying");
    }
    let options = deploy::Options {
        strategy: None,
        quiet: false,
        command: "up".into(),
        ..Default::default()
    };
    let report = deploy::run(
        &target,
        &env,
        Source::Image {
            image,
            overrides: BTreeMap::new(),
        },
        &options,
    )
    .await?;
    let code = print_report(&report, false);
    if report.succeeded {
        eprintln!(
            "\n{} is up: {}  (try: curl -k {}/health)",
            env.name, report.public_url, report.public_url
        );
    }
    Ok(code)
}

/// `down`: stops every instance and the balancer of an environment; history stays.
pub async fn down(env_arg: EnvArg) -> Result<ExitCode> {
    let env = load_env(&env_arg)?;
    let target = connect(&env, &env_arg).await?;
    lock::while_held(&target, &env, "down", async |_| {
        let step = crate::progress::Step::start(&format!("down {}", env.name), false);
        let result = target.stop_all().await;
        step.finish(if result.is_ok() { "done" } else { "FAILED" });
        result
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// Show what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// `prune`: the images of releases no longer kept in history, under the
/// lock (a deploy in flight may be about to run an image that looks old).
pub async fn prune(args: PruneArgs) -> Result<ExitCode> {
    use crate::deploy::records::HistoryStore;
    let env = load_env(&args.env)?;
    let target = connect(&env, &args.env).await?;
    let pruned = lock::while_held(&target, &env, "prune", async |_| {
        let history = target.read_history().await?;
        target.prune(&history.needed(), args.dry_run).await
    })
    .await?;
    let Some(pruned) = pruned else {
        eprintln!(
            "{}: the platform removes unused images itself; nothing to prune",
            env.name
        );
        return Ok(ExitCode::SUCCESS);
    };
    if args.json {
        report::print_json(&serde_json::json!({ "dry_run": args.dry_run, "pruned": pruned }));
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut table = report::Table::new(&format!("prune {}", env.name), &["image", "action"]);
    for image in &pruned.removed {
        table.row(vec![image.clone(), verb.into()]);
    }
    for (image, why) in &pruned.kept {
        table.row(vec![image.clone(), format!("kept: {why}")]);
    }
    table.emit();
    Ok(ExitCode::SUCCESS)
}
