//! The one deploy frame, for every target: take the lock (renewed while the
//! run lives), record the release, run its strategy, verify, and when
//! anything fails (a gate, the verification window, Ctrl-C, a lost
//! connection) undo to the active release, close the record and report. A
//! run that died without cleaning up (kill -9) is finished by the next one.
use std::time::Instant;

use anyhow::Result;

mod draft;
pub mod history;
pub mod hooks;
pub mod lock;
pub mod records;
pub mod release;
mod report;
pub mod schema;
pub mod sensitive;

use self::release::{History, Release};
pub use self::{
    draft::{draft_release, resolve_env, resolve_secrets, Options, Source},
    report::{announce, DeployReport, Run},
};
use crate::{
    environment::Environment,
    gate::{Failure, Gate},
    progress::Step,
    strategy,
    targets::{Split, Target},
};

/// Finishes what an earlier run left: its release is closed (activated
/// when it had passed verification, failed otherwise) and the target
/// converges to the active release. Needs the lock.
pub async fn recover(
    target: &impl Target,
    env: &Environment,
    history: &mut History,
    quiet: bool,
) -> Result<bool> {
    let closed = history.close_interrupted(&release::now());
    if closed.is_some() {
        target.write_history(history).await?;
    }
    let step = Step::start("converge", quiet);
    let gate = Gate {
        health: &env.file.health,
    };
    let undone = target.undo(history.active(), &gate, &step).await;
    step.finish(if undone.is_ok() { "done" } else { "FAILED" });
    undone?;
    Ok(closed.is_some())
}

/// What `status` runs: when an earlier run died (a stale lock, or a release
/// in progress with no lock), finish its cleanup. Everything is read again
/// under the lock: the run that looked dead may have finished in between,
/// and a release it verified must not be undone.
pub async fn recover_if_abandoned(
    target: &impl Target,
    env: &Environment,
    quiet: bool,
) -> Result<bool> {
    if !lock::abandoned(target, &target.read_history().await?).await? {
        return Ok(false);
    }
    lock::while_held(target, env, "status (recovery)", async |held| {
        let mut history = target.read_history().await?;
        if held.took_over.is_none() && history.in_progress().is_none() {
            return Ok(false);
        }
        recover(target, env, &mut history, quiet).await?;
        Ok(true)
    })
    .await
}

/// deploy and rollback on any target: the one frame.
pub async fn run(
    target: &impl Target,
    env: &Environment,
    source: Source,
    options: &Options,
) -> Result<DeployReport> {
    lock::while_held(target, env, &options.command, async |held| {
        let mut history = target.read_history().await?;
        if held.took_over.is_some() || history.in_progress().is_some() {
            eprintln!("finishing what an earlier, interrupted run left behind");
            recover(target, env, &mut history, options.quiet).await?;
        }
        let mut release = draft_release(env, &history, source, options)?;
        target.admit(&mut release).await?;
        // Secrets resolve before anything is recorded: a missing one is a plain error, not a failed release.
        resolve_env(&release)?;
        // So does a rollback to an older schema without a way to get there.
        let before = schema::before_rollback(
            history.active(),
            &release,
            options.migrate_down,
            options.restore.as_deref(),
        )?;
        let id = history.begin(release);
        target.write_history(&history).await?;
        let release = history.get(&id).expect("just recorded").clone();
        let previous = history.active().cloned();
        locked(target, env, history, release, previous, &before, options).await
    })
    .await
}

