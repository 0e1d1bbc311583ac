//! Rolling and blue-green, written once against the `Target` trait, and
//! `converge`, which brings any state (a failed or interrupted deploy, a
//! kill -9) back to "every slot serves the active release, nothing else runs".
use std::{collections::BTreeMap, time::Instant};

use anyhow::Result;
use futures_util::future::join_all;

use crate::{
    environment::HealthConfig,
    health,
    progress::Step,
    release::Release,
    target::{Instance, InstanceState, Target},
};

/// What to run and how to judge it.
pub struct Plan<'a> {
    pub release: &'a Release,
    /// Fully resolved app environment (secrets included): never logged.
    pub env: BTreeMap<String, String>,
    pub health: &'a HealthConfig,
    pub replicas: usize,
}

/// Why a strategy stopped. The caller converges back to the active release.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    /// The instance that failed its gate, for its logs.
    pub instance: Option<Instance>,
    /// The first failed probe: the rollback clock starts here.
    pub first_failure: Option<Instant>,
}

impl Failure {
    fn from_error(e: anyhow::Error) -> Failure {
        Failure {
            reason: format!("{e:#}"),
            instance: None,
            first_failure: Some(Instant::now()),
        }
    }
}

async fn is_running(target: &impl Target, instance: &Instance) -> bool {
    matches!(
        target.instance_state(instance).await,
        Ok(InstanceState::Running { restarts: 0 })
    )
}

/// A running instance of `release` that no slot uses: reused instead of starting another.
async fn take_spare(
    target: &impl Target,
    release: &str,
    spares: &mut Vec<Instance>,
) -> Option<Instance> {
    while let Some(pos) = spares.iter().position(|i| i.release == release) {
        let candidate = spares.remove(pos);
        if is_running(target, &candidate).await {
            return Some(candidate);
        }
    }
    None
}

async fn start_and_gate(
    target: &impl Target,
    plan: &Plan<'_>,
    spare: Option<Instance>,
    step: &Step,
) -> Result<Instance, Failure> {
    let instance = match spare {
        Some(instance) => instance,
        None => target
            .start_instance(plan.release, &plan.env)
            .await
            .map_err(Failure::from_error)?,
    };
    let gate = health::gate(target, &instance, plan.health, step).await;
    if gate.passed {
        step.line(&format!(
            "{} passed the gate: {} probes in {:.1}s",
            instance.name, gate.probes, gate.seconds
        ));
        Ok(instance)
    } else {
        Err(Failure {
            reason: gate.reason.unwrap_or_else(|| "gate failed".into()),
            instance: Some(instance),
            first_failure: gate.first_failure,
        })
    }
}

async fn stop_quietly(target: &impl Target, instance: Option<Instance>, step: &Step) {
    if let Some(instance) = instance {
        if let Err(e) = target.stop_instance(&instance).await {
            // Left for `converge` to remove on the next run; worth saying.
            step.line(&format!("warning: could not stop {}: {e:#}", instance.name));
            eprintln!("warning: could not stop {}: {e:#}", instance.name);
        }
    }
}

/// Slot by slot: start one new instance (surge), gate it, move the slot to
/// it, then drain and stop the old one while the next slot's instance starts.
pub async fn rolling(target: &impl Target, plan: &Plan<'_>, step: &Step) -> Result<(), Failure> {
    target
        .ensure_balancer(plan.replicas)
        .await
        .map_err(Failure::from_error)?;
    let instances = target.instances().await.map_err(Failure::from_error)?;
    let routes = target.routes().await.map_err(Failure::from_error)?;
    let routed = |slot: usize| {
        routes
            .get(slot)
            .cloned()
            .flatten()
            .and_then(|name| instances.iter().find(|i| i.name == name).cloned())
    };
    let mut spares: Vec<Instance> = instances
        .iter()
        .filter(|i| !routes.contains(&Some(i.name.clone())))
        .cloned()
        .collect();
    let mut retiring: Option<Instance> = None;
    for slot in 0..plan.replicas {
        let current = routed(slot);
        if let Some(current) = &current {
            if current.release == plan.release.id && is_running(target, current).await {
                continue;
            }
        }
        step.line(&format!("slot {slot}: starting {}", plan.release.id));
        let spare = take_spare(target, &plan.release.id, &mut spares).await;
        let (started, ()) = tokio::join!(
            start_and_gate(target, plan, spare, step),
            stop_quietly(target, retiring.take(), step)
        );
        let instance = started?;
        target.route(slot, &instance).await.map_err(|e| Failure {
            instance: Some(instance.clone()),
            ..Failure::from_error(e)
        })?;
        step.line(&format!("slot {slot}: traffic moved to {}", instance.name));
        retiring = current;
    }
    stop_quietly(target, retiring, step).await;
    Ok(())
}

