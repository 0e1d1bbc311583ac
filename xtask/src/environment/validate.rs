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

    /// `value` within `lo..=hi` (NaN is not), else the file, the field and the range.
    pub(super) fn within<T>(&self, field: &str, value: T, lo: T, hi: T, note: &str) -> Result<()>
    where
        T: PartialOrd + std::fmt::Display + Copy,
    {
        if (lo..=hi).contains(&value) {
            return Ok(());
        }
        bail!(self.field_error(
            field,
            value,
            &format!("must be between {lo} and {hi}{note}")
        ))
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
        self.validate_hooks()?;
        if f.swarm.is_some() && f.target.kind() != TargetKind::Swarm {
            bail!(
                "{}: [swarm] is for kind = \"swarm\"; remove it",
                self.path.display()
            );
        }
        // Every count and duration is bounded: a huge one would overflow a
        // clock or a sum (a panic mid-deploy) or wait for ever.
        let d = &f.deploy;
        self.within("deploy.replicas", d.replicas, 1, 50, "")?;
        self.within(
            "deploy.keep_releases",
            d.keep_releases,
            2,
            1000,
            " (fewer than 2 leaves nothing to roll back to)",
        )?;
        self.within(
            "deploy.surge",
            d.surge,
            1,
            50,
            " (new instances started at once during a rolling deploy)",
        )?;
        self.within(
            "deploy.lock_ttl_seconds",
            d.lock_ttl_seconds,
            60,
            86_400,
            " (seconds: a minute to a day)",
        )?;
        let h = &f.health;
        if !h.path.starts_with('/') {
            bail!(self.field_error("health.path", &h.path, "must start with /"));
        }
        for (n, path) in h.verify_paths.iter().enumerate() {
            let field = format!("health.verify_paths[{n}]");
            if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
                bail!(self.field_error(
                    &field,
                    path,
                    "must be a path starting with / (no spaces), e.g. \"/items\""
                ));
            }
            if h.verify_paths[..n].contains(path) || *path == h.path {
                bail!(self.field_error(
                    &field,
                    path,
                    "is already probed (listed twice, or health.path): remove it"
                ));
            }
        }
        self.within("health.interval_ms", h.interval_ms, 10, 600_000, " (ms)")?;
        self.within("health.timeout_ms", h.timeout_ms, 1, 600_000, " (ms)")?;
        self.within(
            "health.initial_delay_ms",
            h.initial_delay_ms,
            0,
            3_600_000,
            " (ms)",
        )?;
        self.within("health.success_threshold", h.success_threshold, 1, 1000, "")?;
        self.within("health.failure_threshold", h.failure_threshold, 1, 1000, "")?;
        self.within(
            "health.deadline_seconds",
            h.deadline_seconds,
            1,
            86_400,
            " (seconds)",
        )?;
        self.within(
            "health.drain_seconds",
            h.drain_seconds,
            0.0,
            600.0,
            " (seconds)",
        )?;
        self.within(
            "health.verify_seconds",
            h.verify_seconds,
            0.0,
            600.0,
            " (seconds)",
        )?;
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
        if !self.engine_hosts().is_empty() {
            bail!(self.field_error(
                "target.hosts",
                format!("{:?}", self.engine_hosts()),
                "a swarm is reached through one manager: name it in target.host (its nodes come from the swarm; target.balancer_nodes runs a balancer on others)"
            ));
        }
        self.validate_engine_list("target.balancer_nodes", self.balancer_nodes())?;
        if let Some(manager) = self.engine_host() {
            if self.balancer_nodes().iter().any(|n| n == manager) {
                bail!(self.field_error(
                    "target.balancer_nodes",
                    manager,
                    "is target.host, whose balancer is always there; list the other nodes"
                ));
            }
        }
        if !self.balancer_nodes().is_empty() && self.file.deploy.strategy == Strategy::Canary {
            bail!(self.field_error(
                "deploy.strategy",
                "\"canary\"",
                "a canary with target.balancer_nodes is not built yet (its analysis reads one balancer's metrics, not every node's)"
            ));
        }
        let s = self.file.swarm.clone().unwrap_or_default();
        if let Some(cpus) = s.cpus {
            if !(cpus > 0.0 && cpus <= 256.0) {
                bail!(self.field_error(
                    "swarm.cpus",
                    cpus,
                    "must be above 0 and at most 256 (cores, e.g. 0.5)"
                ));
            }
        }
        if let Some(memory) = s.memory_mb {
            self.within(
                "swarm.memory_mb",
                memory,
                6,
                4_194_304,
                " (MiB; the engine refuses less than 6)",
            )?;
        }
        self.within(
            "swarm.update_delay_seconds",
            s.update_delay_seconds,
            0.0,
            600.0,
            " (seconds)",
        )?;
        self.within(
            "swarm.monitor_seconds",
            s.monitor_seconds,
            0.0,
            600.0,
            " (seconds)",
        )?;
        self.within(
            "swarm.healthcheck_interval_ms",
            s.healthcheck_interval_ms,
            100,
            600_000,
            " (ms)",
        )?;
        Ok(())
    }

    /// The `[swarm]` settings, defaults filled in.
    pub fn swarm(&self) -> SwarmConfig {
        self.file.swarm.clone().unwrap_or_default()
    }

    fn validate_hosts(&self) -> Result<()> {
        let hosts = self.engine_hosts();
        if hosts.is_empty() {
            return Ok(());
        }
        if self.engine_host().is_some() {
            bail!(self.field_error(
                "target.host",
                self.engine_host().unwrap_or_default(),
                "give either host (one engine) or hosts (several), not both"
            ));
        }
        self.validate_engine_list("target.hosts", hosts)?;
        if self.file.deploy.strategy == Strategy::Canary {
            bail!(self.field_error(
                "deploy.strategy",
                "\"canary\"",
                "a canary over several hosts is not built yet (its analysis would need every host's balancer scraped); use rolling or blue-green with target.hosts"
            ));
        }
        Ok(())
    }

    /// Engine addresses: each a scheme the engine client speaks, each once.
    fn validate_engine_list(&self, field: &str, engines: &[String]) -> Result<()> {
        for (i, host) in engines.iter().enumerate() {
            if !["ssh://", "unix://", "tcp://"]
                .iter()
                .any(|p| host.starts_with(p))
            {
                bail!(self.field_error(
                    &format!("{field}[{i}]"),
                    host,
                    "each is ssh://user@host[:port], unix:///path or tcp://host:port (TLS)"
                ));
            }
            if engines[..i].contains(host) {
                bail!(self.field_error(&format!("{field}[{i}]"), host, "listed twice; each once"));
            }
        }
        Ok(())
    }

    fn validate_docker(&self) -> Result<()> {
        self.validate_hosts()?;
        if !self.balancer_nodes().is_empty() && self.file.target.kind() != TargetKind::Swarm {
            bail!(self.field_error(
                "target.balancer_nodes",
                format!("{:?}", self.balancer_nodes()),
                "is for swarm targets (a balancer on other nodes of the swarm); a Docker target over several hosts uses target.hosts"
            ));
        }
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
        self.within(
            "balancer.api_rate",
            b.api_rate,
            1,
            1_000_000,
            " (requests per second per client)",
        )?;
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

    /// Swarm: the other nodes' engines that run a balancer (empty: the manager's only).
    pub fn balancer_nodes(&self) -> &[String] {
        match &self.file.target {
            TargetConfig::Docker(e) | TargetConfig::Swarm(e) => &e.balancer_nodes,
            _ => &[],
        }
    }

    /// Docker targets: the hosts of a fleet (empty: one engine, `engine_host`).
    pub fn engine_hosts(&self) -> &[String] {
        match &self.file.target {
            TargetConfig::Docker(e) | TargetConfig::Swarm(e) => &e.hosts,
            TargetConfig::Kubernetes(_) => &[],
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
            Some(b) => match b.publish_address() {
                std::net::IpAddr::V6(a) => format!("https://[{a}]:{}", b.https_port),
                a => format!("https://{a}:{}", b.https_port),
            },
            None => match &self.file.target {
                TargetConfig::Kubernetes(k) => k.public_url.clone().unwrap_or_default(),
                _ => String::new(),
            },
        }
    }
}