async fn locked(
    target: &impl Target,
    env: &Environment,
    mut history: History,
    release: Release,
    previous: Option<Release>,
    before: &schema::Before,
    options: &Options,
) -> Result<DeployReport> {
    let gate = Gate {
        health: &env.file.health,
    };
    let started = Instant::now();
    let step = announce(&release, "", options.quiet);
    let mut moved = None;
    let measured = std::sync::Mutex::new(Vec::new());
    let ran = hooks::Ran::default();
    let strategy = strategy::Run {
        target,
        release: &release,
        previous: previous.as_ref(),
        gate: &gate,
        deploy: &env.file.deploy,
        canary: env.file.canary.as_ref(),
        measured: &measured,
        step: &step,
    };
    // Ctrl-C or a CI cancel anywhere up to the verified record is a failure like any other.
    let outcome: Result<(), Failure> = tokio::select! {
        outcome = async {
            hooks::schema_first(target, env, before, &ran, &step).await?;
            hooks::pre_deploy(target, env, &release, &ran, &step).await?;
            strategy::run(&strategy).await?;
            moved = Some(started.elapsed().as_secs_f64());
            verify(target, env, &step).await?;
            record_image(target, &mut history, &release).await;
            // Recorded before anything is retired: should the final write
            // fail, the next run finishes this release instead of undoing it.
            history.verified(&release.id, &release::now());
            target.write_history(&history).await.map_err(Failure::from_error)
        } => outcome,
        signal = interrupted() => Err(Failure::new(format!("interrupted by {signal}"), None)),
    };
    history.measured(&release.id, measured.into_inner().expect("measurements"));
    let failed_hook = ran.failed_output();
    for run in ran.take() {
        history.hook_ran(&release.id, run);
    }
    let run = Run {
        env,
        release: release.clone(),
        started,
        public_url: target.public_url(),
    };
    let report = match outcome {
        Ok(()) => {
            step.finish("done");
            hooks::post_deploy(target, env, &release, &ran).await;
            for run in ran.take() {
                history.hook_ran(&release.id, run);
            }
            if let Some(previous) = &previous {
                if let Err(e) = target.retire(&previous.id, 0).await {
                    eprintln!(
                        "warning: retiring {}: {e:#}; `cargo xtask status` shows what still runs",
                        previous.id
                    );
                }
            }
            let report = run.succeeded(&mut history, moved);
            if let (Some(cause), Some(left)) = (&options.cause, &previous) {
                history.condemn(&left.id, cause);
            }
            report
        }
        Err(failure) => {
            step.finish("FAILED");
            // Traffic first: the previous release serves alone before logs
            // are read and the failed instances stop, and the rollback
            // clock stops there; `undo` does the rest (a no-op shift then).
            let back = traffic_back(target, previous.as_ref())
                .await
                .then(|| failure.at.elapsed().as_secs_f64());
            let logs = match failed_hook.clone() {
                Some(output) => Some(output),
                None => Some(target.logs(&release, failure.instance.as_deref(), 20).await),
            }
            .filter(|l| !l.trim().is_empty());
            eprintln!(
                "{} failed: {}; rolling back to the previous release",
                release.id, failure.reason
            );
            let undo_step = Step::start("automatic rollback", options.quiet);
            let undone = target.undo(previous.as_ref(), &gate, &undo_step).await;
            undo_step.finish(if undone.is_ok() { "done" } else { "FAILED" });
            let rollback_seconds = back.or_else(|| Some(failure.at.elapsed().as_secs_f64()));
            run.failed(
                &mut history,
                &failure.reason,
                &undone,
                moved,
                rollback_seconds,
                logs,
            )
        }
    };
    write_final(target, &history).await?;
    if report.succeeded && env.file.deploy.prune {
        match target.prune(&history.needed(), false).await {
            Ok(Some(pruned)) if !pruned.removed.is_empty() => eprintln!(
                "pruned {} image(s) of releases no longer kept: {}",
                pruned.removed.len(),
                pruned.removed.join(", ")
            ),
            Ok(_) => {}
            Err(e) => eprintln!("warning: pruning old images: {e:#} (`cargo xtask prune` retries)"),
        }
    }
    Ok(report)
}

/// The image the passed release runs, where the target learns it only now:
/// recorded with the verified record. Failing to read it fails nothing (the
/// release is good); a rollback to it then goes by its tag.
async fn record_image(target: &impl Target, history: &mut History, release: &Release) {
    match target.image_ran(release).await {
        Ok(Some(image_id)) => history.ran_image(&release.id, image_id),
        Ok(None) => {}
        Err(e) => eprintln!(
            "warning: {}: {e:#}; its record keeps the tag {}, which a rollback to it uses",
            release.id, release.image
        ),
    }
}

/// All traffic back on `previous` in one balancer step, when the target
/// moves traffic itself and `previous` still runs; true when it serves
/// alone now (a failed release that never took traffic leaves nothing to
/// shift). Anything else is `undo`'s to converge, and stops no clock.
async fn traffic_back(target: &impl Target, previous: Option<&Release>) -> bool {
    let Some(previous) = previous.filter(|_| !target.caps().native_rollout) else {
        return false;
    };
    match target.split().await {
        Ok(split) if split.share(&previous.id) == 100 => true,
        Ok(_) => target.shift(&Split::all(&previous.id)).await.is_ok(),
        Err(_) => false,
    }
}

/// The verification window on every public URL (one per host of a
/// fleet), watched side by side, where the target has one.
async fn verify(target: &impl Target, env: &Environment, step: &Step) -> Result<(), Failure> {
    let urls: Vec<String> = target
        .public_urls()
        .into_iter()
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Ok(());
    }
    let client = target.public_client().map_err(Failure::from_error)?;
    // The first host whose window fails ends the window for all.
    futures_util::future::try_join_all(
        urls.iter()
            .map(|url| crate::gate::verify_public(&client, url, &env.file.health, step)),
    )
    .await
    .map(drop)
    .map_err(|reason| Failure::new(reason, None))
}

/// The record that closes a run, tried three times: a passing engine hiccup
/// must not leave a finished release looking interrupted.
async fn write_final(target: &impl Target, history: &History) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match target.write_history(history).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 => {
                eprintln!("warning: writing the release history: {e:#}; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(300 * attempt)).await;
            }
            Err(e) => {
                return Err(e.context(
                    "the run finished but its record could not be written; the next command finishes it (a verified release stays, anything else is undone)",
                ))
            }
        }
    }
}

/// Ctrl-C in a terminal, or the SIGTERM a CI runner sends on cancel.
pub(crate) async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT (Ctrl-C)",
    }
}
