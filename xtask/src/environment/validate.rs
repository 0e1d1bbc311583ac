//! The checks every environment file passes before anything runs, per
//! target kind, and the accessors that rely on them having passed.
use anyhow::{bail, Result};

use super::*;

impl Environment {
    pub(super) fn field_error(
        &self,
        field: &str,
        value: impl std::fmt::Display,
        fix: &str,
    ) -> anyhow::Error {
        anyhow::anyhow!("{}: {field} = {value}: {fix}", self.path.display())
    }

    pub(super) fn validate(&self) -> Result<()> {
        let f = &self.file;
        match f.target {
            TargetConfig::Docker(_) => self.validate_docker()?,
            TargetConfig::Kubernetes(_) => {
                self.kube()?;
            }
            TargetConfig::Swarm(_) => self.validate_swarm()?,
        }
        self.validate_canary()?;
        self.validate_backup()?;
        if f.swarm.is_some() && f.target.kind() != TargetKind::Swarm {
            bail!(
                "{}: [swarm] is for kind = \"swarm\"; remove it",
                self.path.display()
            );
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
        if f.deploy.surge == 0 {
            bail!(self.field_error(
                "deploy.surge",
                0,
                "must be at least 1 (new instances started at once during a rolling deploy)"
            ));
        }
        if f.deploy.lock_ttl_seconds < 60 || f.deploy.lock_ttl_seconds > 86_400 {
            bail!(self.field_error(
                "deploy.lock_ttl_seconds",
                f.deploy.lock_ttl_seconds,
                "must be between 60 and 86400 (a day)"
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
        if self.app_name().contains("--") {
            bail!(self.field_error(
                "image.repo",
                &f.image.repo,
                "its last part must not contain `--`: it separates app and environment in container and record names"
            ));
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
            if crate::deploy::release::PLATFORM_ENV.contains(&name.as_str()) {
                bail!(self.field_error(
                    &format!("app.env.{name}"),
                    "…",
                    "is set by the deploy engine; remove it"
                ));
            }
        }
        Ok(())
    }

    fn validate_swarm(&self) -> Result<()> {
        self.validate_docker()?;
        let s = self.file.swarm.clone().unwrap_or_default();
        if s.cpus.is_some_and(|c| !(c > 0.0 && c <= 256.0)) {
            bail!(self.field_error(
                "swarm.cpus",
                s.cpus.unwrap_or_default(),
                "must be above 0 (cores, e.g. 0.5)"
            ));
        }
        if s.memory_mb.is_some_and(|m| m < 6) {
            bail!(self.field_error(
                "swarm.memory_mb",
                s.memory_mb.unwrap_or_default(),
                "must be at least 6 (MiB; the engine refuses less)"
            ));
        }
        for (field, v) in [
            ("swarm.update_delay_seconds", s.update_delay_seconds),
            ("swarm.monitor_seconds", s.monitor_seconds),
        ] {
            if !(0.0..=600.0).contains(&v) {
                bail!(self.field_error(field, v, "must be between 0 and 600"));
            }
        }
        if s.healthcheck_interval_ms < 100 {
            bail!(self.field_error(
                "swarm.healthcheck_interval_ms",
                s.healthcheck_interval_ms,
                "must be at least 100"
            ));
        }
        Ok(())
    }

    /// The `[swarm]` settings, defaults filled in.
    pub fn swarm(&self) -> SwarmConfig {
        self.file.swarm.clone().unwrap_or_default()
    }

    fn validate_docker(&self) -> Result<()> {
        let Some(b) = &self.file.balancer else {
            bail!(
                "{}: [balancer] is missing: a {} target needs https_port and http_port",
                self.path.display(),
                format!("{:?}", self.file.target.kind()).to_lowercase()
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
        if let Some(port) = b.metrics_port {
            if port == 0 || port == b.https_port || port == b.http_port {
                bail!(self.field_error(
                    "balancer.metrics_port",
                    port,
                    "must be above 0 and differ from https_port and http_port (leave it out for a port the engine picks)"
                ));
            }
        }
        if self.file.app.port == 0 {
            bail!(self.field_error(
                "app.port",
                0,
                "must be 1 to 65535: the port the image listens on in its container"
            ));
        }
        Ok(())
    }

    /// The Kubernetes settings, each required one present and well-formed.
    pub fn kube(&self) -> Result<KubeSettings> {
        let TargetConfig::Kubernetes(t) = &self.file.target else {
            bail!(
                "{}: target.kind is {:?}, not kubernetes",
                self.path.display(),
                self.file.target.kind()
            );
        };
        let missing = |field: &str, example: &str| {
            anyhow::anyhow!(
                "{}: target.{field} is missing: a kubernetes target needs it (e.g. {field} = {example})",
                self.path.display()
            )
        };
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

    /// Docker and swarm: the engine address, when the file names one.
    pub fn engine_host(&self) -> Option<&str> {
        match &self.file.target {
            TargetConfig::Docker(e) | TargetConfig::Swarm(e) => e.host.as_deref(),
            TargetConfig::Kubernetes(_) => None,
        }
    }

    /// Docker targets only (`validate` made sure the section is there).
    pub fn balancer(&self) -> &BalancerConfig {
        self.file
            .balancer
            .as_ref()
            .expect("validated: docker targets have [balancer]")
    }

    /// `<app>--<env>`: names every container, service and record of the
    /// environment. Neither part may hold `--` (validated), so two
    /// environments never share a scope (`a-b` + `c` and `a` + `b-c` did, with one dash).
    pub fn scope(&self) -> String {
        format!("{}--{}", self.app_name(), self.name)
    }

    /// The last part of image.repo: names the app's containers, services and records.
    pub fn app_name(&self) -> String {
        self.file
            .image
            .repo
            .rsplit('/')
            .next()
            .unwrap_or("app")
            .to_owned()
    }

    pub fn public_url(&self) -> String {
        match &self.file.balancer {
            Some(b) => format!("https://127.0.0.1:{}", b.https_port),
            None => match &self.file.target {
                TargetConfig::Kubernetes(k) => k.public_url.clone().unwrap_or_default(),
                _ => String::new(),
            },
        }
    }
}
