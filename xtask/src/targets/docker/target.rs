//! The `Target` implementation of the Docker engine.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures_util::{future::join_all, StreamExt};

use super::{
    balancer::{check_of, shift_commands, slot_of, undecided},
    prune_images, repair, traffic, DockerTarget, Instance, Pruned,
};
use crate::{
    deploy::release::Release,
    gate::{Gate, ProbeResult},
    haproxy::{self, AdminState, Command, ServerStatus},
    progress::Step,
    targets::{Caps, Check, InstanceState, InstanceView, Observation, Seen, Split, Target},
};

/// How often `observe` reads the stats while HAProxy decides on a new instance.
const SETTLE_POLL: Duration = Duration::from_millis(15);

impl Target for DockerTarget {
    fn caps(&self) -> Caps {
        Caps {
            native_rollout: false,
        }
    }

    fn public_url(&self) -> String {
        self.public_url.clone()
    }

    fn public_client(&self) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .add_root_certificate(self.trusted_cert()?)
            .build()
            .context("building the public client")
    }

    /// The image must be in the engine, or come from the registry it names
    /// (pulled now, with that registry's credentials only): an image built
    /// on this machine for its own engine needs no registry, one for a
    /// remote host does. A rollback restores the image **id** its release
    /// ran, never whatever its tag names now: `<commit>-dirty` and version
    /// tags move with every build. Then the balancer, so that a port
    /// another process holds is refused before anything is recorded.
    async fn admit(&self, release: &mut Release) -> Result<()> {
        self.admit_image(release).await?;
        self.ensure_balancer().await.map(drop)
    }

    async fn prepare(&self, _release: &Release) -> Result<()> {
        self.ensure_balancer().await.map(drop)
    }

    async fn start(&self, release: &Release, count: usize) -> Result<()> {
        let alive = self
            .running_of(Some(&release.id))
            .await?
            .into_iter()
            .filter(|(_, s)| matches!(s, InstanceState::Running { restarts: 0 }))
            .count();
        let secrets = crate::deploy::resolve_secrets(release)?;
        let secrets = self.secret_files(release.runnable_image(), secrets).await;
        let started =
            join_all((alive..count).map(|_| self.start_instance(release, &release.env, &secrets)))
                .await;
        started.into_iter().try_for_each(|s| s.map(|_| ()))?;
        self.attach(&release.id).await
    }

    async fn replace(&self, release: &Release) -> Result<()> {
        bail!(
            "the Docker target has no native rollout (asked to replace with {})",
            release.id
        )
    }

    async fn observe(&self, release: &Release) -> Result<Observation> {
        let ours = self.running_of(Some(&release.id)).await?;
        let balancer = self.balancer().await;
        let mut rows = match &balancer {
            Some(balancer) => balancer.servers().await?,
            None => Vec::new(),
        };
        // The gate looks again only an interval after this: while HAProxy
        // has yet to decide on one of ours, read its stats again (a few ms
        // on the session) until it has, for at most one check interval, so
        // a batch is seen UP as soon as HAProxy has its check.
        if let Some(balancer) = &balancer {
            let inter = self.haproxy_settings().check_interval_ms;
            let until = Instant::now() + Duration::from_millis(inter.into());
            while undecided(&ours, &rows)
                && Instant::now() < until
                && haproxy::session::is_open(&self.session).await
            {
                tokio::time::sleep(SETTLE_POLL).await;
                rows = balancer.servers().await?;
            }
        }
        Ok(Observation {
            instances: ours
                .into_iter()
                .map(|(i, state)| {
                    let row = slot_of(&rows, i.addr);
                    let check = match (&state, row) {
                        (InstanceState::Running { .. }, Some(row)) => Some(check_of(row)),
                        (InstanceState::Running { .. }, None) => {
                            Some(Check::Reported { ready: false })
                        }
                        _ => None,
                    };
                    Seen {
                        detail: Some(match row {
                            Some(row) => format!(
                                "balancer slot {}: {:?}, last check {}",
                                row.name, row.status, row.check_status
                            ),
                            None => "no balancer slot".into(),
                        }),
                        id: i.id,
                        name: i.name,
                        state,
                        check,
                    }
                })
                .collect(),
            verdict: None,
            settled: true,
        })
    }

    async fn follow(&self, _release: &Release, _ready: &[String]) -> Result<()> {
        Ok(())
    }

    async fn shift(&self, split: &Split) -> Result<()> {
        let balancer = self.open_balancer().await?;
        let rows = balancer.servers().await?;
        let instances = self.running().await?;
        let (commands, _) = shift_commands(split, &rows, &instances)?;
        balancer.exec(&commands).await.map(drop)
    }

    async fn split(&self) -> Result<Split> {
        let rows = self.slots().await?;
        let mut weights: BTreeMap<String, u32> = BTreeMap::new();
        for instance in self.containers().await? {
            if let Some(row) = slot_of(&rows, instance.addr) {
                *weights.entry(instance.release).or_default() += row.user_weight;
            }
        }
        Ok(traffic::shares(&weights))
    }

    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        self.settle().await;
        self.remove_stale_hooks().await?;
        super::reslot::before_undo(self, to).await;
        crate::strategy::converge(self, to, gate, step).await
    }

    async fn retire(&self, release: &str, keep: usize) -> Result<()> {
        let rows = self.slots().await?;
        let idle: Vec<Instance> = self
            .containers()
            .await?
            .into_iter()
            .filter(|i| {
                i.release == release && slot_of(&rows, i.addr).is_none_or(|r| r.user_weight == 0)
            })
            .skip(keep)
            .collect();
        // Out of the balancer first (no new request, no check), then stopped:
        // the instance finishes what it serves within its drain time.
        let slots: Vec<Command> = idle
            .iter()
            .filter_map(|i| slot_of(&rows, i.addr)?.slot)
            .map(|slot| Command::set_state(slot, AdminState::Maint))
            .collect();
        if let Some(balancer) = self.balancer().await {
            balancer.exec(&slots).await?;
        }
        let stopped = join_all(idle.iter().map(|i| self.stop_instance(i))).await;
        stopped.into_iter().collect()
    }

    async fn logs(&self, _release: &Release, instance: Option<&str>, lines: usize) -> String {
        let Some(instance) = instance else {
            return String::new();
        };
        self.instance_logs(instance, lines)
            .await
            .unwrap_or_else(|e| format!("(no logs: {e:#})"))
    }

    async fn instances(&self) -> Result<Vec<InstanceView>> {
        let rows = self.slots().await?;
        let total: u32 = rows
            .iter()
            .filter(|r| r.status != ServerStatus::Maint)
            .map(|r| r.user_weight)
            .sum();
        Ok(self
            .running()
            .await?
            .into_iter()
            .map(|(i, state)| {
                let weight = slot_of(&rows, i.addr).map_or(0, |r| r.user_weight);
                InstanceView {
                    traffic: Some(if total == 0 {
                        0.0
                    } else {
                        f64::from(weight) * 100.0 / f64::from(total)
                    }),
                    id: i.id,
                    name: i.name,
                    release: i.release,
                    colour: i.color,
                    state,
                }
            })
            .collect())
    }

    /// The balancer checks the health path of every instance itself (the
    /// deploying machine may not reach the instances' network): its last
    /// check of each instance in traffic, for that path only.
    async fn probes(&self, path: &str, _timeout: Duration) -> Result<Vec<(String, ProbeResult)>> {
        if path != self.health.path {
            return Ok(Vec::new());
        }
        let rows = self.slots().await?;
        let mut results = Vec::new();
        for instance in self.containers().await? {
            let Some(row) = slot_of(&rows, instance.addr).filter(|r| r.user_weight > 0) else {
                continue;
            };
            let up = row.status == ServerStatus::Up;
            results.push((
                instance.name,
                ProbeResult {
                    url: format!("http://{}{path} (balancer check)", row.addr),
                    status: row.check_code.or(up.then_some(200)),
                    latency_ms: 0.0,
                    error: (!up).then(|| {
                        format!("{:?}: {} {}", row.status, row.check_status, row.check_desc)
                    }),
                },
            ));
        }
        Ok(results)
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        let routed = repair::once(self).await?;
        Ok(Some(serde_json::to_value(routed)?))
    }

    async fn stop_all(&self) -> Result<()> {
        let all = self.containers().await?;
        if let Some(balancer) = self.balancer().await {
            let rows = balancer.servers().await?;
            let out: Vec<Command> = all
                .iter()
                .filter_map(|i| slot_of(&rows, i.addr)?.slot)
                .map(|slot| Command::set_state(slot, AdminState::Maint))
                .collect();
            balancer.exec(&out).await?;
        }
        let stopped = join_all(all.iter().map(|i| self.stop_instance(i))).await;
        stopped.into_iter().collect::<Result<()>>()?;
        match self.open_balancer().await {
            Ok(balancer) => balancer.stop().await,
            Err(_) => Ok(()),
        }
    }

    async fn prune(&self, kept: &[Release], dry_run: bool) -> Result<Option<Pruned>> {
        prune_images(&self.docker, &self.repo, kept, dry_run)
            .await
            .map(Some)
    }

    async fn run_hook(
        &self,
        release: &Release,
        kind: crate::environment::HookKind,
        hook: &crate::environment::HookConfig,
    ) -> Result<crate::deploy::release::HookRun> {
        self.hook(release, kind, hook).await
    }

    async fn servers_of(&self, release: &str) -> Result<Vec<String>> {
        let rows = self.slots().await?;
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter(|i| i.release == release)
            .filter_map(|i| Some(slot_of(&rows, i.addr)?.name.clone()))
            .collect())
    }

    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "kind": "docker",
            "scope": self.scope,
            "image_present": self.docker.inspect_image(&release.image).await.is_ok(),
            "instances": release.replicas,
            "network": self.network,
            "balancer": {
                "container": haproxy::container_name(&self.scope),
                "public_url": self.public_url,
                "instance_port": self.app_port,
                "health_path": self.health.path,
            },
        }))
    }
}

