//! Release history: what was deployed, when, by whom, and how it ended.
//! Kept in the target (see each target's record store), never only on the
//! machine that deployed, so rollback and status work from any runner.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::history::History;
use crate::environment::Strategy;

/// Variables the deploy engine sets itself; users may not override them.
/// (PORT may be set: the engine publishes whatever port the release uses.)
pub const PLATFORM_ENV: &[&str] = &["BIND", "LISTEN_SOCKET", "DRAIN_SECONDS"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    InProgress,
    Active,
    Superseded,
    Failed,
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in progress",
            Outcome::Active => "active",
            Outcome::Superseded => "superseded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled back",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    /// `r<seq>`: short, ordered, and safe in container names.
    pub id: String,
    pub image: String,
    pub image_id: String,
    /// Plain app variables, merged from the environment file and `--env` at deploy time,
    /// so a rollback restores exactly what ran.
    pub env: BTreeMap<String, String>,
    /// Secret NAME -> reference (`env:X`, `file:/p`); values are resolved at each deploy, never stored.
    pub secrets: BTreeMap<String, String>,
    pub strategy: Strategy,
    pub replicas: usize,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub by: String,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// Set on releases made by `rollback`: the release whose image and env they restore.
    pub restores: Option<String>,
    /// When it served all traffic and passed verification: a run that dies
    /// after this point left a good release, which the next run activates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    /// A canary's analysis: every query measured at every step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<crate::gate::analysis::Measurement>,
    /// The schema its image's migrations go up to (`deploy::schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<super::schema::Schema>,
    /// The hooks the run ran (`[hooks]`), with their output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRun>,
}

/// One hook run: how it ended and what it printed (secret values replaced
/// by `***`, the last 16 KiB kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub hook: crate::environment::HookKind,
    pub command: Vec<String>,
    /// `passed`, `failed` (a non-zero exit), `timed out`, or `error` (it could not run).
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub seconds: f64,
    pub output: String,
}

impl HookRun {
    pub fn passed(&self) -> bool {
        self.outcome == "passed"
    }

    /// One line for reports: `pre_deploy (migrate up) exited with 1 after 0.4s`.
    pub fn describe(&self) -> String {
        let what = match (self.outcome.as_str(), self.exit_code) {
            ("passed", _) => "passed".to_owned(),
            ("failed", Some(code)) => format!("exited with {code}"),
            (other, _) => other.to_owned(),
        };
        format!(
            "{} ({}) {what} after {:.1}s",
            self.hook.as_str(),
            self.command.join(" "),
            self.seconds
        )
    }
}

impl Release {
    /// A release of `image` drafted now by whoever runs this, not yet
    /// recorded: no id, nothing measured, nothing ran.
    pub fn new(image: &str, strategy: Strategy, replicas: usize) -> Release {
        Release {
            id: String::new(),
            image: image.to_owned(),
            image_id: String::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            strategy,
            replicas,
            started_at: now(),
            finished_at: None,
            by: deployer(),
            outcome: Outcome::InProgress,
            reason: None,
            restores: None,
            verified_at: None,
            analysis: Vec::new(),
            schema: None,
            hooks: Vec::new(),
        }
    }

    /// What an engine starts: the image id the release admitted (tags move
    /// with every build), its reference only before it has one.
    pub fn runnable_image(&self) -> &str {
        match self.image_id.is_empty() {
            true => &self.image,
            false => &self.image_id,
        }
    }

    /// For output: `--env` values pass through `redact`, so a secret passed
    /// that way (which it should not be) is not printed again.
    pub fn redacted(&self) -> Release {
        let mut shown = self.clone();
        shown.env = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), redact(k, v)))
            .collect();
        shown
    }

    /// Instance colour: alternates by release number, so blue-green sets are told apart.
    pub fn color(&self) -> &'static str {
        let seq: u64 = self.id.trim_start_matches('r').parse().unwrap_or(0);
        if seq.is_multiple_of(2) {
            "blue"
        } else {
            "green"
        }
    }
}

/// Who deployed: the CI actor when there is one, else user@host.
pub fn deployer() -> String {
    if let (Ok(actor), Ok(run)) = (
        std::env::var("GITHUB_ACTOR"),
        std::env::var("GITHUB_RUN_ID"),
    ) {
        return format!("{actor} (GitHub Actions run {run})");
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", hostname())
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// For display: secret-looking names, URL passwords and password pairs
/// hidden (the rules are `sensitive`'s, which also refuses them at deploy).
pub fn redact(name: &str, value: &str) -> String {
    super::sensitive::redact(name, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_secret_names_and_url_passwords() {
        assert_eq!(redact("DB_PASSWORD", "x"), "***");
        assert_eq!(
            redact("DATABASE_URL", "postgres://app:pw@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("LOG_FORMAT", "json"), "json");
    }
}
