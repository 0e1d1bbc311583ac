//! `infrastructure/environments/<name>.toml`: where and how an environment
//! runs. Parsed strictly: an unknown field, a missing one or a bad value is
//! an error naming the file, the field and the fix.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Docker,
    Swarm,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Rolling,
    BlueGreen,
    /// Steps of weighted traffic with a Prometheus analysis between them (`[canary]`).
    Canary,
}

/// `[target]`, tagged by `kind`: one struct per kind, so a field of another
/// kind is an unknown field, named as such.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetConfig {
    Docker(EngineTargetConfig),
    Swarm(EngineTargetConfig),
    Kubernetes(KubeTargetConfig),
}

impl TargetConfig {
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetConfig::Docker(_) => TargetKind::Docker,
            TargetConfig::Swarm(_) => TargetKind::Swarm,
            TargetConfig::Kubernetes(_) => TargetKind::Kubernetes,
        }
    }
}

/// Docker and swarm: the engine (a manager, for swarm) the deploy talks to.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineTargetConfig {
    /// Docker engine address; default: the engine `cargo xtask engine start` recorded, or DOCKER_HOST.
    pub host: Option<String>,
    /// Docker targets: several hosts (`ssh://user@host[:port]`, `unix://`,
    /// `tcp://` with TLS), each with its own balancer and `deploy.replicas`
    /// instances. The first one keeps the lock and history (see docs/FLEET.md).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Swarm: the engines of other nodes that run a balancer too, so
    /// clients that reach those nodes are served there (the manager in
    /// `host` always runs one). Each reaches the tasks over the overlay.
    #[serde(default)]
    pub balancer_nodes: Vec<String>,
}

/// Kubernetes: checked by `Environment::kube`, which names a missing field with an example.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeTargetConfig {
    /// The kustomize directory rendered and applied, relative to the workspace root.
    pub overlay: Option<PathBuf>,
    /// Where the Deployment, the lock Lease and the history ConfigMap live.
    pub namespace: Option<String>,
    /// The kubeconfig context (default: the current one, or in-cluster); `--context` overrides it.
    pub context: Option<String>,
    /// The Deployment (from the overlay) whose image each release sets.
    pub deployment: Option<String>,
    /// The Service in front of the Deployment.
    pub service: Option<String>,
    /// A URL that reaches the Service from the deploying machine; when set, it is
    /// verified after the rollout, and a failure rolls the release back.
    pub public_url: Option<String>,
}

/// The settings of a `kind = "kubernetes"` target, all present (checked by `validate`).
#[derive(Debug, Clone)]
pub struct KubeSettings {
    pub overlay: PathBuf,
    pub namespace: String,
    pub context: Option<String>,
    pub deployment: String,
    pub service: String,
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub repo: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    pub replicas: usize,
    pub strategy: Strategy,
    #[serde(default = "default_keep")]
    pub keep_releases: usize,
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl_seconds: u64,
    /// Rolling: how many new instances start (and are gated) at once, beside
    /// the ones serving. More is faster and needs more spare capacity.
    #[serde(default = "default_surge")]
    pub surge: usize,
    /// After each successful deploy, remove the images of releases no
    /// longer kept in history (`cargo xtask prune` does it by hand).
    #[serde(default = "default_prune")]
    pub prune: bool,
}

fn default_prune() -> bool {
    true
}

fn default_surge() -> usize {
    1
}

fn default_keep() -> usize {
    5
}

fn default_lock_ttl() -> u64 {
    900
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// NAME = "env:VARIABLE" or "file:/path": resolved on the deploying machine at deploy time.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Docker target: the port the image listens on inside its container
    /// (passed to it as PORT); the balancer reaches it there on the network.
    #[serde(default = "default_app_port")]
    pub port: u16,
    /// Test environments only: allows the app's fault knobs (`FAULT_VARIABLES`).
    #[serde(default)]
    pub debug_knobs: bool,
}

fn default_app_port() -> u16 {
    8080
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            port: default_app_port(),
            debug_knobs: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_path")]
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    #[serde(default)]
    pub initial_delay_ms: u64,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    pub deadline_seconds: u64,
    /// The app's DRAIN_SECONDS: how long an instance keeps serving after SIGTERM.
    pub drain_seconds: f64,
    /// After traffic moves, the public URL is watched this long before the old release goes.
    pub verify_seconds: f64,
    /// Real routes probed on the public URL with `path` in each round of the
    /// verification window: a release whose health answers but whose API
    /// answers 500 must not stay. GET only, so a read-only route.
    #[serde(default)]
    pub verify_paths: Vec<String>,
}

fn default_path() -> String {
    "/ready".into()
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline_seconds)
    }
    pub fn verify(&self) -> Duration {
        Duration::from_secs_f64(self.verify_seconds)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    /// HTTPS port of the public URL, on 127.0.0.1.
    pub https_port: u16,
    /// Plain HTTP port that redirects to HTTPS.
    pub http_port: u16,
    /// Per-client request budget for the API (requests per second).
    #[serde(default = "default_api_rate")]
    pub api_rate: u32,
    /// Docker target: the balancer's Prometheus exporter on 127.0.0.1 (none: a port the engine picks).
    pub metrics_port: Option<u16>,
    /// The address the balancer's ports are published on, on its host, and
    /// the public URL's host (default 127.0.0.1: used from that host only).
    /// A remote host's balancer needs that host's address.
    pub publish_address: Option<std::net::IpAddr>,
}

