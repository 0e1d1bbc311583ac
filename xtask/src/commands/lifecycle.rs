//! lock, up and down: an environment's lock, and the local default's main job.
use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{bail, Result};

use super::releases::{
    connect, connect_kube, connect_swarm, current_image, is_kube, is_swarm, load_env, print_report,
    EnvArg, EnvJsonArgs,
};
use crate::{
    deploy::{self, Source},
    engine,
    environment::Environment,
    lock, report,
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
