//! The Docker Swarm target: each environment is a pair of replicated
//! services, `<app>-<env>-blue` and `<app>-<env>-green`. Rolling updates the
//! live one in place (swarm's own start-first update, watched and gated by
//! us); blue-green fills the other one and switches. Tasks are reached on the
//! manager's host through unix sockets in a bind-mounted folder, by probes and
//! by the same nginx balancer as the Docker target; the ingress mesh and
//! overlay addresses are never used. That is also why every task is placed
//! on the manager the xtask talks to: the balancer and the sockets share its host. History and lock are swarm config
//! objects, so every manager, and every fresh runner, sees the same ones.
mod records;
mod repair;
pub mod rollout;
pub mod router;
pub mod service;
pub mod tasks;
mod view;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::{
    balancer::Balancer,
    deploy::{records::Ledger, release::Release},
    engine,
    environment::{Environment, HealthConfig, SwarmConfig},
    gate::{Gate, ProbeResult},
    progress::Step,
    targets::{
        docker::{runtime_root, APP_UID},
        Caps, InstanceView, Observation, Split, Target,
    },
};

pub const COLOURS: [&str; 2] = ["blue", "green"];

pub struct SwarmTarget {
    docker: Docker,
    /// `<app>-<env>`: prefixes the services, configs and secrets of this environment.
    scope: String,
    /// image.repo: the images `prune` may remove.
    repo: String,
    env_name: String,
    settings: SwarmConfig,
    drain_seconds: f64,
    runtime_dir: PathBuf,
    balancer: Balancer,
    public_url: String,
    /// The manager this runner talks to. Tasks are placed on it: the balancer
    /// reaches them through sockets on this host's filesystem.
    node_id: String,
    /// Probe clients by task id (see `probe_socket`); pruned with the sockets.
    probe_clients: std::sync::Mutex<std::collections::HashMap<String, reqwest::Client>>,
    /// The engine `engine start` recorded, whose registry credentials a deploy may need.
    engine_state: Option<engine::EngineState>,
    health: HealthConfig,
    ledger: Ledger<records::ConfigStore>,
    /// What this process did in the current run, for `undo`.
    run: std::sync::Mutex<Option<rollout::RunState>>,
}

impl SwarmTarget {
    pub async fn connect(env: &Environment) -> Result<SwarmTarget> {
        let (docker, state) = match env.engine_host() {
            Some(host) => (engine::connect(host).await?, None),
            None => engine::require().await?,
        };
        let info = docker
            .info()
            .await
            .context("asking the engine for its swarm state")?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            bail!(
                "{}: target.kind = \"swarm\" but this engine is not a swarm manager (swarm state: {}); run `docker swarm init` on it, or set target.host to a manager",
                env.path.display(),
                swarm
                    .local_node_state
                    .map(|s| s.to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "inactive".into())
            );
        }
        let node_id = swarm.node_id.clone().unwrap_or_default();
        let scope = env.scope();
        let runtime_dir = runtime_root().join(format!("swarm-{scope}"));
        let sockets = runtime_dir.join("sockets");
        std::fs::create_dir_all(&sockets)
            .with_context(|| format!("creating {}", sockets.display()))?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&sockets, Some(APP_UID.into()), Some(APP_UID.into()))
                .with_context(|| format!("handing {} to the app's user", sockets.display()))?;
        }
        Ok(SwarmTarget {
            ledger: Ledger::new(records::ConfigStore {
                docker: docker.clone(),
                scope: scope.clone(),
            }),
            health: env.file.health.clone(),
            run: Default::default(),
            docker,
            balancer: Balancer::new(&runtime_dir, env.balancer()),
            runtime_dir,
            scope,
            env_name: env.name.clone(),
            repo: env.file.image.repo.clone(),
            settings: env.swarm(),
            drain_seconds: env.file.health.drain_seconds,
            public_url: env.public_url(),
            engine_state: state,
            node_id,
            probe_clients: Default::default(),
        })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn service_name(&self, colour: &str) -> String {
        format!("{}-{colour}", self.scope)
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Where the task `task_id` listens, on this host.
    pub fn socket_path(&self, task_id: &str) -> PathBuf {
        self.runtime_dir
            .join("sockets")
            .join(format!("{task_id}.sock"))
    }

    /// Removes every trace of the environment: services, secrets, history and
    /// lock, the balancer and its folder. For throwaway environments (tests,
    /// benchmarks), never for real ones.
    pub async fn destroy(&self) -> Result<()> {
        self.balancer.stop()?;
        for colour in COLOURS {
            self.remove_service(&self.service_name(colour)).await?;
        }
        self.ledger.remove_all().await?;
        service::remove_unused_secrets(self).await?;
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        Ok(())
    }

    /// Stops the services (scaled to 0, specs kept) and the balancer; used by `down`.
    pub async fn scale_down_all(&self) -> Result<()> {
        for colour in COLOURS {
            if let Some(current) = self.inspect_service(&self.service_name(colour)).await? {
                self.scale(&current, 0).await?;
            }
        }
        self.balancer.stop()
    }
}