/// The whole new set started and gated, all slots moved at once, the old set
/// kept until the public URL passes the verification window, then stopped.
pub async fn blue_green(target: &impl Target, plan: &Plan<'_>, step: &Step) -> Result<(), Failure> {
    target
        .ensure_balancer(plan.replicas)
        .await
        .map_err(Failure::from_error)?;
    let instances = target.instances().await.map_err(Failure::from_error)?;
    let routes = target.routes().await.map_err(Failure::from_error)?;
    let old: Vec<Option<Instance>> = (0..plan.replicas)
        .map(|slot| {
            routes
                .get(slot)
                .cloned()
                .flatten()
                .and_then(|name| instances.iter().find(|i| i.name == name).cloned())
        })
        .collect();
    step.line(&format!(
        "starting {} instances of {} ({})",
        plan.replicas,
        plan.release.id,
        plan.release.color()
    ));
    let gated =
        join_all((0..plan.replicas).map(|_| start_and_gate(target, plan, None, step))).await;
    let mut fresh = Vec::new();
    let mut failure = None;
    for result in gated {
        match result {
            Ok(instance) => fresh.push(instance),
            Err(f) => failure = failure.or(Some(f)),
        }
    }
    if let Some(failure) = failure {
        // The instances that did pass are orphans now: converge removes them.
        return Err(failure);
    }
    for (slot, instance) in fresh.iter().enumerate() {
        target
            .route(slot, instance)
            .await
            .map_err(Failure::from_error)?;
    }
    step.line(&format!(
        "all {} slots moved to {}; verifying",
        plan.replicas, plan.release.id
    ));
    if let Err(reason) = health::verify_public(target, plan.health, step).await {
        let first_failure = Some(Instant::now());
        for (slot, previous) in old.iter().enumerate() {
            if let Some(previous) = previous {
                let _ = target.route(slot, previous).await;
            }
        }
        return Err(Failure {
            reason,
            instance: fresh.first().cloned(),
            first_failure,
        });
    }
    join_all(old.into_iter().map(|o| stop_quietly(target, o, step))).await;
    Ok(())
}

/// Makes the target serve `active` on every slot (reusing its running
/// instances when there are any), then removes every instance no slot uses.
/// With no active release, removes all instances.
pub async fn converge(target: &impl Target, active: Option<&Plan<'_>>, step: &Step) -> Result<()> {
    if let Some(plan) = active {
        rolling(target, plan, step)
            .await
            .map_err(|f| anyhow::anyhow!("restoring {}: {}", plan.release.id, f.reason))?;
    }
    let routes = if active.is_some() {
        target.routes().await?
    } else {
        Vec::new()
    };
    let orphans: Vec<Instance> = target
        .instances()
        .await?
        .into_iter()
        .filter(|i| !routes.contains(&Some(i.name.clone())))
        .collect();
    for orphan in &orphans {
        step.line(&format!(
            "removing {} (release {}): no slot uses it",
            orphan.name, orphan.release
        ));
    }
    join_all(
        orphans
            .into_iter()
            .map(|o| stop_quietly(target, Some(o), step)),
    )
    .await;
    Ok(())
}
