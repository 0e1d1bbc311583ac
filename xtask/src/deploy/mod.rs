//! The one deploy frame, for every target: take the lock (renewed while the
//! run lives), record the release, run its strategy, verify, and when
//! anything fails (a gate, the verification window, Ctrl-C, a lost
//! connection) undo to the active release, close the record and report. A
//! run that died without cleaning up (kill -9) is finished by the next one.
use std::{collections::BTreeMap, time::Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub mod hooks;
pub mod lock;
pub mod records;
pub mod release;
pub mod schema;
pub mod sensitive;

use self::release::{History, Release};
use crate::{
    environment::{self, Environment, Strategy},
    gate::{Failure, Gate},
    progress::Step,
    strategy,
    targets::{Split, Target},
};

/// What to deploy: a new image, or an earlier release restored.
pub enum Source {
    Image {
        image: String,
        overrides: BTreeMap<String, String>,
    },
    Restore {
        to: Option<String>,
    },
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub environment: String,
    pub release: Release,
    pub strategy: Strategy,
    pub succeeded: bool,
    /// Whole run, verification window included.
    pub seconds: f64,
    /// From start until every slot served the new release (before verification).
    pub traffic_moved_seconds: Option<f64>,
    pub public_url: String,
    /// When a failed release was rolled back: from its first failed probe to the previous release serving alone.
    pub rollback_seconds: Option<f64>,
    /// The failing instance's last log lines.
    pub failure_logs: Option<String>,
}

#[derive(Default)]
pub struct Options {
    pub strategy: Option<Strategy>,
    pub quiet: bool,
    pub command: String,
    /// Rollback: revert the active release's newer migrations first (`deploy::schema`).
    pub migrate_down: bool,
    /// Rollback: restore this backup first (`deploy::schema`).
    pub restore: Option<String>,
    /// Rollback: why the active release is being left (`watch` saw it fail
    /// after its verification). Recorded on it as a failure, so no later
    /// rollback returns to it.
    pub cause: Option<String>,
}

/// The fully resolved environment of a release: plain variables plus secrets, resolved here.
pub fn resolve_env(release: &Release) -> Result<BTreeMap<String, String>> {
    let mut env = release.env.clone();
    env.extend(resolve_secrets(release)?);
    Ok(env)
}

/// The release's secrets, each resolved on this machine from its reference.
pub fn resolve_secrets(release: &Release) -> Result<BTreeMap<String, String>> {
    release
        .secrets
        .iter()
        .map(|(name, reference)| Ok((name.clone(), environment::resolve_secret(name, reference)?)))
        .collect()
}

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
    // The first failure on any host ends the window for all.
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

/// A deploy or rollback run once its release is recorded in progress: the
/// ending every target shares, the record closed and trimmed and the report
/// built. The caller writes the history back.
pub struct Run<'a> {
    pub env: &'a Environment,
    pub release: Release,
    pub started: Instant,
    pub public_url: String,
}

impl Run<'_> {
    pub fn succeeded(&self, history: &mut History, traffic_moved: Option<f64>) -> DeployReport {
        history.activate(&self.release.id, &release::now());
        self.report(history, true, traffic_moved, None, None)
    }

    /// Recorded failed with `reason`, and with the rollback's own error when `undone` failed.
    pub fn failed(
        &self,
        history: &mut History,
        reason: &str,
        undone: &Result<()>,
        traffic_moved: Option<f64>,
        rollback_seconds: Option<f64>,
        logs: Option<String>,
    ) -> DeployReport {
        let reason = match undone {
            Ok(()) => reason.to_owned(),
            Err(e) => format!("{reason}; and the rollback failed too: {e:#}"),
        };
        history.fail(&self.release.id, &reason, &release::now());
        self.report(history, false, traffic_moved, rollback_seconds, logs)
    }

    fn report(
        &self,
        history: &mut History,
        succeeded: bool,
        traffic_moved: Option<f64>,
        rollback_seconds: Option<f64>,
        logs: Option<String>,
    ) -> DeployReport {
        history.trim(self.env.file.deploy.keep_releases);
        DeployReport {
            environment: self.env.name.clone(),
            release: history
                .get(&self.release.id)
                .cloned()
                .unwrap_or_else(|| self.release.clone()),
            strategy: self.release.strategy,
            succeeded,
            seconds: self.started.elapsed().as_secs_f64(),
            traffic_moved_seconds: traffic_moved,
            public_url: self.public_url.clone(),
            rollback_seconds,
            failure_logs: logs,
        }
    }
}

