//! The Docker target: instances are containers on one engine (see
//! `instances`), attached to the environment's network `<scope>-net`; the
//! public endpoint is the HAProxy balancer container `<scope>-balancer` on
//! the same network (see `crate::haproxy`), whose server slots point at the
//! instances' addresses. Traffic is the slots' weights (see `traffic`), set
//! and read through `docker exec`, so everything goes through the Docker API
//! and any HTTP image works. The history and lock are named volumes in the
//! same engine (see `records`). It moves traffic itself, so it has no
//! native rollout and undoes by converging with the shared code.
//!
//! `tls` keeps the balancer's certificate, `balancer` its container and
//! slots, `target` implements `Target` over them.
mod balancer;
mod hook;
pub(crate) use balancer::{check_of, slot_of};
mod instances;
mod prune;
mod records;
mod repair;
mod reslot;
mod secrets;
mod target;
mod tls;
pub(crate) mod traffic;

use std::{net::IpAddr, path::PathBuf};

use anyhow::Result;
use bollard::Docker;
use futures_util::future::join_all;

pub use instances::Instance;
use instances::{list_scoped, remove_forced};
pub use prune::{prune_images, Pruned};
pub use tls::{client_trusting, runtime_root};

use super::InstanceState;
use crate::{
    deploy::records::Ledger,
    engine,
    environment::{BalancerConfig, Environment, HealthConfig},
    haproxy,
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
    /// The container port the instance listens on.
    pub const PORT: &str = "xtask.port";
}

/// The swarm target's tasks create their socket in a mounted folder as this user.
pub(crate) const APP_UID: u32 = 65532;
/// Server slots in the balancer: blue-green runs two releases side by side
/// (deploy.replicas is at most 50), plus a rolling surge.
const MAX_SERVERS: u16 = 128;

pub struct DockerTarget {
    docker: Docker,
    /// `<app>--<env>`: prefixes every container and record of this environment.
    scope: String,
    app: String,
    /// image.repo: the images `prune` may remove.
    repo: String,
    env_name: String,
    drain_seconds: f64,
    health: HealthConfig,
    app_port: u16,
    network: String,
    balancer_config: BalancerConfig,
    /// The balancer's certificate and key live here, so every later command
    /// on this machine (status, the tests' clients) trusts the same one.
    runtime_dir: PathBuf,
    public_url: String,
    /// What the balancer's certificate names (the public URL's host).
    public_host: String,
    ledger: Ledger<records::VolumeStore>,
    /// The balancer's runtime-API session, shared by every handle this
    /// target opens (see `haproxy::session`).
    session: haproxy::session::Shared,
    /// A balancer on a swarm worker, joining the manager's overlay (see
    /// `SwarmTarget`): it runs no instance and makes no network.
    on_swarm_node: bool,
    /// Names of instances whose create was sent and not yet answered: a run
    /// interrupted there (Ctrl-C drops the call) may still get the
    /// container from the engine after its undo looked (see `settle`).
    creating: std::sync::Mutex<Vec<String>>,
}

/// Where one Docker target runs: its engine, the address its balancer
/// publishes on there, and the name the public URL (and the balancer's
/// certificate) gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// None: the engine `engine start` recorded, or DOCKER_HOST.
    pub engine: Option<String>,
    pub publish: IpAddr,
    pub public_host: String,
}

impl Placement {
    /// `[balancer] publish_address` when set; else a remote engine's own
    /// address (an IP is published on, a name on every address of that
    /// host), else loopback: a balancer on this machine.
    pub fn of(env: &Environment, engine: Option<&str>) -> Result<Placement> {
        let configured = env.balancer().publish_address;
        let remote = engine.filter(|e| !e.starts_with("unix://"));
        let (publish, public_host) = match (configured, remote) {
            (Some(address), _) => (address, address.to_string()),
            (None, Some(engine)) => {
                let host = crate::ssh::host_of(engine)?;
                match host.parse::<IpAddr>() {
                    Ok(ip) => (ip, host),
                    Err(_) => (IpAddr::from([0, 0, 0, 0]), host),
                }
            }
            (None, None) => (IpAddr::from([127, 0, 0, 1]), "127.0.0.1".to_owned()),
        };
        Ok(Placement {
            engine: engine.map(str::to_owned),
            publish,
            public_host,
        })
    }