impl BalancerConfig {
    pub fn publish_address(&self) -> std::net::IpAddr {
        self.publish_address.unwrap_or([127, 0, 0, 1].into())
    }
}

fn default_api_rate() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    pub target: TargetConfig,
    pub image: ImageConfig,
    pub deploy: DeployConfig,
    #[serde(default)]
    pub app: AppConfig,
    pub health: HealthConfig,
    /// Docker and swarm targets: the balancer in front of the instances.
    pub balancer: Option<BalancerConfig>,
    /// Swarm targets only: how the service is updated and limited.
    pub swarm: Option<SwarmConfig>,
    /// `strategy = "canary"` only: steps and analysis.
    pub canary: Option<CanaryConfig>,
    /// `cargo xtask backup`: where the database's backups go (`docs/DATA.md`).
    pub backup: Option<BackupConfig>,
    /// Commands run once per deploy in the new image (`docs/DATA.md`).
    pub hooks: Option<HooksConfig>,
}

/// `[swarm]`: the service's update policy and limits. Everything has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// CPU limit per task, in cores (none: unlimited).
    pub cpus: Option<f64>,
    /// Memory limit per task, in MiB (none: unlimited).
    pub memory_mb: Option<u64>,
    /// Pause between two tasks of an update (swarm's update_config.delay).
    #[serde(default)]
    pub update_delay_seconds: f64,
    /// How long swarm watches each updated task for failure (update_config.monitor).
    #[serde(default = "default_monitor")]
    pub monitor_seconds: f64,
    /// The image's HEALTHCHECK runs this often; swarm replaces a task only once it is healthy.
    #[serde(default = "default_healthcheck_interval")]
    pub healthcheck_interval_ms: u64,
}

fn default_monitor() -> f64 {
    5.0
}

fn default_healthcheck_interval() -> u64 {
    1000
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            cpus: None,
            memory_mb: None,
            update_delay_seconds: 0.0,
            monitor_seconds: default_monitor(),
            healthcheck_interval_ms: default_healthcheck_interval(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub path: PathBuf,
    pub file: EnvironmentFile,
}

/// `-e NAME` -> `infrastructure/environments/NAME.toml`; a value with `/` or ending in `.toml` is a path.
pub fn resolve_path(selector: &str) -> PathBuf {
    if selector.contains('/') || selector.ends_with(".toml") {
        PathBuf::from(selector)
    } else {
        workspace::root()
            .join("infrastructure/environments")
            .join(format!("{selector}.toml"))
    }
}

pub fn load(selector: &str) -> Result<Environment> {
    let path = resolve_path(selector);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("-e {selector}: cannot read {} (environments live in infrastructure/environments/NAME.toml)", path.display())
    })?;
    let mut env = parse(&path, &text)?;
    env.name = identity(&path, &env.name);
    Ok(env)
}

/// The environment's identity: its file name, unless the file is a copy
/// kept outside `infrastructure/environments/` under the name of one in
/// there. Such a copy (`-e /tmp/try/staging.toml`) gets `<name>-<hash of
/// its path>`, so it acts on its own containers and records, never on the
/// real staging's. To act on staging, use `-e staging`.
pub fn identity(path: &Path, name: &str) -> String {
    let own = workspace::root().join("infrastructure/environments");
    let (Ok(file), Ok(own)) = (path.canonicalize(), own.canonicalize()) else {
        return name.to_owned();
    };
    if file.parent() == Some(own.as_path()) || !own.join(format!("{name}.toml")).is_file() {
        return name.to_owned();
    }
    // FNV-1a: stable across runs and machines for the same path.
    let hash = file
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    format!("{name}-{:08x}", hash as u32)
}

pub fn parse(path: &Path, text: &str) -> Result<Environment> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    if name.is_empty()
        || name.contains("--")
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("{}: the environment name `{name}` (the file name) must be lowercase letters, digits and single dashes", path.display());
    }
    let file: EnvironmentFile = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let env = Environment {
        name,
        path: path.to_path_buf(),
        file,
    };
    env.validate()?;
    Ok(env)
}

/// Resolves a secret reference on the deploying machine. The value is never logged.
pub fn resolve_secret(name: &str, reference: &str) -> Result<String> {
    if let Some(variable) = reference.strip_prefix("env:") {
        std::env::var(variable).with_context(|| {
            format!("secret {name}: environment variable {variable} is not set on this machine")
        })
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches('\n').to_owned())
            .with_context(|| format!("secret {name}: cannot read {path}"))
    } else {
        bail!("secret {name}: reference must be env:VARIABLE or file:/path")
    }
}

mod backup;
mod backup_s3;
mod canary;
mod hooks;
mod validate;

pub use backup::{BackupConfig, BackupSettings, S3Config};
pub use canary::{AnalysisConfig, CanaryConfig, FAULT_VARIABLES};
pub use hooks::{HookConfig, HookKind, HooksConfig};

#[cfg(test)]
mod tests;
