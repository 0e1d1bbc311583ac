//! deploy and rollback on Docker Swarm. Same frame as `deploy::run` and
//! `kube_deploy::run` (lock, record, roll out, gate, activate or roll back
//! and record the failure, unlock), with swarm's own machinery in between:
//! rolling is a start-first `service update` that our gate watches and
//! reverses with `service rollback` when it fails before swarm's own
//! failure action does; blue-green fills the other colour's service,
//! switches the balancer's slots, verifies, and scales the old one to zero.
pub mod route;
mod watch;

use std::{collections::BTreeMap, time::Instant};

use anyhow::Result;

use crate::{
    deploy::lock,
    deploy::release::{History, Release},
    deploy::{DeployReport, Options, Source},
    environment::{Environment, Strategy},
    progress::Step,
    targets::swarm::{
        service::{release_of, replicas_of},
        SwarmTarget, COLOURS,
    },
};
use watch::{Failure, Watch};

pub async fn run(
    target: &SwarmTarget,
    env: &Environment,
    source: Source,
    options: &Options,
) -> Result<DeployReport> {
    lock::while_held(target, env, &options.command, async |_| {
        locked(target, env, source, options).await
    })
    .await
}

/// The colour whose service runs the active release (and has replicas).
pub async fn live_colour(target: &SwarmTarget, history: &History) -> Result<Option<&'static str>> {
    let active = history.active().map(|r| r.id.clone());
    let mut running = None;
    for colour in COLOURS {
        if let Some(service) = target.inspect_service(&target.service_name(colour)).await? {
            if replicas_of(&service) == 0 {
                continue;
            }
            if release_of(&service) == active {
                return Ok(Some(colour));
            }
            running.get_or_insert(colour);
        }
    }
    Ok(running)
}

fn other(colour: &str) -> &'static str {
    if colour == "blue" {
        "green"
    } else {
        "blue"
    }
}

/// Plain variables and resolved secrets of a release.
fn split_env(release: &Release) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let mut secrets = BTreeMap::new();
    for (name, reference) in &release.secrets {
        secrets.insert(
            name.clone(),
            crate::environment::resolve_secret(name, reference)?,
        );
    }
    Ok((release.env.clone(), secrets))
}

/// Puts `release` on the colour's service (created when missing) with `replicas`.
async fn put(target: &SwarmTarget, colour: &str, release: &Release, replicas: usize) -> Result<()> {
    let (vars, secret_values) = split_env(release)?;
    let secrets = target.create_secrets(release, &secret_values).await?;
    let spec = target.spec(colour, release, &vars, secrets, replicas);
    let current = target.inspect_service(&target.service_name(colour)).await?;
    target.apply(spec, current.as_ref()).await
}

/// After a run that died (kill -9, a lost runner): the live service goes
/// back to the active release before anything new is tried, so that
/// swarm's "previous spec" is a known good one again.
async fn converge(
    target: &SwarmTarget,
    env: &Environment,
    history: &History,
    quiet: bool,
) -> Result<()> {
    let Some(active) = history.active() else {
        return Ok(());
    };
    let Some(colour) = live_colour(target, history).await? else {
        return Ok(());
    };
    let name = target.service_name(colour);
    let service = target.inspect_service(&name).await?;
    let parked = target
        .inspect_service(&target.service_name(other(colour)))
        .await?;
    let stray = parked.as_ref().is_some_and(|s| replicas_of(s) > 0);
    if service.as_ref().and_then(release_of).as_deref() == Some(&active.id) && !stray {
        return Ok(());
    }
    let step = Step::start(&format!("converge {name} to {}", active.id), quiet);
    if service.as_ref().and_then(release_of).as_deref() != Some(&active.id) {
        put(target, colour, active, active.replicas).await?;
    }
    target.balancer().ensure(active.replicas).await?;
    let mut watch = Watch::new(
        target,
        name,
        active.id.clone(),
        active.replicas,
        &env.file.health,
        true,
    );
    if let Err(f) = watch.until_ready(&step).await {
        step.finish("FAILED");
        anyhow::bail!(
            "the active release {} does not come back on {colour}: {}",
            active.id,
            f.reason
        );
    }
    if let Some(parked) = parked.filter(|s| replicas_of(s) > 0) {
        target.scale(&parked, 0).await?;
    }
    step.finish("done");
    Ok(())
}

