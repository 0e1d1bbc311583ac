//! The swarm target behind the `Target` trait. Rolling is swarm's own
//! start-first `service update` of the live colour (`replace`): the shared
//! gate observes every task through the balancer's checks of its slot, and
//! `follow` keeps traffic on tasks that passed while swarm replaces the
//! rest. Blue-green fills the other colour's service (`start`) and `shift`
//! moves the weights. `undo` reverses what this run did (swarm's `service
//! rollback`, or the slots back and the new service gone), or, with nothing
//! done by this process (a run that died), converges the live service back
//! to the active release.
use std::collections::BTreeMap;

use anyhow::{bail, Result};
use bollard::models::ServiceUpdateStatusStateEnum as UpdateState;

use super::{
    router::{even_weights, preference, slot_row, split_weights},
    service::{release_of, replicas_of, update_state},
    SwarmTarget, COLOURS,
};
use crate::{
    deploy::release::Release,
    gate::Gate,
    progress::Step,
    targets::{docker::check_of, Check, InstanceState, Observation, Seen, Split, Verdict},
};

/// What this process did to the swarm in the current run, for `undo`.
#[derive(Debug, Clone)]
pub struct RunState {
    /// The colour the release went on, and whether its service existed before.
    pub colour: &'static str,
    pub existed: bool,
    /// The colour that served before the run.
    pub live: Option<&'static str>,
    /// `replace`: swarm updates the live service in place.
    pub in_place: bool,
    pub release: String,
}

pub fn other(colour: &str) -> &'static str {
    if colour == "blue" {
        "green"
    } else {
        "blue"
    }
}

