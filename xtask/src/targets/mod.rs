//! Where releases run, behind one trait at the level of releases and traffic:
//! start a release's instances without traffic, observe them, shift traffic
//! as a weighted split between releases, undo, retire. Strategies and the
//! deploy frame know only this trait; each target is one folder, and
//! `connect` is the one place that looks at the environment's target kind.
pub mod any;
pub mod docker;
pub mod fleet;
pub mod kubernetes;
pub mod swarm;

use anyhow::Result;
use serde::Serialize;

pub use any::{connect, AnyTarget};

use crate::{
    deploy::{lock::LockStore, records::HistoryStore, release::Release},
    gate::{Gate, ProbeResult},
    progress::Step,
};

/// A log stream from the engine (a container's or a swarm task's), as text.
pub(crate) async fn collect_logs(
    mut stream: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>
        + Unpin,
) -> String {
    use futures_util::StreamExt;
    let mut out = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(output) => out.push_str(&output.to_string()),
            Err(e) => {
                out.push_str(&format!("(logs unavailable: {e})"));
                break;
            }
        }
    }
    out
}

/// What a target does beyond the common contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The orchestrator replaces a release's instances itself (swarm's
    /// start-first update, a Deployment rollout): rolling calls `replace`
    /// once and gates what it observes, instead of starting batches.
    pub native_rollout: bool,
}

/// Traffic shares in percent by release id, summing to 100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Split(pub Vec<(String, u8)>);

impl Split {
    /// Everything to one release.
    pub fn all(release: &str) -> Split {
        Split(vec![(release.to_owned(), 100)])
    }

    /// `to` gets `percent`, `from` (when there is one) the rest.
    pub fn between(from: Option<&str>, to: &str, percent: u8) -> Split {
        match from.filter(|f| *f != to && percent < 100) {
            Some(from) => Split(vec![
                (from.to_owned(), 100 - percent),
                (to.to_owned(), percent),
            ]),
            None => Split::all(to),
        }
    }

    pub fn share(&self, release: &str) -> u8 {
        self.0
            .iter()
            .filter(|(r, _)| r == release)
            .map(|(_, p)| *p)
            .sum()
    }
}

/// How one instance of a release is doing, as the target sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum InstanceState {
    Running {
        restarts: i64,
    },
    Exited {
        code: i64,
    },
    /// Not started yet (pulling, scheduled): not a failure until the deadline.
    Pending,
    Missing,
}

/// The target's evidence of readiness for one instance.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Check {
    /// One probe of the health path, sent now.
    Probe(ProbeResult),
    /// The orchestrator's own readiness verdict (a Deployment's ready replicas).
    Reported { ready: bool },
    /// The balancer's own health check failed (HAProxy: the slot is DOWN),
    /// with its evidence (check status and HTTP code). Counted like a failed
    /// probe: `failure_threshold` looks in a row after the initial delay.
    Failed { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub id: String,
    pub name: String,
    pub state: InstanceState,
    pub check: Option<Check>,
    /// What the orchestrator says of it (a pending task's reason), for failure messages.
    pub detail: Option<String>,
}

/// The orchestrator's own failure verdict on a release.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub reason: String,
    /// What to read the logs of (a task, or the release on Kubernetes).
    pub instance: Option<String>,
}

/// One look at a release's instances.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observation {
    pub instances: Vec<Seen>,
    /// The orchestrator gave up on the release by itself (swarm rolled back,
    /// a rollout's progress deadline passed): final, with its words.
    pub verdict: Option<Verdict>,
    /// Native rollouts: the orchestrator has nothing left to replace.
    pub settled: bool,
}

/// One instance of any release, for `status` and `health`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub release: String,
    pub colour: String,
    pub state: InstanceState,
    /// Share of the public traffic it serves now, in percent (None: the orchestrator routes).
    pub traffic: Option<f64>,
}

/// The contract every target meets. `Records`: the lock and the history live in the target.
#[allow(async_fn_in_trait)]
pub trait Target: LockStore + HistoryStore {
    fn caps(&self) -> Caps;
    fn public_url(&self) -> String;
    /// Every public endpoint, where the target has several (one per host
    /// of a fleet): the verification watches each.
    fn public_urls(&self) -> Vec<String> {
        vec![self.public_url()]
    }
    /// A client that trusts the public endpoint's certificate.
    fn public_client(&self) -> Result<reqwest::Client>;

