//! deploy and rollback: lock, record, run the strategy, and when anything
//! fails (a gate, the verification window, Ctrl-C) converge back to the
//! active release, record the failure with its reason and unlock. A run that
//! died without cleaning up (kill -9) is finished by the next one.
use std::{collections::BTreeMap, time::Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub mod lock;
pub mod release;

use self::release::{History, Release};
use crate::{
    environment::{self, Environment, Strategy},
    progress::Step,
    strategy::{self, Plan},
    targets::Target,
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

pub struct Options {
    pub strategy: Option<Strategy>,
    pub quiet: bool,
    pub command: String,
}

/// The fully resolved environment of a release: plain variables plus secrets, resolved here.
pub fn resolve_env(release: &Release) -> Result<BTreeMap<String, String>> {
    let mut env = release.env.clone();
    for (name, reference) in &release.secrets {
        env.insert(name.clone(), environment::resolve_secret(name, reference)?);
    }
    Ok(env)
}

fn plan_for<'a>(release: &'a Release, env: &'a Environment) -> Result<Plan<'a>> {
    Ok(Plan {
        release,
        env: resolve_env(release)?,
        health: &env.file.health,
        replicas: release.replicas,
    })
}

/// Finishes what an earlier run left: an in-progress release is marked
/// failed and the target converges to the active release. Needs the lock.
pub async fn recover(
    target: &impl Target,
    env: &Environment,
    history: &mut History,
    quiet: bool,
) -> Result<bool> {
    let interrupted = history.close_interrupted();
    if interrupted.is_some() {
        target.write_history(history).await?;
    }
    let step = Step::start("converge", quiet);
    let active = history.active().cloned();
    let plan = active.as_ref().map(|r| plan_for(r, env)).transpose()?;
    strategy::converge(target, plan.as_ref(), &step).await?;
    step.finish("done");
    Ok(interrupted.is_some())
}

pub async fn run(
    target: &impl Target,
    env: &Environment,
    source: Source,
    options: &Options,
) -> Result<DeployReport> {
    lock::while_held(target, env, &options.command, async |held| {
        locked(target, env, source, options, held.took_over.is_some()).await
    })
    .await
}

async fn locked(
    target: &impl Target,
    env: &Environment,
    source: Source,
    options: &Options,
    took_over: bool,
) -> Result<DeployReport> {
    let mut history = target.read_history().await?;
    if took_over || history.in_progress().is_some() {
        eprintln!("finishing what an earlier, interrupted run left behind");
        recover(target, env, &mut history, options.quiet).await?;
    }
    let release = new_release(target, env, &history, source, options).await?;
    // Secrets resolve before anything is recorded: a missing one is a plain error, not a failed release.
    resolve_env(&release)?;
    let id = history.begin(release);
    target.write_history(&history).await?;
    let release = history.get(&id).expect("just recorded").clone();
    let plan = plan_for(&release, env)?;
    let started = Instant::now();
    let run = Run {
        env,
        release: release.clone(),
        started,
        public_url: target.public_url(),
    };

    let step = announce(&release, "", options.quiet);
    let mut traffic_moved = None;
    // Switch, then verify the public URL (blue-green's old set is still warm
    // then), then retire what is out of traffic; Ctrl-C anywhere in it rolls back.
    let outcome = tokio::select! {
        outcome = async {
            let switched = match release.strategy {
                Strategy::Rolling => strategy::rolling(target, &plan, &step).await,
                Strategy::BlueGreen => strategy::blue_green(target, &plan, &step).await,
            }?;
            traffic_moved = Some(started.elapsed().as_secs_f64());
            let client = target.public_client().map_err(|e| strategy::Failure { reason: format!("{e:#}"), instance: None, first_failure: Some(Instant::now()) })?;
            crate::gate::verify_public(&client, &target.public_url(), plan.health, &step)
                .await
                .map_err(|reason| strategy::Failure { reason, instance: None, first_failure: Some(Instant::now()) })?;
            strategy::retire(target, switched.retire, &step).await;
            Ok(())
        } => outcome,
        signal = interrupted() => Err(strategy::Failure { reason: format!("interrupted by {signal}"), instance: None, first_failure: Some(Instant::now()) }),
    };
    match outcome {
        Ok(_) => {
            step.finish("done");
            let report = run.succeeded(&mut history, traffic_moved);
            target.write_history(&history).await?;
            Ok(report)
        }
        Err(failure) => {
            step.finish("FAILED");
            let logs = match &failure.instance {
                Some(instance) => Some(
                    target
                        .instance_logs(instance, 20)
                        .await
                        .unwrap_or_else(|e| format!("(no logs: {e:#})")),
                ),
                None => None,
            };
            eprintln!(
                "{} failed: {}; rolling back to the previous release",
                release.id, failure.reason
            );
            let active = history.active().cloned();
            let restore = active.as_ref().map(|r| plan_for(r, env)).transpose()?;
            let converge_step = Step::start("automatic rollback", options.quiet);
            let converged = strategy::converge(target, restore.as_ref(), &converge_step).await;
            converge_step.finish(if converged.is_ok() { "done" } else { "FAILED" });
            let rollback_seconds = failure.first_failure.map(|t| t.elapsed().as_secs_f64());
            let report = run.failed(
                &mut history,
                &failure.reason,
                &converged,
                None,
                rollback_seconds,
                logs,
            );
            target.write_history(&history).await?;
            Ok(report)
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
    };
    match source {
        Source::Image { image, overrides } => {
            if let Some(key) = overrides
                .keys()
                .find(|k| release::PLATFORM_ENV.contains(&k.as_str()))
            {
                bail!("--env {key}=…: {key} is set by the deploy engine");
            }
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
                restores: Some(chosen.id.clone()),
                ..base
            })
        }
    }
}

/// On a single host the image must already be in the engine: a rollback needs no registry.
async fn new_release(
    target: &impl Target,
    env: &Environment,
    history: &History,
    source: Source,
    options: &Options,
) -> Result<Release> {
    let mut release = draft_release(env, history, source, options)?;
    match (target.image_id(&release.image).await?, &release.restores) {
        (Some(id), _) => release.image_id = id,
        (None, Some(restores)) => bail!(
            "release {restores}: its image {} is no longer in the target; it cannot be restored without a registry",
            release.image
        ),
        (None, None) => bail!("image {} is not in the target: build or pull it first", release.image),
    }
    Ok(release)
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
