//! The Docker target: instances are containers on one engine (see
//! `instances`), traffic is the balancer's slots (see `traffic`), and the
//! history and lock are named volumes in the same engine (see `records`).
//! It moves traffic itself, so it has no native rollout and undoes by
//! converging with the shared code.
mod instances;
mod prune;
mod records;
mod traffic;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::future::join_all;

pub use instances::Instance;
use instances::{list_scoped, remove_forced};
pub use prune::{prune_images, Pruned};

use super::{Caps, Check, InstanceState, InstanceView, Observation, Seen, Split, Target};
use crate::{
    balancer::Balancer,
    deploy::{
        lock::{LockInfo, LockStore, Renewal},
        records::{HistoryStore, Ledger},
        release::{History, Release},
    },
    engine,
    environment::Environment,
    gate::{self, Gate, ProbeResult},
    progress::Step,
};

pub mod labels {
    pub const SCOPE: &str = "xtask.scope";
    pub const ROLE: &str = "xtask.role";
    pub const SEQ: &str = "xtask.seq";
    pub const DATA: &str = "xtask.data";
    pub const APP: &str = "xtask.app";
    pub const ENV: &str = "xtask.env";
    pub const RELEASE: &str = "xtask.release";
    pub const COLOR: &str = "xtask.color";
}

/// The port the app listens on unless a release sets PORT.
const DEFAULT_PORT: &str = "8080";
const SOCKET_IN_CONTAINER: &str = "/run/app/app.sock";
/// The image's non-root user must be able to create its socket in the mounted folder.
pub(crate) const APP_UID: u32 = 65532;

pub struct DockerTarget {
    docker: Docker,
    /// `<app>--<env>`: prefixes every container and record of this environment.
    scope: String,
    app: String,
    /// image.repo: the images `prune` may remove.
    repo: String,
    env_name: String,
    drain_seconds: f64,
    health_path: String,
    probe_timeout: Duration,
    runtime_dir: PathBuf,
    balancer: Balancer,
    public_url: String,
    ledger: Ledger<records::VolumeStore>,
}

/// Sockets and nginx's files live on the engine's host, outside any checkout,
/// so every runner on that host finds the same ones.
pub(crate) fn runtime_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/xtask")
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(dir).join("xtask")
    } else {
        PathBuf::from(format!("/tmp/xtask-{}", nix::unistd::geteuid()))
    }
}