/// What `status` runs when an earlier run died (kill -9, a lost runner):
/// its release recorded failed, the live service back on the active release.
/// Returns whether there was anything to recover.
pub async fn recover_if_abandoned(
    target: &SwarmTarget,
    env: &Environment,
    quiet: bool,
) -> Result<bool> {
    if !lock::abandoned(target, &target.read_history().await?).await? {
        return Ok(false);
    }
    lock::while_held(target, env, "status (recovery)", async |_| {
        let mut history = target.read_history().await?;
        if history.close_interrupted().is_some() {
            target.write_history(&history).await?;
        }
        converge(target, env, &history, quiet).await
    })
    .await?;
    Ok(true)
}

async fn locked(
    target: &SwarmTarget,
    env: &Environment,
    source: Source,
    options: &Options,
) -> Result<DeployReport> {
    let mut history = target.read_history().await?;
    // A run that died mid-update: swarm finished or rolled back its update
    // alone; `converge` below puts the active release back before this run.
    if let Some(id) = history.close_interrupted() {
        eprintln!("{id} was left in progress by an interrupted run: recorded it failed");
        target.write_history(&history).await?;
    }
    converge(target, env, &history, options.quiet).await?;
    let mut release = crate::deploy::draft_release(env, &history, source, options)?;
    // Nodes pull by reference; the local id is recorded when this engine has the image.
    release.image_id = match target.docker().inspect_image(&release.image).await {
        Ok(image) => image.id.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let live = live_colour(target, &history).await?;
    let id = history.begin(release);
    target.write_history(&history).await?;
    let release = history.get(&id).expect("just recorded").clone();

    let started = Instant::now();
    let step = crate::deploy::announce(
        &release,
        &format!(", {} replicas, swarm", release.replicas),
        options.quiet,
    );
    let mut plan = Plan {
        target,
        env,
        release: &release,
        live,
        colour: match release.strategy {
            Strategy::Rolling => live.unwrap_or("blue"),
            Strategy::BlueGreen => live.map(other).unwrap_or("blue"),
        },
        existed: false,
        switched: false,
        moved: None,
    };
    let outcome: Result<(), Failure> = tokio::select! {
        outcome = plan.roll_out(started, &step) => outcome,
        signal = crate::deploy::interrupted() => Err(Failure { reason: format!("interrupted by {signal}"), task: None, at: Instant::now() }),
    };
    let run = crate::deploy::Run {
        env,
        release: release.clone(),
        started,
        public_url: target.public_url(),
    };
    match outcome {
        Ok(()) => {
            step.finish("done");
            if let Some(old) = live.filter(|c| *c != plan.colour) {
                // Only now: until verification passed, the old colour could take traffic back at once.
                if let Some(service) = target.inspect_service(&target.service_name(old)).await? {
                    if let Err(e) = target.scale(&service, 0).await {
                        eprintln!("warning: {e:#}; scale it down by hand");
                    }
                }
            }
            let _ = crate::targets::swarm::service::remove_unused_secrets(target).await;
            let report = run.succeeded(&mut history, plan.moved);
            target.write_history(&history).await?;
            Ok(report)
        }
        Err(failure) => {
            step.finish("FAILED");
            eprintln!("{id} failed: {}; rolling back", failure.reason);
            let logs = match &failure.task {
                Some(task) => Some(target.task_logs(task, 20).await),
                None => None,
            };
            let undo_step = Step::start("automatic rollback", options.quiet);
            let undone = plan.undo(&history, &undo_step).await;
            undo_step.finish(if undone.is_ok() { "done" } else { "FAILED" });
            let _ = crate::targets::swarm::service::remove_unused_secrets(target).await;
            let rollback_seconds = Some(failure.at.elapsed().as_secs_f64());
            let logs = logs.filter(|l| !l.is_empty());
            let report = run.failed(
                &mut history,
                &failure.reason,
                &undone,
                plan.moved,
                rollback_seconds,
                logs,
            );
            target.write_history(&history).await?;
            Ok(report)
        }
    }
}

/// One run's decisions and what it has done so far, for the way back.
struct Plan<'a> {
    target: &'a SwarmTarget,
    env: &'a Environment,
    release: &'a Release,
    /// The colour serving before this run.
    live: Option<&'static str>,
    /// The colour this run puts the release on.
    colour: &'static str,
    /// Whether that colour's service existed before this run.
    existed: bool,
    /// Blue-green: whether the slots moved to the new colour.
    switched: bool,
    moved: Option<f64>,
}

