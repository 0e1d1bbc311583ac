//! The Docker Swarm target: each environment is a pair of replicated
//! services, `<app>-<env>-blue` and `<app>-<env>-green`. Rolling updates the
//! live one in place (swarm's own start-first update, watched and gated by
//! us); blue-green fills the other one and switches. Tasks run on any node,
//! on the environment's attachable overlay network `<scope>-net` with DNS
//! round-robin endpoints (no VIP: IPVS is not everywhere); the balancer in
//! front is the Docker target's HAProxy container on the manager this
//! runner talks to, attached to the same overlay, its slots pointed at the
//! tasks' overlay addresses and steered through its runtime API (see
//! `router`). HAProxy's checks of each task are the gate's evidence: the
//! deploying machine never needs to reach a task. History and lock are swarm
//! config objects, so every manager, and every fresh runner, sees the same
//! ones.
mod nodes;
mod pin;
mod records;
mod repair;
pub mod rollout;
pub mod router;
pub mod service;
pub mod tasks;
mod view;

use std::{collections::HashMap, time::Duration};

use anyhow::{bail, Context, Result};
use bollard::{models::NetworkCreateRequest, Docker};

use crate::{
    deploy::{records::Ledger, release::Release},
    engine,
    environment::{Environment, HealthConfig, SwarmConfig},
    gate::{Gate, ProbeResult},
    progress::Step,
    targets::{
        docker::{labels, DockerTarget},
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
    /// The balancer in front: the Docker target's HAProxy container (its
    /// certificate, config and runtime API) on the manager, on `network`.
    /// Its checks are the gate's evidence.
    front: DockerTarget,
    /// `target.balancer_nodes`: the same balancer on other nodes, on the
    /// same overlay, steered to the same weights from their own checks.
    nodes: Vec<DockerTarget>,
    /// `<scope>-net`: the attachable overlay the tasks and the balancer share.
    network: String,
    /// The port tasks listen on (`PORT`, from [app] port).
    app_port: u16,
    public_url: String,
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
        let scope = env.scope();
        let front = DockerTarget::connect(env).await?;
        let nodes = nodes::connect(env, &docker).await?;
        Ok(SwarmTarget {
            nodes,
            ledger: Ledger::new(records::ConfigStore {
                docker: docker.clone(),
                scope: scope.clone(),
            }),
            health: env.file.health.clone(),
            run: Default::default(),
            public_url: front.public_url(),
            front,
            network: format!("{scope}-net"),
            app_port: env.file.app.port,
            docker,
            scope,
            env_name: env.name.clone(),
            repo: env.file.image.repo.clone(),
            settings: env.swarm(),
            drain_seconds: env.file.health.drain_seconds,
            engine_state: state,
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

    pub fn network(&self) -> &str {
        &self.network
    }

    /// The overlay network, attachable so the balancer container can join
    /// it; made before the balancer so `HaproxyBalancer::ensure` finds it.
    async fn ensure_network(&self) -> Result<()> {
        match self.docker.inspect_network(&self.network, None).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("inspecting network {}", self.network))
            }
        }
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(HashMap::from([(
                labels::SCOPE.to_owned(),
                self.scope.clone(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating overlay network {}", self.network)),
        }
    }

    /// The network, then the balancer container on it (started if stopped).
    pub async fn ensure_front(&self) -> Result<crate::haproxy::HaproxyBalancer> {
        self.ensure_network().await?;
        let front = self.front.ensure_balancer().await?;
        self.ensure_node_balancers().await?;
        Ok(front)
    }

    /// Removes every trace of the environment: services, secrets, history and
    /// lock, the balancer and the network. For throwaway environments (tests,
    /// benchmarks), never for real ones.
    pub async fn destroy(&self) -> Result<()> {
        for colour in COLOURS {
            self.remove_service(&self.service_name(colour)).await?;
        }
        self.ledger.remove_all().await?;
        service::remove_unused_secrets(self).await?;
        for target in self.balancers() {
            if let Some(balancer) = target.balancer().await {
                balancer.remove().await?;
            }
        }
        // The tasks' endpoints leave the overlay a moment after their service.
        for _ in 0..100 {
            if crate::haproxy::engine::remove_network(&self.docker, &self.network)
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for target in self.balancers() {
            let _ = std::fs::remove_dir_all(target.runtime_dir());
        }
        Ok(())
    }

    /// Stops the services (scaled to 0, specs kept) and the balancer; used by `down`.
    pub async fn scale_down_all(&self) -> Result<()> {
        for colour in COLOURS {
            if let Some(current) = self.inspect_service(&self.service_name(colour)).await? {
                self.scale(&current, 0).await?;
            }
        }
        for target in self.balancers() {
            if let Some(balancer) = target.balancer().await {
                balancer.stop().await?;
            }
        }
        Ok(())
    }
}

impl SwarmTarget {
    /// Credentials for the registry `image` comes from, sent with each create
    /// and update so every node can pull it (`--with-registry-auth`).
    pub fn registry_auth(&self, image: &str) -> Result<Option<bollard::auth::DockerCredentials>> {
        crate::registry::auth_for_image(image, self.engine_state.as_ref())
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

    fn public_urls(&self) -> Vec<String> {
        self.balancers().map(|b| b.public_url()).collect()
    }

    fn public_client(&self) -> Result<reqwest::Client> {
        if self.nodes.is_empty() {
            return self.front.public_client();
        }
        crate::targets::docker::client_trusting(self.balancers())
    }

    /// Nodes pull by reference: the release records, and its service runs,
    /// the image pinned to its registry digest (see `pin`).
    async fn admit(&self, release: &mut Release) -> Result<()> {
        self.pin(release).await
    }

    async fn prepare(&self, _release: &Release) -> Result<()> {
        self.ensure_front().await.map(drop)
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
        self.traffic_split().await
    }

    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        self.front.remove_stale_hooks().await?;
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

    async fn probes(&self, path: &str, _timeout: Duration) -> Result<Vec<(String, ProbeResult)>> {
        self.slot_probes(path).await
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        let routed = repair::once(self).await?;
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

    /// On the manager, attached to the environment's overlay: the tasks' network.
    async fn run_hook(
        &self,
        release: &Release,
        kind: crate::environment::HookKind,
        hook: &crate::environment::HookConfig,
    ) -> Result<crate::deploy::release::HookRun> {
        self.front.run_hook(release, kind, hook).await
    }

    async fn servers_of(&self, release: &str) -> Result<Vec<String>> {
        let rows = self.rows().await?;
        Ok(self
            .all_tasks()
            .await?
            .into_iter()
            .filter(|t| t.release == release && (t.wanted() || t.running()))
            .filter_map(|t| Some(router::slot_row(&rows, t.addr)?.name.clone()))
            .collect())
    }

    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        self.planned_spec(release).await
    }
}
