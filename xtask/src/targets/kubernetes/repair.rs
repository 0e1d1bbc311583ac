//! `undo` in a process that did not start the run: a deploy killed half way
//! (kill -9, a lost runner) left the cluster as it stood, and the next
//! command (deploy, rollback or status, through the frame's `recover`) has
//! only the cluster and the history to go by. Blue-green: the Service back on
//! the colour whose pod template carries the active release, the other colour
//! scaled to 0. Rolling: the active release applied again, as a rollback
//! applies it, and its rollout gated. A cluster that already runs the active
//! release is only read: most recoveries (a stale lock after a clean run)
//! find nothing to repair.
use super::{blue_green, manifests, rollout::release_of, KubeTarget};
use crate::{deploy::release::Release, environment::Strategy, gate::Gate, progress::Step};
use anyhow::{anyhow, bail, Result};

/// One colour Deployment as the cluster has it: the release its pod
/// template carries and its replica count.
struct Colour {
    name: &'static str,
    release: Option<String>,
    replicas: i32,
}

impl KubeTarget {
    pub(super) async fn repair_to(
        &self,
        to: Option<&Release>,
        gate: &Gate<'_>,
        step: &Step,
    ) -> Result<()> {
        let Some(to) = to else {
            // No release ever passed: nothing known good to go back to, and
            // there is no `down` on Kubernetes; the next deploy supersedes it.
            step.line("no active release: the cluster is left as it is");
            return Ok(());
        };
        match self.live_colour().await? {
            Some(live) => self.repair_colours(to, &live, step).await,
            None => self.repair_rolling(to, gate, step).await,
        }
    }

    /// The Service (and the autoscaler) onto the colour that runs `to`, then
    /// every other colour scaled to 0.
    async fn repair_colours(&self, to: &Release, live: &str, step: &Step) -> Result<()> {
        let mut colours = Vec::new();
        for name in ["blue", "green"] {
            colours.push(self.colour(name).await?);
        }
        let good = colours
            .iter()
            .find(|c| c.release.as_deref() == Some(to.id.as_str()))
            .map(|c| c.name);
        let Some(good) = good else {
            bail!(
                "neither {} nor {} runs the active release {}: switch Service {} by hand (`cargo xtask rollback` then redeploys it)",
                self.colour_deployment("blue"),
                self.colour_deployment("green"),
                to.id,
                self.settings.service
            );
        };
        if live != good {
            let objects = manifests::render(self, to)?;
            for object in blue_green::switch_objects(&objects, &self.settings, good)? {
                self.apply(&object).await?;
            }
            step.line(&format!(
                "Service {} back on {good} ({})",
                self.settings.service, to.id
            ));
        }
        for other in colours.iter().filter(|c| c.name != good && c.replicas != 0) {
            self.scale(&self.colour_deployment(other.name), 0).await?;
            step.line(&format!(
                "{} scaled to 0",
                self.colour_deployment(other.name)
            ));
        }
        Ok(())
    }

    async fn colour(&self, name: &'static str) -> Result<Colour> {
        let found = self.deployment(&self.colour_deployment(name)).await?;
        Ok(Colour {
            name,
            release: found.as_ref().and_then(release_of),
            replicas: found.and_then(|d| d.spec?.replicas).unwrap_or_default(),
        })
    }

    /// The Deployment back on `to`'s pod template when the dead run changed
    /// it: `to` applied as a rollback applies it (the same render, the same
    /// rules for replicas under an autoscaler), and gated like a deploy.
    async fn repair_rolling(&self, to: &Release, gate: &Gate<'_>, step: &Step) -> Result<()> {
        let current = self.current_deployment().await?;
        if current.as_ref().and_then(release_of).as_deref() == Some(to.id.as_str()) {
            return Ok(());
        }
        let release = Release {
            strategy: Strategy::Rolling,
            ..to.clone()
        };
        step.line(&format!(
            "Deployment {} back on {}",
            self.settings.deployment, to.id
        ));
        self.prepare_release(&release).await?;
        let repaired = async {
            self.apply_all().await?;
            gate.until_ready(self, &release, release.replicas, step)
                .await
                .map_err(|f| anyhow!("restoring {}: {}", to.id, f.reason))
        }
        .await;
        // This repair is no run of its own: nothing for a later `undo` to reverse.
        self.run.lock().expect("run state").take();
        repaired.map(drop)
    }
}
