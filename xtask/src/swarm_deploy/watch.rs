//! Our gate over a swarm service: watches swarm's update (its state, the
//! spec it settled on, every task) and probes each task of the release
//! through its socket. It fails on the first task that dies (a flapping task
//! never escapes: moby#37972), on `failure_threshold` failed probes in a row,
//! on a task not ready by the deadline, or when swarm rolled back by itself.
//! While it watches it can keep the balancer's slots on ready tasks.
use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use bollard::models::ServiceUpdateStatusStateEnum as UpdateState;

use crate::{
    environment::HealthConfig,
    progress::Step,
    targets::swarm::{
        service::{release_of, update_state},
        tasks::{TaskView, NO_SOCKET},
        SwarmTarget,
    },
};

pub struct Failure {
    pub reason: String,
    /// The task whose logs explain it.
    pub task: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
struct Probes {
    successes: u32,
    failures_in_a_row: u32,
    ready: bool,
    last: String,
}

pub struct Watch<'a> {
    pub target: &'a SwarmTarget,
    pub service: String,
    /// The release whose tasks must all be ready.
    pub release: String,
    pub replicas: usize,
    pub health: &'a HealthConfig,
    /// Rolling: move slots onto ready tasks on every tick. Blue-green: leave them.
    pub route: bool,
    probes: HashMap<String, Probes>,
    first_seen: HashMap<String, Instant>,
}