    /// Completes a drafted release with what the target knows of its image
    /// (its id), or refuses an image the target cannot run.
    async fn admit(&self, release: &mut Release) -> Result<()>;
    /// Ready to take `release`: the balancer up, with room for its replicas.
    async fn prepare(&self, release: &Release) -> Result<()>;
    /// At least `count` instances of `release` running beside what serves,
    /// taking no traffic yet; instances already there count.
    async fn start(&self, release: &Release, count: usize) -> Result<()>;
    /// Native rollouts only: the orchestrator replaces what serves with
    /// `release`, moving traffic as its instances pass.
    async fn replace(&self, release: &Release) -> Result<()>;
    async fn observe(&self, release: &Release) -> Result<Observation>;
    /// Native rollouts: traffic kept on these instances of the release
    /// (they passed the gate) while the orchestrator replaces the others.
    async fn follow(&self, release: &Release, ready: &[String]) -> Result<()>;
    /// Moves traffic to `split`, without a reload and without dropping a connection.
    async fn shift(&self, split: &Split) -> Result<()>;
    /// Who serves now.
    async fn split(&self) -> Result<Split>;
    /// Everything back to `to` serving alone (nothing at all for None),
    /// derived from what runs: after a failure, an interruption or a dead run.
    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()>;
    /// Stops `release`'s instances that take no traffic, keeping `keep` of them warm.
    async fn retire(&self, release: &str, keep: usize) -> Result<()>;
    /// What explains a failure of `release`: the last lines the failing
    /// instance logged, or what the target knows of the release's instances
    /// when no single one failed. Empty when there is nothing to show.
    async fn logs(&self, release: &Release, instance: Option<&str>, lines: usize) -> String;

    /// Every instance of the environment, for `status` and `health`.
    async fn instances(&self) -> Result<Vec<InstanceView>>;
    /// `path` probed on every instance that takes traffic, from where the
    /// target can reach it (none where the orchestrator probes them itself).
    async fn probes(
        &self,
        path: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<(String, ProbeResult)>>;
    /// Between deploys: traffic moved back onto live instances where the
    /// orchestrator replaced some by itself (a crashed swarm task). None:
    /// nothing of the kind happens on this target. For `route`.
    async fn repair(&self) -> Result<Option<serde_json::Value>>;
    /// Stops every instance (and the balancer); history and lock stay. For `down`.
    async fn stop_all(&self) -> Result<()>;
    /// Removes the images of releases no longer kept (never one of `kept`,
    /// never the records). None where the platform collects images itself.
    async fn prune(&self, kept: &[Release], dry_run: bool) -> Result<Option<docker::Pruned>>;
    /// What a deploy of `release` would apply, for `--dry-run`.
    async fn plan(&self, release: &Release) -> Result<serde_json::Value>;
    /// After `release` passed its rollout and verification: the immutable
    /// reference its instances run, when the target learns it only then (the
    /// digest a cluster's nodes pulled), for the record and so a rollback
    /// runs that image. None where `admit` recorded it already (an engine's
    /// image id) or the target cannot tell.
    async fn image_ran(&self, _release: &Release) -> Result<Option<String>> {
        Ok(None)
    }
    /// The balancer's names for the servers that carry `release` (HAProxy
    /// slots), for a canary's analysis queries. None where no balancer
    /// of ours is in front.
    async fn servers_of(&self, _release: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Runs a release hook once, in `release`'s image with its environment
    /// and secrets, where its instances run (after `prepare`). A hook that
    /// ran and failed is data (`HookRun`); an error is one that could not run.
    async fn run_hook(
        &self,
        release: &Release,
        kind: crate::environment::HookKind,
        _hook: &crate::environment::HookConfig,
    ) -> Result<crate::deploy::release::HookRun> {
        anyhow::bail!(
            "{} hooks are not built for this target (release {})",
            kind.as_str(),
            release.id
        )
    }
}
