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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub kind: TargetKind,
    /// Docker engine address; default: the engine `cargo xtask engine start` recorded, or DOCKER_HOST.
    pub host: Option<String>,
    /// Kubernetes: the kustomize directory rendered and applied, relative to the workspace root.
    pub overlay: Option<PathBuf>,
    /// Kubernetes: where the Deployment, the lock Lease and the history ConfigMap live.
    pub namespace: Option<String>,
    /// Kubernetes: the kubeconfig context (default: the current one, or in-cluster); `--context` overrides it.
    pub context: Option<String>,
    /// Kubernetes: the Deployment (from the overlay) whose image each release sets.
    pub deployment: Option<String>,
    /// Kubernetes: the Service in front of the Deployment.
    pub service: Option<String>,
    /// Kubernetes: a URL that reaches the Service from the deploying machine; when set, it is
    /// probed after the rollout (the HTTP gate), and a failure rolls the release back.
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
}

fn default_keep() -> usize {
    5
}

fn default_lock_ttl() -> u64 {
    900
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// NAME = "env:VARIABLE" or "file:/path": resolved on the deploying machine at deploy time.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
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
    /// Docker targets only: the balancer in front of the instances.
    pub balancer: Option<BalancerConfig>,
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
    parse(&path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Environment> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("{}: the environment name `{name}` (the file name) must be lowercase letters, digits and -", path.display());
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

impl Environment {
    fn field_error(&self, field: &str, value: impl std::fmt::Display, fix: &str) -> anyhow::Error {
        anyhow::anyhow!("{}: {field} = {value}: {fix}", self.path.display())
    }

    fn validate(&self) -> Result<()> {
        let f = &self.file;
        match f.target.kind {
            TargetKind::Docker => self.validate_docker()?,
            TargetKind::Kubernetes => {
                self.kube()?;
            }
            TargetKind::Swarm => bail!(self.field_error(
                "target.kind",
                "\"swarm\"",
                "not implemented; use \"docker\" or \"kubernetes\""
            )),
        }
        if f.deploy.replicas == 0 || f.deploy.replicas > 50 {
            bail!(self.field_error(
                "deploy.replicas",
                f.deploy.replicas,
                "must be between 1 and 50"
            ));
        }
        if f.deploy.keep_releases < 2 {
            bail!(self.field_error(
                "deploy.keep_releases",
                f.deploy.keep_releases,
                "must be at least 2, or there is nothing to roll back to"
            ));
        }
        if f.deploy.lock_ttl_seconds < 60 {
            bail!(self.field_error(
                "deploy.lock_ttl_seconds",
                f.deploy.lock_ttl_seconds,
                "must be at least 60"
            ));
        }
        let h = &f.health;
        if !h.path.starts_with('/') {
            bail!(self.field_error("health.path", &h.path, "must start with /"));
        }
        if h.interval_ms < 10 || h.timeout_ms == 0 {
            bail!(self.field_error(
                "health.interval_ms",
                h.interval_ms,
                "interval_ms must be at least 10 and timeout_ms above 0"
            ));
        }
        if h.success_threshold == 0 || h.failure_threshold == 0 {
            bail!(self.field_error(
                "health.success_threshold",
                h.success_threshold,
                "both thresholds must be at least 1"
            ));
        }
        if h.deadline_seconds == 0 {
            bail!(self.field_error("health.deadline_seconds", 0, "must be above 0"));
        }
        for (field, v) in [
            ("health.drain_seconds", h.drain_seconds),
            ("health.verify_seconds", h.verify_seconds),
        ] {
            if !(0.0..=600.0).contains(&v) {
                bail!(self.field_error(field, v, "must be between 0 and 600"));
            }
        }
        if !crate::image::is_valid_repo(&f.image.repo) {
            bail!(self.field_error(
                "image.repo",
                &f.image.repo,
                "must be a lowercase repository name such as \"xtask-app\""
            ));
        }
        for (name, reference) in &f.app.secrets {
            if !(reference.starts_with("env:") || reference.starts_with("file:")) {
                bail!(self.field_error(
                    &format!("app.secrets.{name}"),
                    format!("{reference:?}"),
                    "must be \"env:VARIABLE\" or \"file:/path\""
                ));
            }
        }
        for name in f.app.env.keys().chain(f.app.secrets.keys()) {
            if crate::release::PLATFORM_ENV.contains(&name.as_str()) {
                bail!(self.field_error(
                    &format!("app.env.{name}"),
                    "…",
                    "is set by the deploy engine; remove it"
                ));
            }
        }
        Ok(())
    }

    fn validate_docker(&self) -> Result<()> {
        let t = &self.file.target;
        for (field, set) in [
            ("target.overlay", t.overlay.is_some()),
            ("target.namespace", t.namespace.is_some()),
            ("target.context", t.context.is_some()),
            ("target.deployment", t.deployment.is_some()),
            ("target.service", t.service.is_some()),
            ("target.public_url", t.public_url.is_some()),
        ] {
            if set {
                bail!(self.field_error(field, "…", "is for kind = \"kubernetes\"; remove it"));
            }
        }
        let Some(b) = &self.file.balancer else {
            bail!(
                "{}: [balancer] is missing: a docker target needs https_port and http_port",
                self.path.display()
            );
        };
        if b.https_port == 0 || b.http_port == 0 || b.https_port == b.http_port {
            bail!(self.field_error(
                "balancer.https_port",
                b.https_port,
                "https_port and http_port must be two different ports above 0"
            ));
        }
        if b.api_rate == 0 {
            bail!(self.field_error("balancer.api_rate", 0, "must be above 0"));
        }
        Ok(())
    }

    /// The Kubernetes settings, each required one present and well-formed.
    pub fn kube(&self) -> Result<KubeSettings> {
        let t = &self.file.target;
        let missing = |field: &str, example: &str| {
            anyhow::anyhow!(
                "{}: target.{field} is missing: a kubernetes target needs it (e.g. {field} = {example})",
                self.path.display()
            )
        };
        if t.host.is_some() {
            bail!(self.field_error("target.host", "…", "is for kind = \"docker\"; remove it"));
        }
        if self.file.balancer.is_some() {
            bail!(
                "{}: [balancer] is for kind = \"docker\"; a kubernetes target is reached through its Service (set target.public_url for the HTTP gate)",
                self.path.display()
            );
        }
        if !self.file.app.secrets.is_empty() {
            bail!(self.field_error(
                "app.secrets",
                "…",
                "is not supported on kubernetes: put secrets in a Kubernetes Secret referenced by the overlay (see infrastructure/kubernetes/base/secret.template.yaml)"
            ));
        }
        let overlay = t
            .overlay
            .clone()
            .ok_or_else(|| missing("overlay", "\"infrastructure/kubernetes/overlays/staging\""))?;
        let namespace = t
            .namespace
            .clone()
            .ok_or_else(|| missing("namespace", "\"app-staging\""))?;
        let deployment = t
            .deployment
            .clone()
            .ok_or_else(|| missing("deployment", "\"app\""))?;
        let service = t
            .service
            .clone()
            .ok_or_else(|| missing("service", "\"app\""))?;
        for (field, value) in [
            ("target.namespace", &namespace),
            ("target.deployment", &deployment),
            ("target.service", &service),
        ] {
            let ok = !value.is_empty()
                && value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !value.starts_with('-')
                && !value.ends_with('-');
            if !ok {
                bail!(self.field_error(
                    field,
                    format!("{value:?}"),
                    "must be a Kubernetes name: lowercase letters, digits and -, at most 63"
                ));
            }
        }
        if let Some(url) = &t.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!(self.field_error(
                    "target.public_url",
                    format!("{url:?}"),
                    "must start with http:// or https://"
                ));
            }
        }
        Ok(KubeSettings {
            overlay: if overlay.is_absolute() {
                overlay
            } else {
                workspace::root().join(overlay)
            },
            namespace,
            context: t.context.clone(),
            deployment,
            service,
            public_url: t.public_url.clone(),
        })
    }

    /// Docker targets only (`validate` made sure the section is there).
    pub fn balancer(&self) -> &BalancerConfig {
        self.file
            .balancer
            .as_ref()
            .expect("validated: docker targets have [balancer]")
    }

    pub fn public_url(&self) -> String {
        match &self.file.balancer {
            Some(b) => format!("https://127.0.0.1:{}", b.https_port),
            None => self.file.target.public_url.clone().unwrap_or_default(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[target]
kind = "docker"
[image]
repo = "xtask-app"
[deploy]
replicas = 3
strategy = "rolling"
[health]
interval_ms = 200
timeout_ms = 1000
success_threshold = 2
failure_threshold = 3
deadline_seconds = 60
drain_seconds = 1
verify_seconds = 2
[balancer]
https_port = 18443
http_port = 18080
"#;

    fn parse_str(text: &str) -> Result<Environment> {
        parse(Path::new("infrastructure/environments/dev.toml"), text)
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let env = parse_str(GOOD).unwrap();
        assert_eq!(env.name, "dev");
        assert_eq!(env.file.deploy.keep_releases, 5);
        assert_eq!(env.file.health.path, "/ready");
        assert_eq!(env.public_url(), "https://127.0.0.1:18443");
    }

    #[test]
    fn unknown_and_missing_fields_name_the_file_and_field() {
        let err = parse_str(&GOOD.replace("replicas = 3", "replica = 3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dev.toml") && err.contains("replica"), "{err}");
        let err = parse_str(&GOOD.replace("timeout_ms = 1000\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev.toml") && err.contains("timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field_and_the_fix() {
        let err = parse_str(&GOOD.replace("replicas = 3", "replicas = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev.toml: deploy.replicas = 0: must be between 1 and 50"),
            "{err}"
        );
        let err = parse_str(&GOOD.replace("\"rolling\"", "\"canary\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("canary") && err.contains("strategy"), "{err}");
        let err = parse_str(&GOOD.replace("[health]", "[app.env]\nBIND = \"1\"\n[health]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("app.env.BIND"), "{err}");
    }

    const KUBE: &str = r#"
[target]
kind = "kubernetes"
overlay = "infrastructure/kubernetes/overlays/staging"
namespace = "app-staging"
deployment = "app"
service = "app"
[image]
repo = "xtask-app"
[deploy]
replicas = 2
strategy = "rolling"
[health]
interval_ms = 200
timeout_ms = 1000
success_threshold = 2
failure_threshold = 3
deadline_seconds = 60
drain_seconds = 1
verify_seconds = 2
"#;

    #[test]
    fn a_kubernetes_target_needs_its_fields_and_no_balancer() {
        let env = parse_str(KUBE).unwrap();
        let kube = env.kube().unwrap();
        assert!(kube.overlay.is_absolute());
        assert_eq!(kube.namespace, "app-staging");
        assert_eq!(env.public_url(), "", "no public_url: no HTTP gate");
        let err = parse_str(&KUBE.replace("namespace = \"app-staging\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev.toml: target.namespace is missing"),
            "{err}"
        );
        let err = parse_str(&KUBE.replace("deployment = \"app\"", "deployment = \"App_1\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("target.deployment = \"App_1\""), "{err}");
        let err = parse_str(&format!(
            "{KUBE}[balancer]\nhttps_port = 1\nhttp_port = 2\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("[balancer] is for kind = \"docker\""), "{err}");
        let err = parse_str(&format!("{KUBE}[app.secrets]\nDB = \"env:X\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("app.secrets") && err.contains("Secret"),
            "{err}"
        );
    }

    #[test]
    fn a_docker_target_refuses_kubernetes_fields_and_needs_a_balancer() {
        let err =
            parse_str(&GOOD.replace("kind = \"docker\"", "kind = \"docker\"\nnamespace = \"x\""))
                .unwrap_err()
                .to_string();
        assert!(err.contains("target.namespace"), "{err}");
        let without = &GOOD[..GOOD.find("[balancer]").unwrap()];
        let err = parse_str(without).unwrap_err().to_string();
        assert!(err.contains("[balancer] is missing"), "{err}");
    }

    #[test]
    fn every_shipped_environment_file_parses() {
        let dir = workspace::root().join("infrastructure/environments");
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let env = parse(&path, &std::fs::read_to_string(&path).unwrap())
                    .unwrap_or_else(|e| panic!("{e:#}"));
                kinds.push(env.file.target.kind);
            }
        }
        assert!(kinds.contains(&TargetKind::Docker) && kinds.contains(&TargetKind::Kubernetes));
    }

    #[test]
    fn selectors_are_names_or_paths() {
        assert!(resolve_path("staging").ends_with("infrastructure/environments/staging.toml"));
        assert_eq!(resolve_path("/tmp/x.toml"), PathBuf::from("/tmp/x.toml"));
    }
}