/// Pulls `image` into `docker` unless it is there, with the credentials
/// of the registry it names (never another's).
async fn pull_if_missing(docker: &bollard::Docker, image: &str) -> Result<()> {
    if crate::registry::registry_of(image).is_none() || docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    let state = crate::engine::load_state().ok().flatten();
    let auth = crate::registry::auth_for_image(image, state.as_ref())?;
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut stream = docker.create_image(Some(options), None, auth);
    while let Some(item) = stream.next().await {
        item.with_context(|| format!("pulling {image}"))?;
    }
    Ok(())
}

/// The schema an image's labels name (`deploy::schema`).
fn schema_of(inspect: &bollard::models::ImageInspect) -> Option<crate::deploy::schema::Schema> {
    let labels = inspect.config.as_ref()?.labels.as_ref()?;
    crate::deploy::schema::from_labels(labels)
}

impl DockerTarget {
    /// The image part of `admit` (see there).
    async fn admit_image(&self, release: &mut Release) -> Result<()> {
        let recorded = (release.restores.is_some() && !release.image_id.is_empty())
            .then(|| release.image_id.clone());
        if let Some(id) = &recorded {
            if let Ok(inspect) = self.docker.inspect_image(id).await {
                release.schema = schema_of(&inspect).or(release.schema.take());
                return Ok(());
            }
        }
        pull_if_missing(&self.docker, &release.image).await?;
        let found = match self.docker.inspect_image(&release.image).await {
            Ok(inspect) => {
                release.schema = schema_of(&inspect).or(release.schema.take());
                inspect.id
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => return Err(e).with_context(|| format!("inspecting image {}", release.image)),
        };
        match (found, &release.restores, recorded) {
            (Some(id), Some(restores), Some(ran)) if id != ran => bail!(
                "release {restores} ran image {ran}, which is no longer in the engine, and its tag {} now names another image ({id}): refusing to roll back to an image that never ran; pull the original by digest, or deploy the tag on purpose",
                release.image
            ),
            (Some(id), _, _) => release.image_id = id,
            (None, Some(restores), _) => bail!(
                "release {restores}: its image {} is no longer in the engine; it cannot be restored without a registry",
                release.image
            ),
            (None, None, _) => bail!("image {} is not in the engine: build or pull it first", release.image),
        }
        Ok(())
    }
}