impl<'a> Watch<'a> {
    pub fn new(
        target: &'a SwarmTarget,
        service: String,
        release: String,
        replicas: usize,
        health: &'a HealthConfig,
        route: bool,
    ) -> Watch<'a> {
        Watch {
            target,
            service,
            release,
            replicas,
            health,
            route,
            probes: HashMap::new(),
            first_seen: HashMap::new(),
        }
    }

    fn fail(&self, reason: String, task: Option<&TaskView>) -> Failure {
        Failure {
            reason,
            task: task.map(|t| t.id.clone()),
            at: Instant::now(),
        }
    }

    /// Until every wanted task is of the release and ready (and, when
    /// routing, every slot on one of them), or a failure. Returns the ready tasks' ids.
    pub async fn until_ready(&mut self, step: &Step) -> Result<Vec<String>, Failure> {
        let h = self.health;
        loop {
            let service = match self.target.inspect_service(&self.service).await {
                Ok(Some(service)) => service,
                Ok(None) => {
                    return Err(self.fail(format!("service {} disappeared", self.service), None))
                }
                Err(e) => return Err(self.fail(format!("{e:#}"), None)),
            };
            let (state, message) = update_state(&service);
            let tasks = match self.target.tasks(&self.service).await {
                Ok(tasks) => tasks,
                Err(e) => return Err(self.fail(format!("{e:#}"), None)),
            };
            let ours: Vec<&TaskView> = tasks.iter().filter(|t| t.release == self.release).collect();
            let dead = ours.iter().copied().find(|t| t.died());
            if release_of(&service).as_deref() != Some(&self.release) {
                // Swarm's failure action won the race: same outcome, its reason and the task's.
                let why = dead
                    .map(|t| format!("; {}", t.describe_end()))
                    .unwrap_or_default();
                return Err(self.fail(
                    format!(
                        "swarm rolled service {} back by itself ({}: {message}){why}",
                        self.service,
                        state.map(|s| s.to_string()).unwrap_or_default(),
                    ),
                    dead,
                ));
            }
            if let Some(dead) = dead {
                return Err(self.fail(dead.describe_end(), Some(dead)));
            }
            for task in ours.iter().filter(|t| t.wanted()) {
                self.check(task).await?;
            }
            let ready: Vec<&TaskView> = ours
                .iter()
                .copied()
                .filter(|t| t.wanted() && self.probes.get(&t.id).is_some_and(|p| p.ready))
                .collect();
            let slots = if self.route {
                let wanted = preference(&ready, &tasks, &self.release);
                match self.target.route(&wanted) {
                    Ok((_, slots)) => slots,
                    Err(e) => return Err(self.fail(format!("moving balancer slots: {e:#}"), None)),
                }
            } else {
                vec![]
            };
            let others_left = tasks
                .iter()
                .any(|t| t.release != self.release && t.wanted());
            let settled = !matches!(
                state,
                Some(UpdateState::UPDATING | UpdateState::ROLLBACK_STARTED)
            );
            let routed = !self.route || {
                let ids: HashSet<&str> = ready.iter().map(|t| t.id.as_str()).collect();
                slots
                    .iter()
                    .all(|r| r.as_deref().is_some_and(|id| ids.contains(id)))
            };
            step.line(&format!(
                "{}: {}/{} of {} ready{}",
                self.service,
                ready.len(),
                self.replicas,
                self.release,
                state
                    .map(|s| format!(", swarm update {s}"))
                    .unwrap_or_default()
            ));
            if ready.len() >= self.replicas && !others_left && routed && (settled || !self.route) {
                let live: HashSet<String> = tasks
                    .iter()
                    .filter(|t| t.wanted())
                    .map(|t| t.id.clone())
                    .collect();
                let slots = if self.route {
                    slots
                } else {
                    self.target.routes()
                };
                self.target.prune_sockets(&live, &slots);
                return Ok(ready.iter().map(|t| t.id.clone()).collect());
            }
            tokio::time::sleep(h.interval()).await;
        }
    }

    /// Probes one wanted task of the release unless it already passed.
    async fn check(&mut self, task: &TaskView) -> Result<(), Failure> {
        let h = self.health;
        let seen = *self
            .first_seen
            .entry(task.id.clone())
            .or_insert_with(Instant::now);
        if self.probes.get(&task.id).is_some_and(|p| p.ready) {
            return Ok(());
        }
        if seen.elapsed() > h.deadline() {
            let last = self
                .probes
                .get(&task.id)
                .map(|p| p.last.clone())
                .unwrap_or_default();
            let detail = task.error.clone().unwrap_or(last);
            return Err(self.fail(
                format!(
                    "task {} not ready within the {}s deadline (swarm: {}; {detail})",
                    task.name, h.deadline_seconds, task.state
                ),
                Some(task),
            ));
        }
        if !matches!(task.state.as_str(), "starting" | "running") {
            return Ok(());
        }
        let result = self.target.probe_task(task, &h.path, h.timeout()).await;
        let probes = self.probes.entry(task.id.clone()).or_default();
        probes.last = result.describe();
        if result.ok() {
            probes.successes += 1;
            probes.failures_in_a_row = 0;
            probes.ready = probes.successes >= h.success_threshold;
        } else if result.error.as_deref() != Some(NO_SOCKET)
            && seen.elapsed().as_millis() as u64 >= h.initial_delay_ms
        {
            probes.successes = 0;
            probes.failures_in_a_row += 1;
            if probes.failures_in_a_row >= h.failure_threshold {
                let reason = format!(
                    "task {}: {} failed {} probes in a row (last: {})",
                    task.name, h.path, probes.failures_in_a_row, probes.last
                );
                return Err(self.fail(reason, Some(task)));
            }
        }
        Ok(())
    }
}

/// Slots go to ready tasks of the release first, then to other running
/// tasks that swarm keeps (their slot has no ready replacement yet), then
/// to tasks swarm is stopping, which still answer while they drain.
fn preference(ready: &[&TaskView], all: &[TaskView], release: &str) -> Vec<String> {
    let replaced: HashSet<i64> = ready.iter().map(|t| t.slot).collect();
    let others = all.iter().filter(|t| t.release != release && t.running());
    let (kept, draining): (Vec<&TaskView>, Vec<&TaskView>) = others.partition(|t| t.wanted());
    let (unreplaced, replaced_kept): (Vec<&TaskView>, Vec<&TaskView>) =
        kept.into_iter().partition(|t| !replaced.contains(&t.slot));
    ready
        .iter()
        .copied()
        .chain(unreplaced)
        .chain(replaced_kept)
        .chain(draining)
        .map(|t| t.id.clone())
        .collect()
}
