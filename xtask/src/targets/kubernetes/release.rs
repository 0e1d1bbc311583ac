//! The Kubernetes target behind the `Target` trait. The Deployment
//! controller replaces pods and the Service routes to ready ones, so rolling
//! is one server-side apply of the overlay (`replace`) and the gate reads
//! the rollout as the controller reports it (`observe` watches it to its
//! end). Blue-green applies a coloured Deployment beside the live one
//! (`start`) and `shift` moves the Service's selector. `undo` reverses what
//! this run did: the previous revision's template applied again, or the
//! Service switched back and the new colour scaled to 0.
use anyhow::{bail, Result};
use serde_json::Value;

use super::{
    autoscaling::{self, Replicas},
    blue_green, manifests, rollout, KubeTarget,
};
use crate::{
    deploy::release::Release,
    environment::Strategy,
    targets::{Check, InstanceState, Observation, Seen, Split, Verdict},
};

/// What this process rendered and did in the current run, for `undo`.
#[derive(Debug, Clone)]
pub struct KubeRun {
    pub release: String,
    pub objects: Vec<Value>,
    /// The overlay's Deployment as rendered for the release.
    pub deployment: Value,
    /// Rolling: the revision that served before this run.
    pub before: Option<String>,
    /// Rolling under an HPA: the live count, to hand spec.replicas over
    /// before the first apply that leaves it out (see `autoscaling`).
    pub handover: Option<i32>,
    /// Blue-green: the colour serving before, and the one this run fills.
    pub live: Option<String>,
    pub colour: &'static str,
    pub blue_green: bool,
    /// Blue-green: the Service selects the new colour.
    pub switched: bool,
}

fn same(a: &Value, b: &Value) -> bool {
    a["kind"] == b["kind"] && a["metadata"]["name"] == b["metadata"]["name"]
}

impl KubeTarget {
    fn current(&self) -> Result<KubeRun> {
        match self.run.lock().expect("run state").clone() {
            Some(run) => Ok(run),
            None => bail!("no release prepared in this run"),
        }
    }

    fn remember(&self, run: KubeRun) {
        *self.run.lock().expect("run state") = Some(run);
    }