/// The progress step of a deploy or rollback run: `deploy r7 (Rolling…)`.
pub fn announce(release: &Release, detail: &str, quiet: bool) -> Step {
    let verb = if release.restores.is_some() {
        "rollback to"
    } else {
        "deploy"
    };
    Step::start(
        &format!("{verb} {} ({:?}{detail})", release.id, release.strategy),
        quiet,
    )
}

/// The release a deploy or rollback makes, before any target looks at it:
/// the environment file plus `--env` for a new image, or an earlier
/// release's image and variables for a rollback. Shared by every target.
pub fn draft_release(
    env: &Environment,
    history: &History,
    source: Source,
    options: &Options,
) -> Result<Release> {
    let base = Release {
        id: String::new(),
        image: String::new(),
        image_id: String::new(),
        env: env.file.app.env.clone(),
        secrets: env.file.app.secrets.clone(),
        strategy: options.strategy.unwrap_or(env.file.deploy.strategy),
        replicas: env.file.deploy.replicas,
        started_at: release::now(),
        finished_at: None,
        by: release::deployer(),
        outcome: release::Outcome::InProgress,
        reason: None,
        restores: None,
        verified_at: None,
        analysis: Vec::new(),
        schema: None,
        hooks: Vec::new(),
    };
    if base.strategy == Strategy::Canary && env.file.canary.is_none() {
        bail!(
            "--strategy canary: {} has no [canary] table (steps, prometheus_url, analysis); see docs/CANARY.md",
            env.path.display()
        );
    }
    if base.strategy == Strategy::Canary
        && env.file.target.kind() == environment::TargetKind::Kubernetes
    {
        bail!("--strategy canary: needs weighted traffic through our balancer (docker or swarm); on Kubernetes use blue-green");
    }
    match source {
        Source::Image { image, overrides } => {
            if let Some(key) = overrides
                .keys()
                .find(|k| release::PLATFORM_ENV.contains(&k.as_str()))
            {
                bail!("--env {key}=…: {key} is set by the deploy engine");
            }
            if let Some(key) = overrides
                .keys()
                .find(|k| environment::FAULT_VARIABLES.contains(&k.as_str()))
                .filter(|_| !env.file.app.debug_knobs)
            {
                bail!("--env {key}=…: makes the app misbehave on purpose; only an environment file with [app] debug_knobs = true (a test environment) allows it");
            }
            sensitive::refuse(env, &overrides)?;
            let mut vars = base.env.clone();
            vars.extend(overrides);
            Ok(Release {
                image,
                env: vars,
                ..base
            })
        }
        Source::Restore { to } => {
            let chosen = match &to {
                Some(id) => history.get(id).with_context(|| {
                    let kept: Vec<&str> = history.releases.iter().map(|r| r.id.as_str()).collect();
                    format!("--to {id}: no such release in the history of {} (kept: {})", env.name, kept.join(", "))
                })?,
                None => history.previous_good().with_context(|| {
                    format!("{}: no earlier good release to roll back to (see `cargo xtask history -e {}`)", env.name, env.name)
                })?,
            };
            Ok(Release {
                image: chosen.image.clone(),
                image_id: chosen.image_id.clone(),
                env: chosen.env.clone(),
                secrets: chosen.secrets.clone(),
                replicas: chosen.replicas,
                schema: chosen.schema.clone(),
                restores: Some(chosen.id.clone()),
                // A rollback goes back at once: the release it restores
                // served before, and an incident is no time to walk steps.
                strategy: match base.strategy {
                    Strategy::Canary => Strategy::BlueGreen,
                    other => other,
                },
                ..base
            })
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
