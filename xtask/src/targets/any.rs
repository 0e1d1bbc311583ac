//! The one place that looks at an environment's target kind: `connect`
//! returns an `AnyTarget`, which every command uses through the `Target`
//! trait without branching on the kind. (Async trait methods are not
//! dyn-safe, hence an enum; adding a target is one arm here.)
use anyhow::Result;

use super::{
    docker::DockerTarget, fleet::FleetTarget, kubernetes::KubeTarget, swarm::SwarmTarget, Caps,
    InstanceView, Observation, Split, Target,
};
use crate::{
    deploy::{
        lock::{LockInfo, LockStore, Renewal},
        records::HistoryStore,
        release::{History, Release},
    },
    environment::{Environment, TargetConfig},
    gate::{Gate, ProbeResult},
    progress::Step,
};

// One value per command, never in a collection: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyTarget {
    Docker(DockerTarget),
    /// A Docker target over several hosts (`target.hosts`).
    Fleet(FleetTarget),
    Swarm(SwarmTarget),
    Kubernetes(KubeTarget),
}

/// Connects to the environment's target; `context` overrides a Kubernetes target's kubeconfig context.
pub async fn connect(env: &Environment, context: Option<&str>) -> Result<AnyTarget> {
    Ok(match &env.file.target {
        TargetConfig::Docker(d) if !d.hosts.is_empty() => {
            AnyTarget::Fleet(FleetTarget::connect(env).await?)
        }
        TargetConfig::Docker(_) => AnyTarget::Docker(DockerTarget::connect(env).await?),
        TargetConfig::Swarm(_) => AnyTarget::Swarm(SwarmTarget::connect(env).await?),
        TargetConfig::Kubernetes(_) => {
            AnyTarget::Kubernetes(KubeTarget::connect(env, context).await?)
        }
    })
}

macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            AnyTarget::Docker($t) => $e,
            AnyTarget::Fleet($t) => $e,
            AnyTarget::Swarm($t) => $e,
            AnyTarget::Kubernetes($t) => $e,
        }
    };
}

impl AnyTarget {
    /// The Docker engine behind the target, where there is one (to build an image into).
    pub fn docker(&self) -> Option<&bollard::Docker> {
        match self {
            AnyTarget::Docker(t) => Some(t.docker()),
            AnyTarget::Fleet(t) => Some(t.members()[0].target.docker()),
            AnyTarget::Swarm(t) => Some(t.docker()),
            AnyTarget::Kubernetes(_) => None,
        }
    }
}

impl LockStore for AnyTarget {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>> {
        each!(self, t => t.lock_create(info).await)
    }
    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        each!(self, t => t.lock_read().await)
    }
    async fn lock_remove(&self, token: &str) -> Result<()> {
        each!(self, t => t.lock_remove(token).await)
    }
    async fn lock_renew(&self, token: &str, at: i64) -> Result<Renewal> {
        each!(self, t => t.lock_renew(token, at).await)
    }
}

impl HistoryStore for AnyTarget {
    async fn read_history(&self) -> Result<History> {
        each!(self, t => t.read_history().await)
    }
    async fn write_history(&self, history: &History) -> Result<()> {
        each!(self, t => t.write_history(history).await)
    }
}

impl Target for AnyTarget {
    fn caps(&self) -> Caps {
        each!(self, t => t.caps())
    }
    fn public_url(&self) -> String {
        each!(self, t => t.public_url())
    }
    fn public_urls(&self) -> Vec<String> {
        each!(self, t => t.public_urls())
    }
    fn public_client(&self) -> Result<reqwest::Client> {
        each!(self, t => t.public_client())
    }
    async fn admit(&self, release: &mut Release) -> Result<()> {
        each!(self, t => t.admit(release).await)
    }
    async fn prepare(&self, release: &Release) -> Result<()> {
        each!(self, t => t.prepare(release).await)
    }
    async fn start(&self, release: &Release, count: usize) -> Result<()> {
        each!(self, t => t.start(release, count).await)
    }
    async fn replace(&self, release: &Release) -> Result<()> {
        each!(self, t => t.replace(release).await)
    }
    async fn observe(&self, release: &Release) -> Result<Observation> {
        each!(self, t => t.observe(release).await)
    }
    async fn follow(&self, release: &Release, ready: &[String]) -> Result<()> {
        each!(self, t => t.follow(release, ready).await)
    }
    async fn shift(&self, split: &Split) -> Result<()> {
        each!(self, t => t.shift(split).await)
    }
    async fn split(&self) -> Result<Split> {
        each!(self, t => t.split().await)
    }
    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        each!(self, t => t.undo(to, gate, step).await)
    }
    async fn retire(&self, release: &str, keep: usize) -> Result<()> {
        each!(self, t => t.retire(release, keep).await)
    }
    async fn logs(&self, release: &Release, instance: Option<&str>, lines: usize) -> String {
        each!(self, t => t.logs(release, instance, lines).await)
    }
    async fn instances(&self) -> Result<Vec<InstanceView>> {
        each!(self, t => t.instances().await)
    }
    async fn probes(
        &self,
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<(String, ProbeResult)>> {
        each!(self, t => t.probes(path, timeout).await)
    }
    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        each!(self, t => t.repair().await)
    }
    async fn stop_all(&self) -> Result<()> {
        each!(self, t => t.stop_all().await)
    }
    async fn prune(
        &self,
        kept: &[Release],
        dry_run: bool,
    ) -> Result<Option<super::docker::Pruned>> {
        each!(self, t => t.prune(kept, dry_run).await)
    }
    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        each!(self, t => t.plan(release).await)
    }
    async fn image_ran(&self, release: &Release) -> Result<Option<String>> {
        each!(self, t => t.image_ran(release).await)
    }
    async fn servers_of(&self, release: &str) -> Result<Vec<String>> {
        each!(self, t => t.servers_of(release).await)
    }
    async fn run_hook(
        &self,
        release: &Release,
        kind: crate::environment::HookKind,
        hook: &crate::environment::HookConfig,
    ) -> Result<crate::deploy::release::HookRun> {
        each!(self, t => t.run_hook(release, kind, hook).await)
    }
}
