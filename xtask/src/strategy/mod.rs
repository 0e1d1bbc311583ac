//! Rolling and blue-green, written once against the `Target` trait, and
//! `converge`, which brings any state (a failed or interrupted deploy, a
//! kill -9) back to "every slot serves the active release, nothing else runs".
use std::{collections::BTreeMap, time::Instant};

use anyhow::Result;
use futures_util::{future::join_all, stream::FuturesUnordered, StreamExt};

use crate::{
    deploy::release::Release,
    environment::HealthConfig,
    gate as health,
    progress::Step,
    targets::{Instance, InstanceState, Target},
};

/// What to run and how to judge it.
pub struct Plan<'a> {
    pub release: &'a Release,
    /// Fully resolved app environment (secrets included): never logged.
    pub env: BTreeMap<String, String>,
    pub health: &'a HealthConfig,
    pub replicas: usize,
}

/// Traffic has moved; what must go once the public URL passes verification.
pub struct Switched {
    pub retire: Vec<Instance>,
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

/// The balancer ready for `replicas` slots, the instances, and which one each slot serves.
async fn snapshot(
    target: &impl Target,
    replicas: usize,
) -> Result<(Vec<Instance>, Vec<Option<String>>), Failure> {
    target
        .ensure_balancer(replicas)
        .await
        .map_err(Failure::from_error)?;
    let instances = target.instances().await.map_err(Failure::from_error)?;
    let routes = target.routes().await.map_err(Failure::from_error)?;
    Ok((instances, routes))
}

/// Slot by slot: start one new instance (surge), gate it, move the slot to
/// it, then drain and stop the old one while the next slot's instance starts.
pub async fn rolling(
    target: &impl Target,
    plan: &Plan<'_>,
    step: &Step,
) -> Result<Switched, Failure> {
    let (instances, routes) = snapshot(target, plan.replicas).await?;
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
    // Old instances drain and stop in the background while the next slot's
    // instance starts; the last one waits for verification, in case traffic must come back.
    let mut stopping = FuturesUnordered::new();
    let mut last_old = None;
    for slot in 0..plan.replicas {
        let current = routed(slot);
        if let Some(current) = &current {
            if current.release == plan.release.id && is_running(target, current).await {
                continue;
            }
        }
        step.line(&format!("slot {slot}: starting {}", plan.release.id));
        let work = start_for_slot(target, plan, &mut spares, step);
        tokio::pin!(work);
        let instance = loop {
            tokio::select! {
                started = &mut work => break started?,
                Some(()) = stopping.next(), if !stopping.is_empty() => {}
            }
        };
        target.route(slot, &instance).await.map_err(|e| Failure {
            instance: Some(instance.clone()),
            ..Failure::from_error(e)
        })?;
        step.line(&format!("slot {slot}: traffic moved to {}", instance.name));
        if let Some(old) = last_old.take() {
            stopping.push(stop_quietly(target, Some(old), step));
        }
        last_old = current;
    }
    while stopping.next().await.is_some() {}
    Ok(Switched {
        retire: last_old.into_iter().collect(),
    })
}

/// A spare instance of the release when one is ready (a draining one is
/// not), else a new one; a spare that fails its gate is dropped for a new one.
async fn start_for_slot(
    target: &impl Target,
    plan: &Plan<'_>,
    spares: &mut Vec<Instance>,
    step: &Step,
) -> Result<Instance, Failure> {
    if let Some(spare) = take_spare(target, &plan.release.id, spares).await {
        match start_and_gate(target, plan, Some(spare.clone()), step).await {
            Ok(instance) => return Ok(instance),
            Err(failure) => {
                step.line(&format!(
                    "spare {} not reusable ({}); starting a new one",
                    spare.name, failure.reason
                ));
                stop_quietly(target, Some(spare), step).await;
            }
        }
    }
    start_and_gate(target, plan, None, step).await
}

/// The whole new set started and gated, then all slots moved at once. The
/// old set keeps running, out of traffic, until the caller has verified the
/// public URL: a failed verification moves the slots straight back to it.
pub async fn blue_green(
    target: &impl Target,
    plan: &Plan<'_>,
    step: &Step,
) -> Result<Switched, Failure> {
    let (instances, routes) = snapshot(target, plan.replicas).await?;
    let old: Vec<Instance> = routes
        .iter()
        .flatten()
        .filter_map(|name| instances.iter().find(|i| &i.name == name).cloned())
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
    for result in gated {
        // Instances that did pass become orphans on failure: converge removes them.
        fresh.push(result?);
    }
    for (slot, instance) in fresh.iter().enumerate() {
        target
            .route(slot, instance)
            .await
            .map_err(Failure::from_error)?;
    }
    step.line(&format!(
        "all {} slots moved to {}",
        plan.replicas, plan.release.id
    ));
    Ok(Switched { retire: old })
}

/// Drains and stops instances that no longer get traffic.
pub async fn retire(target: &impl Target, instances: Vec<Instance>, step: &Step) {
    join_all(
        instances
            .into_iter()
            .map(|o| stop_quietly(target, Some(o), step)),
    )
    .await;
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
