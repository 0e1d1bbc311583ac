//! The `Target` implementation of a fleet: each call goes to every host at
//! once, except `start` (which fills the pool host by host) and `shift`
//! (which gives each host's balancer the new instances that host runs).
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;

use super::FleetTarget;
use crate::{
    deploy::release::Release,
    gate::{Gate, ProbeResult},
    progress::Step,
    targets::{docker::Pruned, Caps, InstanceView, Observation, Split, Target},
};

impl Target for FleetTarget {
    fn caps(&self) -> Caps {
        Caps {
            native_rollout: false,
        }
    }

    /// The first host's; `public_urls` has every host's.
    fn public_url(&self) -> String {
        self.primary().public_url()
    }

    fn public_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.target.public_url()).collect()
    }

    /// Trusts every host's balancer certificate.
    fn public_client(&self) -> Result<reqwest::Client> {
        crate::targets::docker::client_trusting(self.members.iter().map(|m| &m.target))
    }

    /// Every host pulls the image it lacks (see the Docker target's
    /// `admit`), and every host must hold the same image: a tag that moved
    /// between two pulls is refused.
    async fn admit(&self, release: &mut Release) -> Result<()> {
        release.replicas = self.per_host * self.members.len();
        let draft = self.on_host(release);
        let ids = self
            .each(|m| {
                let mut own = draft.clone();
                async move {
                    m.target.admit(&mut own).await?;
                    Ok((own.image_id, own.schema))
                }
            })
            .await?;
        let (first, schema) = ids[0].clone();
        if let Some((member, (other, _))) = self
            .members
            .iter()
            .zip(&ids)
            .find(|(_, (id, _))| *id != first)
        {
            bail!(
                "{} is image {} on host {} but {} on host {}: the tag moved between pulls; deploy by digest or push an immutable tag",
                release.image,
                first,
                self.members[0].host,
                other,
                member.host
            );
        }
        release.image_id = first;
        release.schema = schema;
        Ok(())
    }

    async fn prepare(&self, release: &Release) -> Result<()> {
        let own = self.on_host(release);
        self.each(|m| m.target.prepare(&own)).await.map(drop)
    }

    async fn start(&self, release: &Release, count: usize) -> Result<()> {
        let own = self.on_host(release);
        let counts = self.spread(count);
        let members = self.members.iter().zip(counts).filter(|(_, n)| *n > 0);
        let started = join_all(members.map(|(m, n)| {
            let own = &own;
            async move {
                m.target
                    .start(own, n)
                    .await
                    .with_context(|| format!("host {}", m.host))
            }
        }))
        .await;
        started.into_iter().collect::<Result<Vec<()>>>().map(drop)
    }

    async fn replace(&self, release: &Release) -> Result<()> {
        bail!(
            "a fleet has no native rollout (asked to replace with {})",
            release.id
        )
    }

    async fn observe(&self, release: &Release) -> Result<Observation> {
        let own = self.on_host(release);
        let seen = self
            .each(|m| {
                let own = &own;
                async move {
                    let mut seen = m.target.observe(own).await?;
                    for instance in &mut seen.instances {
                        instance.name = format!("{}/{}", m.host, instance.name);
                    }
                    Ok(seen)
                }
            })
            .await?;
        Ok(Observation {
            instances: seen.iter().flat_map(|s| s.instances.clone()).collect(),
            verdict: seen.iter().find_map(|s| s.verdict.clone()),
            settled: seen.iter().all(|s| s.settled),
        })
    }

    async fn follow(&self, _release: &Release, _ready: &[String]) -> Result<()> {
        Ok(())
    }

    /// All or nothing moves every balancer; a split in between gives each
    /// host the share its own new instances make of its replicas.
    async fn shift(&self, split: &Split) -> Result<()> {
        let per_host = self.per_host;
        self.each(|m| async move {
            let own = match host_split(split) {
                // A first deploy fills hosts one after the other: a host
                // not reached yet has nothing to route.
                HostSplit::Same if split.0.len() == 1 => {
                    if m.target.running_of(Some(&split.0[0].0)).await?.is_empty() {
                        return Ok(());
                    }
                    split.clone()
                }
                HostSplit::Same => split.clone(),
                HostSplit::Partial { from, to } => {
                    let running = m.target.running_of(Some(&to)).await?.len();
                    let percent = (running.min(per_host) * 100 / per_host) as u8;
                    match percent {
                        0 => Split::all(&from),
                        p => Split::between(Some(&from), &to, p),
                    }
                }
            };
            m.target.shift(&own).await
        })
        .await
        .map(drop)
    }

    /// The hosts' shares averaged: 100 only where every host serves alone.
    async fn split(&self) -> Result<Split> {
        let splits = self.each(|m| m.target.split()).await?;
        let mut weights: BTreeMap<String, u32> = BTreeMap::new();
        for split in &splits {
            for (release, share) in &split.0 {
                *weights.entry(release.clone()).or_default() += u32::from(*share);
            }
        }
        Ok(crate::targets::docker::traffic::shares(&weights))
    }

    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        let own = to.map(|r| self.on_host(r));
        self.each(|m| m.target.undo(own.as_ref(), gate, step))
            .await
            .map(drop)
    }

    async fn retire(&self, release: &str, keep: usize) -> Result<()> {
        self.each(|m| m.target.retire(release, keep))
            .await
            .map(drop)
    }

    async fn logs(&self, release: &Release, instance: Option<&str>, lines: usize) -> String {
        let own = self.on_host(release);
        let logs = join_all(
            self.members
                .iter()
                .map(|m| m.target.logs(&own, instance, lines)),
        )
        .await;
        self.members
            .iter()
            .zip(logs)
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with("(no logs"))
            .map(|(m, l)| format!("[host {}]\n{l}", m.host))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn instances(&self) -> Result<Vec<InstanceView>> {
        let hosts = self.members.len() as f64;
        let all = self
            .each(|m| async move {
                let mut views = m.target.instances().await?;
                for view in &mut views {
                    view.name = format!("{}/{}", m.host, view.name);
                    view.traffic = view.traffic.map(|t| t / hosts);
                }
                Ok(views)
            })
            .await?;
        Ok(all.into_iter().flatten().collect())
    }

    async fn probes(
        &self,
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<(String, ProbeResult)>> {
        let all = self
            .each(|m| async move {
                let probes = m.target.probes(path, timeout).await?;
                Ok(probes
                    .into_iter()
                    .map(|(name, p)| (format!("{}/{name}", m.host), p))
                    .collect::<Vec<_>>())
            })
            .await?;
        Ok(all.into_iter().flatten().collect())
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        let all = self.each(|m| m.target.repair()).await?;
        Ok(Some(serde_json::Value::Object(
            self.members
                .iter()
                .zip(all)
                .map(|(m, v)| (m.host.clone(), v.unwrap_or_default()))
                .collect(),
        )))
    }

    async fn stop_all(&self) -> Result<()> {
        self.each(|m| m.target.stop_all()).await.map(drop)
    }

    async fn prune(&self, kept: &[Release], dry_run: bool) -> Result<Option<Pruned>> {
        let all = self.each(|m| m.target.prune(kept, dry_run)).await?;
        let mut merged = Pruned::default();
        for (member, pruned) in self
            .members
            .iter()
            .zip(all)
            .filter_map(|(m, p)| Some((m, p?)))
        {
            let on = |r: String| format!("{}: {r}", member.host);
            merged.removed.extend(pruned.removed.into_iter().map(on));
            merged
                .kept
                .extend(pruned.kept.into_iter().map(|(r, why)| (on(r), why)));
        }
        Ok(Some(merged))
    }

    /// Once, on the first host: a migration runs once, not once per host.
    async fn run_hook(
        &self,
        release: &Release,
        kind: crate::environment::HookKind,
        hook: &crate::environment::HookConfig,
    ) -> Result<crate::deploy::release::HookRun> {
        self.primary()
            .run_hook(&self.on_host(release), kind, hook)
            .await
    }

    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        let own = self.on_host(release);
        let plans = self.each(|m| m.target.plan(&own)).await?;
        Ok(serde_json::json!({
            "kind": "docker",
            "hosts": self.members.iter().zip(plans).map(|(m, p)| serde_json::json!({
                "host": m.host,
                "plan": p,
            })).collect::<Vec<_>>(),
            "instances_per_host": self.per_host,
            "rollout": "host by host, deploy.surge instances at a time",
        }))
    }
}

enum HostSplit {
    /// Everything to one release, or a split the hosts take as it is.
    Same,
    /// Part of the way from `from` to `to`.
    Partial { from: String, to: String },
}

fn host_split(split: &Split) -> HostSplit {
    match split.0.as_slice() {
        [(from, a), (to, b)] if *a > 0 && *b > 0 => HostSplit::Partial {
            from: from.clone(),
            to: to.clone(),
        },
        _ => HostSplit::Same,
    }
}