impl SwarmTarget {
    /// Credentials for the registry `image` comes from, sent with each create
    /// and update so every node can pull it (`--with-registry-auth`).
    pub fn registry_auth(&self, image: &str) -> Result<Option<bollard::auth::DockerCredentials>> {
        let Some(registry) = crate::registry::registry_of(image) else {
            return Ok(None);
        };
        Ok(
            crate::registry::credentials_for(registry, self.engine_state.as_ref())?
                .map(|c| c.docker_auth(registry)),
        )
    }
}

crate::deploy::records::ledger_records!(SwarmTarget);

impl Target for SwarmTarget {
    fn caps(&self) -> Caps {
        Caps {
            native_rollout: true,
        }
    }

    fn public_url(&self) -> String {
        self.public_url.clone()
    }

    fn public_client(&self) -> Result<reqwest::Client> {
        self.balancer.public_client()
    }

    /// Nodes pull by reference; the local id is recorded when this engine has the image.
    async fn admit(&self, release: &mut Release) -> Result<()> {
        release.image_id = match self.docker.inspect_image(&release.image).await {
            Ok(image) => image.id.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Ok(())
    }

    async fn prepare(&self, release: &Release) -> Result<()> {
        self.balancer.ensure(release.replicas).await
    }

    async fn start(&self, release: &Release, _count: usize) -> Result<()> {
        self.place(release, false).await
    }

    async fn replace(&self, release: &Release) -> Result<()> {
        self.place(release, true).await
    }

    async fn observe(&self, release: &Release) -> Result<Observation> {
        self.observe_release(release).await
    }

    async fn follow(&self, release: &Release, ready: &[String]) -> Result<()> {
        self.follow_ready(release, ready).await
    }

    async fn shift(&self, split: &Split) -> Result<()> {
        self.shift_to(split).await
    }

    async fn split(&self) -> Result<Split> {
        let routes = self.routes();
        let total = routes.len().max(1);
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for view in self.task_views().await? {
            let slots = routes
                .iter()
                .filter(|r| r.as_deref() == Some(&view.id))
                .count();
            if slots > 0 {
                *counts.entry(view.release).or_default() += slots;
            }
        }
        Ok(Split(
            counts
                .into_iter()
                .map(|(r, n)| (r, (n * 100 / total) as u8))
                .collect(),
        ))
    }

    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        let undone = self.undo_run(to, gate, step).await;
        let _ = service::remove_unused_secrets(self).await;
        undone
    }

    async fn retire(&self, release: &str, _keep: usize) -> Result<()> {
        self.retire_release(release).await
    }

    async fn logs(&self, _release: &Release, instance: Option<&str>, lines: usize) -> String {
        match instance {
            Some(task) => self.task_logs(task, lines).await,
            None => String::new(),
        }
    }

    async fn instances(&self) -> Result<Vec<InstanceView>> {
        self.task_views().await
    }

    async fn probes(&self, path: &str, timeout: Duration) -> Result<Vec<(String, ProbeResult)>> {
        self.slot_probes(path, timeout).await
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        let routed = repair::once(self, &self.health.path, self.health.timeout()).await?;
        Ok(Some(serde_json::to_value(routed)?))
    }

    async fn stop_all(&self) -> Result<()> {
        self.scale_down_all().await
    }

    /// The manager's engine only: other nodes keep what they pulled.
    async fn prune(
        &self,
        kept: &[Release],
        dry_run: bool,
    ) -> Result<Option<crate::targets::docker::Pruned>> {
        crate::targets::docker::prune_images(&self.docker, &self.repo, kept, dry_run)
            .await
            .map(Some)
    }

    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        self.planned_spec(release).await
    }
}