    /// Renders before touching the cluster: a broken overlay fails the release without a change.
    pub(super) async fn prepare_release(&self, release: &Release) -> Result<()> {
        let mut objects = manifests::render(self, release)?;
        let index = objects
            .iter()
            .position(|o| {
                o["kind"] == "Deployment"
                    && o["metadata"]["name"] == self.settings.deployment.as_str()
            })
            .expect("render checked the Deployment is there");
        let blue_green = release.strategy == Strategy::BlueGreen;
        let (mut before, mut live, mut handover) = (None, None, None);
        match release.strategy {
            Strategy::Rolling => {
                let current = self.current_deployment().await?;
                before = current.as_ref().and_then(rollout::revision_of);
                // Only here is the applied Deployment the HPA's target: on
                // blue-green it targets the serving colour, never the one filled.
                let floor = autoscaling::hpa_floor(&objects, &self.settings.deployment);
                let count = current
                    .as_ref()
                    .map(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1));
                if let Replicas::LeftToHpa(n) =
                    autoscaling::replicas(release.replicas, floor, count)
                {
                    objects[index] = autoscaling::without_replicas(&objects[index]);
                    let owned = current.as_ref().is_some_and(|d| {
                        autoscaling::applies_replicas(d, manifests::FIELD_MANAGER)
                    });
                    handover = owned.then_some(n);
                }
            }
            Strategy::BlueGreen => live = self.live_colour().await?,
            Strategy::Canary => {
                bail!("the Kubernetes target has no weighted traffic for a canary (refused when the environment is loaded)")
            }
        };
        self.remember(KubeRun {
            release: release.id.clone(),
            colour: blue_green::other(live.as_deref().unwrap_or("green")),
            deployment: objects[index].clone(),
            objects,
            before,
            live,
            handover,
            blue_green,
            switched: false,
        });
        Ok(())
    }

    pub(super) async fn apply_all(&self) -> Result<()> {
        let run = self.current()?;
        if let Some(replicas) = run.handover {
            self.hand_over_replicas(replicas).await?;
        }
        for object in &run.objects {
            self.apply(object).await?;
        }
        Ok(())
    }

    /// The new colour beside the live one (the preview Service reaches it);
    /// with no live colour yet, the Service keeps its selector until the switch.
    pub(super) async fn apply_beside(&self) -> Result<()> {
        let run = self.current()?;
        let s = &self.settings;
        let moves = blue_green::switch_objects(&run.objects, s, run.colour)?;
        let serving = run.live.as_deref().unwrap_or(run.colour);
        let staged = blue_green::coloured(&run.objects, s, run.colour, serving)?;
        for object in staged
            .iter()
            .filter(|o| run.live.is_some() || !moves.iter().any(|m| same(m, o)))
        {
            self.apply(object).await?;
        }
        Ok(())
    }

    /// Watches the rollout of the release's Deployment to its end.
    pub(super) async fn observe_rollout(&self, release: &Release) -> Result<Observation> {
        let run = self.current()?;
        let name = match run.blue_green {
            true => self.colour_deployment(run.colour),
            false => self.settings.deployment.clone(),
        };
        match self.wait_rollout(&name, self.deadline).await {
            Ok(()) => Ok(Observation {
                instances: (0..release.replicas)
                    .map(|i| Seen {
                        id: format!("{name}/{i}"),
                        name: format!("{name} replica {i}"),
                        state: InstanceState::Running { restarts: 0 },
                        check: Some(Check::Reported { ready: true }),
                        detail: None,
                    })
                    .collect(),
                verdict: None,
                settled: true,
            }),
            Err(reason) => Ok(Observation {
                verdict: Some(Verdict {
                    reason,
                    instance: Some(release.id.clone()),
                }),
                ..Default::default()
            }),
        }
    }

    /// Blue-green: the Service and the autoscaler onto the new colour.
    pub(super) async fn switch(&self, split: &Split) -> Result<()> {
        let mut run = self.current()?;
        if !run.blue_green || split.share(&run.release) != 100 {
            bail!("the Kubernetes target moves traffic by switching a blue-green Service to one release (asked for {split:?})");
        }
        for object in blue_green::switch_objects(&run.objects, &self.settings, run.colour)? {
            self.apply(&object).await?;
        }
        run.switched = true;
        self.remember(run);
        Ok(())
    }

    /// Back to what served before this run (see `repair` for a run that
    /// died in another process).
    pub(super) async fn undo_run(&self, run: KubeRun) -> Result<()> {
        if run.blue_green {
            return self.switch_back(&run).await;
        }
        let Some(before) = run.before.as_deref() else {
            bail!(
                "this was the first revision of Deployment {}: there is none to go back to",
                self.settings.deployment
            );
        };
        if self.revision().await?.as_deref() == Some(before) {
            // The apply never made a new revision (it failed before the Deployment): nothing to undo.
            return Ok(());
        }
        self.undo_to(before, &run.deployment).await?;
        self.wait_rollout(&self.settings.deployment, self.deadline)
            .await
            .map_err(|reason| anyhow::anyhow!("revision {before} did not come back: {reason}"))
    }

    /// Traffic back to the live colour (or to the overlay's own selector when
    /// there was none), then the failed colour scaled to 0.
    async fn switch_back(&self, run: &KubeRun) -> Result<()> {
        let s = &self.settings;
        if run.switched {
            let back = match &run.live {
                Some(old) => blue_green::switch_objects(&run.objects, s, old)?,
                None => {
                    let moved = blue_green::switch_objects(&run.objects, s, run.colour)?;
                    run.objects
                        .iter()
                        .filter(|o| moved.iter().any(|m| same(m, o)))
                        .cloned()
                        .collect()
                }
            };
            for object in &back {
                self.apply(object).await?;
            }
        }
        self.scale(&self.colour_deployment(run.colour), 0).await
    }

    /// After blue-green verified: the old colour goes, and the overlay's own
    /// Deployment too, left from rolling deploys before.
    pub(super) async fn retire_old(&self) -> Result<()> {
        let Some(run) = self.run.lock().expect("run state").clone() else {
            return Ok(());
        };
        if !run.blue_green {
            return Ok(());
        }
        let old = run.live.iter().map(|c| self.colour_deployment(c));
        for name in old.chain([self.settings.deployment.clone()]) {
            self.scale(&name, 0).await?;
        }
        Ok(())
    }
}