impl Plan<'_> {
    async fn roll_out(&mut self, started: Instant, step: &Step) -> Result<(), Failure> {
        let (target, release) = (self.target, self.release);
        let text = |e: anyhow::Error| Failure {
            reason: format!("{e:#}"),
            task: None,
            at: Instant::now(),
        };
        let name = target.service_name(self.colour);
        self.existed = target.inspect_service(&name).await.map_err(text)?.is_some();
        target
            .balancer()
            .ensure(release.replicas)
            .await
            .map_err(text)?;
        put(target, self.colour, release, release.replicas)
            .await
            .map_err(text)?;
        let rolling = release.strategy == Strategy::Rolling;
        let health = &self.env.file.health;
        let ready = Watch::new(
            target,
            name.clone(),
            release.id.clone(),
            release.replicas,
            health,
            rolling,
        )
        .until_ready(step)
        .await?;
        if !rolling {
            self.switched = true;
            target.route(&ready).map_err(text)?;
        }
        self.moved = Some(started.elapsed().as_secs_f64());
        let client = target.public_client().map_err(text)?;
        crate::gate::verify_public(&client, &target.public_url(), health, step)
            .await
            .map_err(|reason| Failure {
                reason,
                task: None,
                at: Instant::now(),
            })?;
        Ok(())
    }

    /// Back to what served before: swarm's rollback of the updated service
    /// (rolling), or the slots back on the old colour (blue-green); the new
    /// service is removed when this run created it, scaled to 0 otherwise.
    async fn undo(&self, history: &History, step: &Step) -> Result<()> {
        let target = self.target;
        let name = target.service_name(self.colour);
        let health = &self.env.file.health;
        let previous = history.active().cloned();
        if self.release.strategy == Strategy::BlueGreen || !self.existed || self.live.is_none() {
            if let (true, Some(old)) = (self.switched, self.live) {
                let old_tasks: Vec<String> = target
                    .tasks(&target.service_name(old))
                    .await?
                    .into_iter()
                    .filter(|t| t.wanted() && t.running())
                    .map(|t| t.id)
                    .collect();
                target.route(&old_tasks)?;
            }
            return match target.inspect_service(&name).await? {
                Some(service) if self.existed => target.scale(&service, 0).await,
                Some(_) => target.remove_service(&name).await,
                None => Ok(()),
            };
        }
        let Some(previous) = previous else {
            anyhow::bail!("no earlier release on {name} to go back to");
        };
        if let Some(service) = target.inspect_service(&name).await? {
            if release_of(&service).as_deref() == Some(&self.release.id) {
                if let Err(e) = target.rollback(&service).await {
                    // Swarm may have started its own rollback in between: that is as good.
                    let now = target.inspect_service(&name).await?;
                    if now.as_ref().and_then(release_of).as_deref() == Some(&self.release.id) {
                        return Err(e);
                    }
                }
            }
        }
        let mut watch = Watch::new(
            target,
            name.clone(),
            previous.id.clone(),
            previous.replicas,
            health,
            true,
        );
        watch.until_ready(step).await.map(|_| ()).map_err(|f| {
            anyhow::anyhow!("{} did not come back on {name}: {}", previous.id, f.reason)
        })
    }
}