    pub fn public_url(&self, https_port: u16) -> String {
        if self.public_host.contains(':') {
            format!("https://[{}]:{https_port}", self.public_host)
        } else {
            format!("https://{}:{https_port}", self.public_host)
        }
    }
}

impl DockerTarget {
    pub async fn connect(env: &Environment) -> Result<DockerTarget> {
        DockerTarget::connect_at(env, Placement::of(env, env.engine_host())?).await
    }

    /// The environment's target on one engine; a fleet makes one per host,
    /// each with its own balancer and its own folder on this machine.
    pub async fn connect_at(env: &Environment, placement: Placement) -> Result<DockerTarget> {
        let docker = match &placement.engine {
            Some(host) => engine::connect(host).await?,
            None => engine::require().await?.0,
        };
        let app = env.app_name();
        let scope = env.scope();
        let folder = match placement
            .engine
            .as_deref()
            .filter(|_| !env.engine_hosts().is_empty() || !env.balancer_nodes().is_empty())
        {
            Some(host) => format!(
                "{scope}@{}",
                crate::ssh::host_of(host).unwrap_or_else(|_| host.replace('/', "_"))
            ),
            None => scope.clone(),
        };
        let runtime_dir = crate::private_dir::ensure(&runtime_root())?.join(folder);
        let mut balancer_config = env.balancer().clone();
        balancer_config.publish_address = Some(placement.publish);
        let target = DockerTarget {
            ledger: Ledger::new(records::VolumeStore {
                docker: docker.clone(),
                scope: scope.clone(),
            }),
            docker,
            network: format!("{scope}-net"),
            balancer_config,
            runtime_dir,
            scope,
            app,
            repo: env.file.image.repo.clone(),
            env_name: env.name.clone(),
            drain_seconds: env.file.health.drain_seconds,
            health: env.file.health.clone(),
            app_port: env.file.app.port,
            public_url: placement.public_url(env.balancer().https_port),
            public_host: placement.public_host,
            session: Default::default(),
            on_swarm_node: false,
            creating: Default::default(),
        };
        target.adopt_served_pem().await?;
        Ok(target)
    }

    /// This target as the balancer of a swarm node other than the manager.
    pub fn on_swarm_node(mut self) -> DockerTarget {
        self.on_swarm_node = true;
        self
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// This machine's folder for the environment (the balancer's certificate).
    pub fn runtime_dir(&self) -> &std::path::Path {
        &self.runtime_dir
    }

    /// Removes every trace of the environment: instances, the balancer and
    /// its network, history and lock records, the TLS folder. For throwaway
    /// environments (tests, benchmarks), never for real ones.
    pub async fn destroy(&self) -> Result<()> {
        for c in list_scoped(&self.docker, &self.scope, None).await? {
            remove_forced(&self.docker, &c.id.unwrap_or_default()).await?;
        }
        haproxy::engine::remove_network(&self.docker, &self.network).await?;
        self.ledger.remove_all().await?;
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        Ok(())
    }

    pub(super) async fn running(&self) -> Result<Vec<(Instance, InstanceState)>> {
        self.running_of(None).await
    }

    /// `running`, of one release only (the others are not inspected).
    pub(super) async fn running_of(
        &self,
        release: Option<&str>,
    ) -> Result<Vec<(Instance, InstanceState)>> {
        let mut containers = self.containers().await?;
        containers.retain(|c| release.is_none_or(|r| c.release == r));
        let states = join_all(containers.iter().map(|c| self.instance_state(c))).await;
        containers
            .into_iter()
            .zip(states)
            .map(|(c, s)| Ok((c, s?)))
            .collect()
    }
}

crate::deploy::records::ledger_records!(DockerTarget);