impl DockerTarget {
    pub async fn connect(env: &Environment) -> Result<DockerTarget> {
        let docker = match env.engine_host() {
            Some(host) => engine::connect(host).await?,
            None => engine::require().await?.0,
        };
        let app = env.app_name();
        let scope = env.scope();
        let runtime_dir = runtime_root().join(&scope);
        std::fs::create_dir_all(runtime_dir.join("sockets"))
            .with_context(|| format!("creating {}", runtime_dir.display()))?;
        Ok(DockerTarget {
            ledger: Ledger::new(records::VolumeStore {
                docker: docker.clone(),
                scope: scope.clone(),
            }),
            docker,
            balancer: Balancer::new(&runtime_dir, env.balancer()),
            runtime_dir,
            scope,
            app,
            repo: env.file.image.repo.clone(),
            env_name: env.name.clone(),
            drain_seconds: env.file.health.drain_seconds,
            health_path: env.file.health.path.clone(),
            probe_timeout: env.file.health.timeout(),
            public_url: env.public_url(),
        })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    fn socket_dir(&self, name: &str) -> PathBuf {
        self.runtime_dir.join("sockets").join(name)
    }

    fn instance_from(
        &self,
        id: String,
        name: String,
        labels: &HashMap<String, String>,
        host_port: Option<String>,
    ) -> Instance {
        Instance {
            id,
            name: name.trim_start_matches('/').to_owned(),
            release: labels.get(labels::RELEASE).cloned().unwrap_or_default(),
            color: labels.get(labels::COLOR).cloned().unwrap_or_default(),
            probe_url: host_port
                .map(|p| format!("http://127.0.0.1:{p}"))
                .unwrap_or_default(),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        remove_forced(&self.docker, id).await
    }

    /// Removes every trace of the environment: instances, history and lock
    /// records, the balancer and its folder. For throwaway environments
    /// (tests, benchmarks), never for real ones.
    pub async fn destroy(&self) -> Result<()> {
        self.balancer.stop()?;
        for c in list_scoped(&self.docker, &self.scope, None).await? {
            self.remove_container(&c.id.unwrap_or_default()).await?;
        }
        self.ledger.remove_all().await?;
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        Ok(())
    }

    /// Which instance (by name) each slot sends traffic to.
    pub fn routes(&self) -> Vec<Option<String>> {
        self.balancer
            .routes(self.balancer.slot_count())
            .into_iter()
            .map(|socket| {
                socket.and_then(|s| Some(s.parent()?.file_name()?.to_string_lossy().into_owned()))
            })
            .collect()
    }

    fn route(&self, slot: usize, instance: &str) -> Result<()> {
        let socket = self.socket_dir(instance).join("app.sock");
        if !socket.exists() {
            bail!(
                "instance {instance} has no socket at {}: is LISTEN_SOCKET honoured by the image?",
                socket.display()
            );
        }
        self.balancer.route(slot, &socket)
    }

    async fn running(&self) -> Result<Vec<(Instance, InstanceState)>> {
        let containers = self.containers().await?;
        let states = join_all(containers.iter().map(|c| self.instance_state(c))).await;
        containers
            .into_iter()
            .zip(states)
            .map(|(c, s)| Ok((c, s?)))
            .collect()
    }
}

impl LockStore for DockerTarget {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>> {
        self.ledger.lock_create(info).await
    }
    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        self.ledger.lock_read().await
    }
    async fn lock_remove(&self, token: &str) -> Result<()> {
        self.ledger.lock_remove(token).await
    }
    async fn lock_renew(&self, token: &str, at: i64) -> Result<Renewal> {
        self.ledger.lock_renew(token, at).await
    }
}

impl HistoryStore for DockerTarget {
    async fn read_history(&self) -> Result<History> {
        self.ledger.read_history().await
    }
    async fn write_history(&self, history: &History) -> Result<()> {
        self.ledger.write_history(history).await
    }
}

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
        self.balancer.public_client()
    }

    /// On a single host the image must already be in the engine: a rollback needs no registry.
    async fn admit(&self, release: &mut Release) -> Result<()> {
        let found = match self.docker.inspect_image(&release.image).await {
            Ok(inspect) => inspect.id,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => return Err(e).with_context(|| format!("inspecting image {}", release.image)),
        };
        match (found, &release.restores) {
            (Some(id), _) => release.image_id = id,
            (None, Some(restores)) => bail!(
                "release {restores}: its image {} is no longer in the engine; it cannot be restored without a registry",
                release.image
            ),
            (None, None) => bail!("image {} is not in the engine: build or pull it first", release.image),
        }
        Ok(())
    }

    async fn prepare(&self, release: &Release) -> Result<()> {
        self.balancer.ensure(release.replicas).await
    }

    async fn start(&self, release: &Release, count: usize) -> Result<()> {
        let alive = self
            .running()
            .await?
            .into_iter()
            .filter(|(i, s)| {
                i.release == release.id && matches!(s, InstanceState::Running { restarts: 0 })
            })
            .count();
        let env = crate::deploy::resolve_env(release)?;
        let started = join_all((alive..count).map(|_| self.start_instance(release, &env))).await;
        started.into_iter().try_for_each(|s| s.map(|_| ()))
    }

    async fn replace(&self, release: &Release) -> Result<()> {
        bail!(
            "the Docker target has no native rollout (asked to replace with {})",
            release.id
        )
    }

    async fn observe(&self, release: &Release) -> Result<Observation> {
        let client = reqwest::Client::new();
        let ours: Vec<(Instance, InstanceState)> = self
            .running()
            .await?
            .into_iter()
            .filter(|(i, _)| i.release == release.id)
            .collect();
        let probes = join_all(ours.iter().map(|(i, state)| {
            let url = format!("{}{}", i.probe_url, self.health_path);
            let probe = matches!(state, InstanceState::Running { .. }) && !i.probe_url.is_empty();
            let client = &client;
            async move {
                match probe {
                    true => Some(gate::probe(client, &url, self.probe_timeout).await),
                    false => None,
                }
            }
        }))
        .await;
        Ok(Observation {
            instances: ours
                .into_iter()
                .zip(probes)
                .map(|((i, state), probe)| Seen {
                    id: i.id,
                    name: i.name,
                    state,
                    check: probe.map(Check::Probe),
                    detail: None,
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
        let current = self.routes();
        let mut running: HashMap<String, Vec<String>> = HashMap::new();
        for (instance, state) in self.running().await? {
            if state == (InstanceState::Running { restarts: 0 }) {
                running
                    .entry(instance.release)
                    .or_default()
                    .push(instance.name);
            }
        }
        for list in running.values_mut() {
            list.sort();
        }
        let counts = traffic::slot_counts(split, current.len());
        let next = traffic::assign(&current, &counts, &running)?;
        for (slot, (now, then)) in current.iter().zip(&next).enumerate() {
            if let Some(instance) = then.as_ref().filter(|t| Some(*t) != now.as_ref()) {
                self.route(slot, instance)?;
            }
        }
        Ok(())
    }

    async fn split(&self) -> Result<Split> {
        let routes = self.routes();
        let release_of: HashMap<String, String> = self
            .containers()
            .await?
            .into_iter()
            .map(|i| (i.name, i.release))
            .collect();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for name in routes.iter().flatten() {
            if let Some(release) = release_of.get(name) {
                *counts.entry(release.clone()).or_default() += 1;
            }
        }
        let total = routes.len().max(1);
        Ok(Split(
            counts
                .into_iter()
                .map(|(r, n)| (r, (n * 100 / total) as u8))
                .collect(),
        ))
    }

    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        crate::strategy::converge(self, to, gate, step).await
    }

    async fn retire(&self, release: &str, keep: usize) -> Result<()> {
        let routed: Vec<String> = self.routes().into_iter().flatten().collect();
        let idle: Vec<Instance> = self
            .containers()
            .await?
            .into_iter()
            .filter(|i| i.release == release && !routed.contains(&i.name))
            .collect();
        let stopped = join_all(idle.iter().skip(keep).map(|i| self.stop_instance(i))).await;
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
        let routes = self.routes();
        let total = routes.len().max(1) as f64;
        Ok(self
            .running()
            .await?
            .into_iter()
            .map(|(i, state)| {
                let slots = routes
                    .iter()
                    .filter(|r| r.as_deref() == Some(&i.name))
                    .count();
                InstanceView {
                    traffic: Some(slots as f64 * 100.0 / total),
                    id: i.id,
                    name: i.name,
                    release: i.release,
                    colour: i.color,
                    state,
                }
            })
            .collect())
    }

    async fn probes(&self, path: &str, timeout: Duration) -> Result<Vec<(String, ProbeResult)>> {
        let routed: Vec<String> = self.routes().into_iter().flatten().collect();
        let client = reqwest::Client::new();
        let mut results = Vec::new();
        for instance in self.containers().await? {
            if routed.contains(&instance.name) && !instance.probe_url.is_empty() {
                let url = format!("{}{path}", instance.probe_url);
                results.push((instance.name, gate::probe(&client, &url, timeout).await));
            }
        }
        Ok(results)
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }

    async fn stop_all(&self) -> Result<()> {
        let all = self.containers().await?;
        let stopped = join_all(all.iter().map(|i| self.stop_instance(i))).await;
        stopped.into_iter().collect::<Result<()>>()?;
        self.balancer.stop()
    }

    async fn prune(&self, kept: &[Release], dry_run: bool) -> Result<Option<Pruned>> {
        prune_images(&self.docker, &self.repo, kept, dry_run)
            .await
            .map(Some)
    }

    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "kind": "docker",
            "scope": self.scope,
            "image_present": self.docker.inspect_image(&release.image).await.is_ok(),
            "instances": release.replicas,
            "balancer": { "public_url": self.public_url, "slots": release.replicas },
        }))
    }
}
