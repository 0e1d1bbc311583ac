//! How a run ends, the same for every target: the record closed and
//! trimmed, and the report the commands print.
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::release::{self, History, Release};
use crate::{
    environment::{Environment, Strategy},
    progress::Step,
};

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub environment: String,
    pub release: Release,
    pub strategy: Strategy,
    pub succeeded: bool,
    /// Whole run, verification window included.
    pub seconds: f64,
    /// From start until every slot served the new release (before verification).
    pub traffic_moved_seconds: Option<f64>,
    pub public_url: String,
    /// When a failed release was rolled back: from its first failed probe to the previous release serving alone.
    pub rollback_seconds: Option<f64>,
    /// The failing instance's last log lines.
    pub failure_logs: Option<String>,
}

/// A deploy or rollback run once its release is recorded in progress: the
/// ending every target shares, the record closed and trimmed and the report
/// built. The caller writes the history back.
pub struct Run<'a> {
    pub env: &'a Environment,
    pub release: Release,
    pub started: Instant,
    pub public_url: String,
}

impl Run<'_> {
    pub fn succeeded(&self, history: &mut History, traffic_moved: Option<f64>) -> DeployReport {
        history.activate(&self.release.id, &release::now());
        self.report(history, true, traffic_moved, None, None)
    }

    /// Recorded failed with `reason`, and with the rollback's own error when `undone` failed.
    pub fn failed(
        &self,
        history: &mut History,
        reason: &str,
        undone: &Result<()>,
        traffic_moved: Option<f64>,
        rollback_seconds: Option<f64>,
        logs: Option<String>,
    ) -> DeployReport {
        let reason = match undone {
            Ok(()) => reason.to_owned(),
            Err(e) => format!("{reason}; and the rollback failed too: {e:#}"),
        };
        history.fail(&self.release.id, &reason, &release::now());
        self.report(history, false, traffic_moved, rollback_seconds, logs)
    }

    fn report(
        &self,
        history: &mut History,
        succeeded: bool,
        traffic_moved: Option<f64>,
        rollback_seconds: Option<f64>,
        logs: Option<String>,
    ) -> DeployReport {
        history.trim(self.env.file.deploy.keep_releases);
        DeployReport {
            environment: self.env.name.clone(),
            release: history
                .get(&self.release.id)
                .cloned()
                .unwrap_or_else(|| self.release.clone()),
            strategy: self.release.strategy,
            succeeded,
            seconds: self.started.elapsed().as_secs_f64(),
            traffic_moved_seconds: traffic_moved,
            public_url: self.public_url.clone(),
            rollback_seconds,
            failure_logs: logs,
        }
    }
}

/// The progress step of a deploy or rollback run: `deploy r7 (Rolling…)`.
pub fn announce(release: &Release, detail: &str, quiet: bool) -> Step {
    let verb = if release.restores.is_some() {
        "rollback to"
    } else {
        "deploy"
    };
    Step::start(
        &format!("{verb} {} ({:?}{detail})", release.id, release.strategy),
        quiet,
    )
}
