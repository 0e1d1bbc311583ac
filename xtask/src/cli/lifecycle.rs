//! lock, up and down: an environment's lock, and the local default's main job.
use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{bail, Result};

use super::releases::{
    connect, connect_kube, connect_swarm, current_image, is_kube, is_swarm, load_env, print_report,
    EnvArg, EnvJsonArgs,
};
use crate::{
    deploy::lock,
    deploy::{self, Source},
    engine,
    environment::Environment,
    report,
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
    if is_kube(&env) {
        let target = connect_kube(&env, &args.env).await?;
        lock_action(&target, &env, &args, free).await
    } else if is_swarm(&env) {
        lock_action(&connect_swarm(&env).await?, &env, &args, free).await
    } else {
        lock_action(&connect(&env).await?, &env, &args, free).await
    }
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

/// `route`: swarm only. Points the balancer's slots at the live tasks that
/// answer, as swarm replaces them between deploys.
pub async fn route(args: RouteArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    if !is_swarm(&env) {
        bail!(
            "{}: route is for swarm targets (target.kind = \"swarm\"); docker restarts an instance in place and Kubernetes routes through its Service",
            env.path.display()
        );
    }
    let target = connect_swarm(&env).await?;
    let timeout = env.file.health.timeout();
    let interval = std::time::Duration::from_millis(args.interval_ms.max(100));
    // Registered once, so a signal that arrives mid-pass is not lost.
    let stop = crate::deploy::interrupted();
    tokio::pin!(stop);
    loop {
        let routed =
            crate::swarm_deploy::route::once(&target, &env.file.health.path, timeout).await?;
        if args.json {
            report::print_json(&routed);
        } else if let Some(why) = &routed.skipped {
            eprintln!("{}: slots left as they are: {why}", env.name);
        } else if routed.moved > 0 || !args.watch {
            eprintln!(
                "{}: {} slot(s) moved; slots now on {:?}",
                env.name, routed.moved, routed.slots
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
    engine::start().await?;
    let env = load_env(&env_arg)?;
    let target = connect(&env).await?;
    let image = current_image(target.docker(), &env, false).await?;
    let scan = crate::scan::scan(
        target.docker(),
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
    if is_swarm(&env) {
        let target = connect_swarm(&env).await?;
        lock::while_held(&target, &env, "down", async |_| {
            let step = crate::progress::Step::start(&format!("down {}", env.name), false);
            let result = target.stop_all().await;
            step.finish(if result.is_ok() { "done" } else { "FAILED" });
            result
        })
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let target = connect(&env).await?;
    lock::while_held(&target, &env, "down", async |_| {
        let step = crate::progress::Step::start(&format!("down {}", env.name), false);
        let result = crate::strategy::converge(&target, None, &step)
            .await
            .and_then(|()| target.stop_balancer());
        step.finish(if result.is_ok() { "done" } else { "FAILED" });
        result
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
