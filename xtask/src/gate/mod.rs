//! The one gate: a release's instances are observed until enough of them
//! passed (`success_threshold` good probes in a row, or the orchestrator's
//! own readiness) or one failed (`failure_threshold` bad probes in a row
//! after the initial delay, an exit, a restart, the deadline, or the
//! orchestrator giving up). The conditions are pure functions of what was
//! observed (`Tally`); the loop that observes is the caller's clock.
pub mod analysis;
mod probe;
mod verify;
pub mod watch;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::Serialize;

pub use probe::{probe, ProbeResult};
pub use verify::{probe_round, round_urls, verify_public};

use crate::{
    deploy::release::Release,
    environment::HealthConfig,
    progress::Step,
    targets::{Check, InstanceState, Seen, Target},
};

/// Why a release failed, with its evidence: the one failure type of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub reason: String,
    /// The instance whose logs explain it.
    pub instance: Option<String>,
    /// The first failed evidence: the rollback clock starts here.
    #[serde(skip)]
    pub at: Instant,
}

impl Failure {
    pub fn new(reason: impl Into<String>, instance: Option<&str>) -> Failure {
        Failure {
            reason: reason.into(),
            instance: instance.map(str::to_owned),
            at: Instant::now(),
        }
    }

    pub fn from_error(e: anyhow::Error) -> Failure {
        Failure::new(format!("{e:#}"), None)
    }
}

/// Failed looks at a release in a row that fail it (see `until_ready`).
pub const OBSERVE_TRIES: u32 = 3;

pub struct Gate<'a> {
    pub health: &'a HealthConfig,
}

/// What the gate has seen of one instance.
#[derive(Debug)]
struct Tally {
    first_seen: Instant,
    successes: u32,
    failures_in_a_row: u32,
    first_failure: Option<Instant>,
    ready: bool,
    last: String,
}

impl Tally {
    fn new(now: Instant) -> Tally {
        Tally {
            first_seen: now,
            successes: 0,
            failures_in_a_row: 0,
            first_failure: None,
            ready: false,
            last: "not probed yet".into(),
        }
    }

    /// Takes one observation of the instance in; an error is the failure it proves.
    fn take(&mut self, seen: &Seen, h: &HealthConfig, now: Instant) -> Result<(), String> {
        let name = &seen.name;
        match seen.state {
            InstanceState::Running { restarts: 0 } | InstanceState::Pending => {}
            InstanceState::Running { restarts } => {
                return Err(format!("instance {name} restarted {restarts} time(s)"))
            }
            InstanceState::Exited { code } => {
                return Err(format!("instance {name} exited with code {code}"))
            }
            InstanceState::Missing => return Err(format!("instance {name} disappeared")),
        }
        match &seen.check {
            Some(Check::Probe(result)) => {
                self.last = result.describe();
                if result.ok() {
                    self.successes += 1;
                    self.failures_in_a_row = 0;
                    self.ready |= self.successes >= h.success_threshold;
                } else if now.duration_since(self.first_seen)
                    >= Duration::from_millis(h.initial_delay_ms)
                {
                    self.successes = 0;
                    self.failures_in_a_row += 1;
                    self.first_failure.get_or_insert(now);
                    if self.failures_in_a_row >= h.failure_threshold {
                        return Err(format!(
                            "{} failed {} probes in a row (last: {})",
                            result.url, self.failures_in_a_row, self.last
                        ));
                    }
                }
            }
            Some(Check::Reported { ready }) => {
                self.ready = *ready;
                self.failures_in_a_row = 0;
            }
            Some(Check::Failed { reason }) => {
                self.last = reason.clone();
                self.ready = false;
                self.successes = 0;
                if now.duration_since(self.first_seen) >= Duration::from_millis(h.initial_delay_ms)
                {
                    self.failures_in_a_row += 1;
                    self.first_failure.get_or_insert(now);
                    if self.failures_in_a_row >= h.failure_threshold {
                        return Err(format!(
                            "instance {name}: {reason} ({} looks in a row)",
                            self.failures_in_a_row
                        ));
                    }
                }
            }
            None => {}
        }
        if !self.ready && now.duration_since(self.first_seen) > h.deadline() {
            let detail = seen.detail.clone().unwrap_or_else(|| self.last.clone());
            return Err(format!(
                "instance {name} not ready within the {}s deadline ({detail})",
                h.deadline_seconds
            ));
        }
        Ok(())
    }
}

impl Gate<'_> {
    /// Observes `release` until `want` of its instances passed (and, on a
    /// native rollout, the orchestrator settled), or one failed. Returns the
    /// ids of the instances that passed.
    pub async fn until_ready(
        &self,
        target: &impl Target,
        release: &Release,
        want: usize,
        step: &Step,
    ) -> Result<Vec<String>, Failure> {
        let h = self.health;
        let native = target.caps().native_rollout;
        let started = Instant::now();
        let mut tallies: HashMap<String, Tally> = HashMap::new();
        let mut unseen = 0;
        loop {
            // An engine or API server that drops one request (a pooled
            // connection closed under it) says nothing about the release:
            // only OBSERVE_TRIES failed looks in a row fail it.
            let seen = match target.observe(release).await {
                Ok(seen) => {
                    unseen = 0;
                    seen
                }
                Err(e) if unseen + 1 < OBSERVE_TRIES => {
                    unseen += 1;
                    step.line(&format!(
                        "warning: observing {} failed ({unseen} of {OBSERVE_TRIES} in a row): {e:#}",
                        release.id
                    ));
                    tokio::time::sleep(h.interval()).await;
                    continue;
                }
                Err(e) => {
                    return Err(Failure::from_error(e.context(format!(
                        "observing {} failed {OBSERVE_TRIES} times in a row",
                        release.id
                    ))))
                }
            };
            if let Some(verdict) = seen.verdict {
                return Err(Failure::new(verdict.reason, verdict.instance.as_deref()));
            }
            let now = Instant::now();
            for instance in &seen.instances {
                let tally = tallies
                    .entry(instance.id.clone())
                    .or_insert_with(|| Tally::new(now));
                if let Err(reason) = tally.take(instance, h, now) {
                    return Err(Failure {
                        reason: format!("{reason} before passing the gate"),
                        instance: Some(instance.id.clone()),
                        at: tally.first_failure.unwrap_or(now),
                    });
                }
            }
            let ready: Vec<String> = seen
                .instances
                .iter()
                .filter(|i| tallies.get(&i.id).is_some_and(|t| t.ready))
                .map(|i| i.id.clone())
                .collect();
            if native {
                target
                    .follow(release, &ready)
                    .await
                    .map_err(Failure::from_error)?;
            }
            step.line(&format!(
                "{}: {}/{want} instances passed the gate",
                release.id,
                ready.len()
            ));
            if ready.len() >= want && (!native || seen.settled) {
                return Ok(ready);
            }
            if started.elapsed() > h.deadline() + h.interval() * 2 && seen.instances.len() < want {
                return Err(Failure::new(
                    format!(
                        "only {} of {want} instances of {} exist after the {}s deadline",
                        seen.instances.len(),
                        release.id,
                        h.deadline_seconds
                    ),
                    None,
                ));
            }
            tokio::time::sleep(h.interval()).await;
        }
    }
}

#[cfg(test)]
mod tests;