impl SwarmTarget {
    /// The colour whose service runs the active release (and has replicas).
    pub async fn live_colour(&self, active: Option<&str>) -> Result<Option<&'static str>> {
        let mut running = None;
        for colour in COLOURS {
            if let Some(service) = self.inspect_service(&self.service_name(colour)).await? {
                if replicas_of(&service) == 0 {
                    continue;
                }
                if release_of(&service).as_deref() == active {
                    return Ok(Some(colour));
                }
                running.get_or_insert(colour);
            }
        }
        Ok(running)
    }

    /// The colour serving the release that serves now, from the weights.
    pub(crate) async fn serving_colour(&self) -> Result<Option<&'static str>> {
        let rows = self.rows().await?;
        for colour in COLOURS {
            let tasks = self.tasks(&self.service_name(colour)).await?;
            if tasks
                .iter()
                .any(|t| slot_row(&rows, t.addr).is_some_and(|r| r.user_weight > 0))
            {
                return Ok(Some(colour));
            }
        }
        self.live_colour(None).await
    }

    /// Plain variables and resolved secrets of a release.
    fn split_env(
        release: &Release,
    ) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
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
    pub async fn put(&self, colour: &str, release: &Release, replicas: usize) -> Result<()> {
        let (vars, secret_values) = Self::split_env(release)?;
        let secrets = self.create_secrets(release, &secret_values).await?;
        let spec = self.spec(colour, release, &vars, secrets, replicas);
        let current = self.inspect_service(&self.service_name(colour)).await?;
        self.apply(spec, current.as_ref()).await
    }

    /// Records where this run puts `release`, then puts it there.
    pub(super) async fn place(&self, release: &Release, in_place: bool) -> Result<()> {
        let live = self.serving_colour().await?;
        let colour = match (in_place, live) {
            (true, Some(live)) => live,
            (false, Some(live)) => other(live),
            (_, None) => "blue",
        };
        let existed = self
            .inspect_service(&self.service_name(colour))
            .await?
            .is_some();
        *self.run.lock().expect("run state") = Some(RunState {
            colour,
            existed,
            live,
            in_place,
            release: release.id.clone(),
        });
        self.put(colour, release, release.replicas).await
    }

    /// The service that carries `release` in this run, else the one labelled with it.
    async fn service_of(&self, release: &str) -> Result<Option<String>> {
        if let Some(run) = self.run.lock().expect("run state").clone() {
            if run.release == release {
                return Ok(Some(self.service_name(run.colour)));
            }
        }
        for colour in COLOURS {
            let name = self.service_name(colour);
            if let Some(service) = self.inspect_service(&name).await? {
                if release_of(&service).as_deref() == Some(release) {
                    return Ok(Some(name));
                }
            }
        }
        Ok(None)
    }

    pub(super) async fn observe_release(&self, release: &Release) -> Result<Observation> {
        let Some(name) = self.service_of(&release.id).await? else {
            return Ok(Observation::default());
        };
        let Some(service) = self.inspect_service(&name).await? else {
            bail!("service {name} disappeared");
        };
        let (state, message) = update_state(&service);
        let tasks = self.tasks(&name).await?;
        let ours: Vec<_> = tasks.iter().filter(|t| t.release == release.id).collect();
        let dead = ours.iter().find(|t| t.died());
        if release_of(&service).as_deref() != Some(&release.id) {
            // Swarm's failure action won the race: same outcome, its reason and the task's.
            let why = dead
                .map(|t| format!("; {}", t.describe_end()))
                .unwrap_or_default();
            return Ok(Observation {
                verdict: Some(Verdict {
                    reason: format!(
                        "swarm rolled service {name} back by itself ({}: {message}){why}",
                        state.map(|s| s.to_string()).unwrap_or_default(),
                    ),
                    instance: dead.map(|t| t.id.clone()),
                }),
                ..Default::default()
            });
        }
        // A task seen running for the first time gets its slot (weight 0):
        // HAProxy's checks of it are the gate's evidence.
        let mut rows = self.rows().await?;
        let wanted: Vec<_> = ours.iter().copied().filter(|t| t.wanted()).collect();
        if self.attach(&wanted, &rows).await? > 0 {
            rows = self.rows().await?;
        }
        let mut instances = Vec::new();
        for task in ours.iter().filter(|t| t.wanted() || t.died()) {
            let row = slot_row(&rows, task.addr);
            let state = if task.died() {
                InstanceState::Exited {
                    code: task.exit_code.unwrap_or(-1),
                }
            } else if matches!(task.state.as_str(), "starting" | "running") {
                InstanceState::Running { restarts: 0 }
            } else {
                InstanceState::Pending
            };
            let check = match (task.state.as_str(), row) {
                ("starting" | "running", Some(row)) => Some(check_of(row)),
                ("starting" | "running", None) => Some(Check::Reported { ready: false }),
                _ => None,
            };
            let slot = row
                .map(|r| {
                    format!(
                        "; balancer slot {}: {:?}, last check {}",
                        r.name, r.status, r.check_status
                    )
                })
                .unwrap_or_default();
            instances.push(Seen {
                id: task.id.clone(),
                name: task.name.clone(),
                state,
                check,
                detail: Some(match &task.error {
                    Some(error) => format!("swarm: {}; {error}{slot}", task.state),
                    None => format!("swarm: {}{slot}", task.state),
                }),
            });
        }
        let others_left = tasks.iter().any(|t| t.release != release.id && t.wanted());
        let updating = matches!(
            state,
            Some(UpdateState::UPDATING | UpdateState::ROLLBACK_STARTED)
        );
        Ok(Observation {
            instances,
            verdict: None,
            settled: !updating && !others_left,
        })
    }

    /// While swarm replaces in place: traffic on the tasks that passed
    /// first, then on the old ones still running, `replicas` of them.
    pub(super) async fn follow_ready(&self, release: &Release, ready: &[String]) -> Result<()> {
        let in_place = self
            .run
            .lock()
            .expect("run state")
            .as_ref()
            .is_some_and(|r| r.in_place && r.release == release.id);
        if !in_place {
            return Ok(());
        }
        let Some(name) = self.service_of(&release.id).await? else {
            return Ok(());
        };
        let tasks = self.tasks(&name).await?;
        let rows = self.rows().await?;
        let ready: Vec<_> = tasks.iter().filter(|t| ready.contains(&t.id)).collect();
        let preferred: Vec<String> = preference(&ready, &tasks, &release.id)
            .into_iter()
            .filter_map(|t| Some(slot_row(&rows, t.addr)?.addr.clone()))
            .collect();
        let weights = even_weights(&preferred, release.replicas.max(1));
        self.route(&rows, &weights, &tasks).await
    }

    /// The weights for `split` over the running tasks of both colours.
    pub(super) async fn shift_to(&self, split: &Split) -> Result<()> {
        let all = self.all_tasks().await?;
        let rows = self.rows().await?;
        // "starting": swarm's HEALTHCHECK has not passed yet, while ours (the gate) has.
        let running: Vec<_> = all
            .iter()
            .filter(|t| t.wanted() && matches!(t.state.as_str(), "starting" | "running"))
            .collect();
        let weights = split_weights(split, &running, &rows)?;
        self.route(&rows, &weights, &all).await
    }

    pub(super) async fn undo_run(
        &self,
        to: Option<&Release>,
        gate: &Gate<'_>,
        step: &Step,
    ) -> Result<()> {
        let run = self.run.lock().expect("run state").take();
        let Some(run) = run else {
            return self.converge(to, gate, step).await;
        };
        let name = self.service_name(run.colour);
        if run.in_place && run.existed && run.live.is_some() {
            let Some(to) = to else {
                bail!("no earlier release on {name} to go back to");
            };
            if let Some(service) = self.inspect_service(&name).await? {
                if release_of(&service).as_deref() == Some(&run.release) {
                    if let Err(e) = self.rollback(&service).await {
                        // Swarm may have started its own rollback in between: that is as good.
                        let now = self.inspect_service(&name).await?;
                        if now.as_ref().and_then(release_of).as_deref() == Some(&run.release) {
                            return Err(e);
                        }
                    }
                }
            }
            return self.watch_back(to, run.colour, gate, step).await;
        }
        // All traffic back on the release that served (a no-op when it
        // never moved; a canary's share otherwise), before the new service goes.
        if let (Some(_), Some(to)) = (run.live, to) {
            self.shift_to(&Split::all(&to.id)).await?;
        }
        match self.inspect_service(&name).await? {
            Some(service) if run.existed => self.scale(&service, 0).await,
            Some(_) => self.remove_service(&name).await,
            None => Ok(()),
        }
    }

    /// Gates `to` on `colour` again as swarm brings it back, the slots following it.
    async fn watch_back(
        &self,
        to: &Release,
        colour: &'static str,
        gate: &Gate<'_>,
        step: &Step,
    ) -> Result<()> {
        *self.run.lock().expect("run state") = Some(RunState {
            colour,
            existed: true,
            live: Some(colour),
            in_place: true,
            release: to.id.clone(),
        });
        let back = gate.until_ready(self, to, to.replicas, step).await;
        *self.run.lock().expect("run state") = None;
        back.map(|_| ()).map_err(|f| {
            anyhow::anyhow!(
                "{} did not come back on {}: {}",
                to.id,
                self.service_name(colour),
                f.reason
            )
        })
    }

    /// After a run that died (kill -9, a lost runner): the live service goes
    /// back to the active release, so that swarm's "previous spec" is a known
    /// good one again, and the other colour is scaled to 0.
    async fn converge(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        let Some(active) = to else {
            return Ok(());
        };
        let Some(colour) = self.live_colour(Some(&active.id)).await? else {
            return Ok(());
        };
        let name = self.service_name(colour);
        let service = self.inspect_service(&name).await?;
        let parked = self
            .inspect_service(&self.service_name(other(colour)))
            .await?;
        let stray = parked.as_ref().is_some_and(|s| replicas_of(s) > 0);
        let on_active = service.as_ref().and_then(release_of).as_deref() == Some(&active.id);
        if on_active && !stray {
            return Ok(());
        }
        step.line(&format!("converging {name} to {}", active.id));
        if !on_active {
            self.put(colour, active, active.replicas).await?;
        }
        self.ensure_front().await?;
        self.watch_back(active, colour, gate, step).await?;
        if let Some(parked) = parked.filter(|s| replicas_of(s) > 0) {
            self.scale(&parked, 0).await?;
        }
        Ok(())
    }

    /// Scales the service that runs `release` to 0, unless it is the one serving.
    pub(super) async fn retire_release(&self, release: &str) -> Result<()> {
        let serving = self.serving_colour().await?;
        for colour in COLOURS {
            if Some(colour) == serving {
                continue;
            }
            let name = self.service_name(colour);
            if let Some(service) = self.inspect_service(&name).await? {
                if release_of(&service).as_deref() == Some(release) && replicas_of(&service) > 0 {
                    // Out of the balancer first (no request, no check), then
                    // stopped: each task finishes what it serves as it drains.
                    self.take_out(&self.tasks(&name).await?).await?;
                    self.scale(&service, 0).await?;
                }
            }
        }
        let _ = super::service::remove_unused_secrets(self).await;
        Ok(())
    }
}
