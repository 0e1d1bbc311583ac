//! `[canary]`: the steps of a canary release and the Prometheus analysis
//! between them. Checked strictly, like the rest of the file.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{Environment, Strategy, TargetKind};

/// Variables that make the app misbehave on purpose (for canary tests).
/// The app honours them only with `APP_DEBUG_ROUTES`; an environment file
/// refuses all of them unless it says `[app] debug_knobs = true`, which no
/// production file does.
pub const FAULT_VARIABLES: &[&str] = &["APP_DEBUG_ROUTES", "APP_ERROR_RATE"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Percent of the traffic on the new release at each step, rising, ending at 100.
    pub steps: Vec<u8>,
    /// How long each step serves before its analysis runs.
    #[serde(default = "default_pause")]
    pub pause_seconds: f64,
    /// Prometheus' HTTP API (`/api/v1/query` is appended).
    pub prometheus_url: String,
    /// Per-query timeout; an unreachable Prometheus is inconclusive.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_ms: u64,
    /// The queries judged after each step but the last.
    #[serde(default)]
    pub analysis: Vec<AnalysisConfig>,
}

fn default_pause() -> f64 {
    30.0
}

fn default_query_timeout() -> u64 {
    2000
}

/// One query and its limit. `{{canary}}` and `{{stable}}` in the query
/// become a regex of the balancer servers (HAProxy slots) of each release,
/// for `server=~"{{canary}}"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    pub name: String,
    pub query: String,
    /// The value must be at most this.
    pub max: Option<f64>,
    /// The value must be at least this.
    pub min: Option<f64>,
    /// Measured and recorded, never decisive.
    #[serde(default)]
    pub dry_run: bool,
}

impl Environment {
    pub(super) fn validate_canary(&self) -> Result<()> {
        let f = &self.file;
        let canary = f.deploy.strategy == Strategy::Canary;
        match (&f.canary, canary) {
            (None, true) => bail!(
                "{}: deploy.strategy = \"canary\" needs a [canary] table (steps, prometheus_url, [[canary.analysis]]); see docs/CANARY.md",
                self.path.display()
            ),
            (Some(_), false) => bail!(
                "{}: [canary] is for deploy.strategy = \"canary\"; remove it or set the strategy",
                self.path.display()
            ),
            _ => {}
        }
        if f.deploy.strategy == Strategy::Canary && f.target.kind() == TargetKind::Kubernetes {
            bail!(
                "{}: deploy.strategy = \"canary\" needs weighted traffic through our balancer (kind = \"docker\" or \"swarm\"); Kubernetes moves traffic per pod: use \"blue-green\" (see docs/CANARY.md)",
                self.path.display()
            );
        }
        if let Some(c) = &f.canary {
            self.check_canary(c)?;
        }
        let knobs = FAULT_VARIABLES.iter().find(|v| f.app.env.contains_key(**v));
        if let (Some(knob), false) = (knobs, f.app.debug_knobs) {
            bail!(self.field_error(
                &format!("app.env.{knob}"),
                "…",
                "makes the app misbehave on purpose; only test environments may set it, with [app] debug_knobs = true"
            ));
        }
        Ok(())
    }

    fn check_canary(&self, c: &CanaryConfig) -> Result<()> {
        let rising = c.steps.windows(2).all(|w| w[0] < w[1]);
        if c.steps.is_empty() || !rising || c.steps.last() != Some(&100) || c.steps[0] == 0 {
            bail!(self.field_error(
                "canary.steps",
                format!("{:?}", c.steps),
                "must rise from above 0 to 100, e.g. [10, 50, 100]"
            ));
        }
        if !(0.0..=3600.0).contains(&c.pause_seconds) {
            bail!(self.field_error(
                "canary.pause_seconds",
                c.pause_seconds,
                "must be between 0 and 3600"
            ));
        }
        if !(c.prometheus_url.starts_with("http://") || c.prometheus_url.starts_with("https://")) {
            bail!(self.field_error(
                "canary.prometheus_url",
                &c.prometheus_url,
                "must be an http:// or https:// URL"
            ));
        }
        if !(100..=60_000).contains(&c.query_timeout_ms) {
            bail!(self.field_error(
                "canary.query_timeout_ms",
                c.query_timeout_ms,
                "must be between 100 and 60000"
            ));
        }
        if c.analysis.iter().all(|a| a.dry_run) {
            bail!(self.field_error(
                "canary.analysis",
                "[]",
                "needs at least one query that is not dry_run: a canary nothing can fail is not analysed"
            ));
        }
        for a in &c.analysis {
            if a.max.into_iter().chain(a.min).any(|v| !v.is_finite()) {
                bail!(self.field_error(
                    &format!("canary.analysis.{}", a.name),
                    "…",
                    "max and min must be finite numbers (a NaN limit would pass anything)"
                ));
            }
            if a.max.is_none() && a.min.is_none() {
                bail!(self.field_error(
                    &format!("canary.analysis.{}", a.name),
                    "…",
                    "needs max or min"
                ));
            }
            if a.query.trim().is_empty() {
                bail!(self.field_error(
                    &format!("canary.analysis.{}.query", a.name),
                    "\"\"",
                    "is empty"
                ));
            }
        }
        Ok(())
    }
}
