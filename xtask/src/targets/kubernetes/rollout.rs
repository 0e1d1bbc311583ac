//! Watching a Deployment's rollout the way `kubectl rollout status` judges
//! it, undoing it the way `kubectl rollout undo` does, and collecting what a
//! failed rollout's pods said. The rollout is followed with kube-runtime's
//! watcher (one LIST, then a WATCH of the one Deployment by field selector):
//! every status the controller writes is judged by `progress` as it arrives,
//! and the watcher's own re-watch/re-list (with backoff) covers a dropped stream.
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{pin_mut, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{Event, Pod},
};
use kube::{
    api::{ListParams, LogParams},
    runtime::{
        watcher::{self, watcher, Event as Watched},
        WatchStreamExt,
    },
    Api,
};
use serde_json::Value;

use super::{manifests::RELEASE_LABEL, KubeTarget};

pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// Where a rollout stands, from the Deployment's status alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    Waiting(String),
    Failed(String),
}

pub fn progress(deployment: &Deployment) -> Progress {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = &deployment.status else {
        return Progress::Waiting("no status yet".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Waiting("the controller has not seen the new spec yet".into());
    }
    let stuck = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = stuck {
        return Progress::Failed(format!(
            "rollout stuck (ProgressDeadlineExceeded): {}",
            c.message
                .as_deref()
                .unwrap_or("no progress before the deadline")
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        Progress::Waiting(format!("{updated} of {want} pods updated"))
    } else if total > updated {
        Progress::Waiting(format!("{} old pods still terminating", total - updated))
    } else if ready < want || available < want {
        Progress::Waiting(format!("{available} of {want} pods available"))
    } else {
        Progress::Done
    }
}

pub fn revision_of(deployment: &Deployment) -> Option<String> {
    deployment
        .metadata
        .annotations
        .as_ref()?
        .get(REVISION)
        .cloned()
}

/// The release whose pods a Deployment makes: its pod template's `xtask.release` label.
pub fn release_of(deployment: &Deployment) -> Option<String> {
    let template = deployment.spec.as_ref()?.template.metadata.as_ref()?;
    template.labels.as_ref()?.get(RELEASE_LABEL).cloned()
}

impl KubeTarget {
    pub(crate) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// A Deployment as the cluster has it; None when there is none.
    pub async fn deployment(&self, name: &str) -> Result<Option<Deployment>> {
        self.deployments()
            .get_opt(name)
            .await
            .with_context(|| format!("reading Deployment {name}"))
    }

    /// The overlay's Deployment as the cluster has it; None before the first deploy.
    pub async fn current_deployment(&self) -> Result<Option<Deployment>> {
        self.deployment(&self.settings.deployment).await
    }

    /// The Deployment's current revision; None before the first deploy.
    pub async fn revision(&self) -> Result<Option<String>> {
        Ok(self
            .current_deployment()
            .await?
            .as_ref()
            .and_then(revision_of))
    }

    /// One line for `status`: revision, release and where the rollout stands.
    pub async fn rollout_summary(&self, name: &str) -> Result<String> {
        let Some(d) = self.deployment(name).await? else {
            return Ok(format!("Deployment {name} does not exist yet"));
        };
        let revision = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION).cloned())
            .unwrap_or_else(|| "?".into());
        let release = release_of(&d).unwrap_or_else(|| "?".into());
        let state = match progress(&d) {
            Progress::Done => "rolled out".to_owned(),
            Progress::Waiting(why) => format!("rolling out: {why}"),
            Progress::Failed(why) => format!("FAILED: {why}"),
        };
        Ok(format!(
            "{name} revision {revision} (release {release}): {state}"
        ))
    }

    /// Watches until the rollout is complete, stuck, or `deadline` passes.
    /// Err carries the reason, in words for the release record. A failed
    /// first LIST is an error at once (as the GET it replaces was); later
    /// watch errors are retried by the watcher and only named at the deadline.
    pub async fn wait_rollout(&self, name: &str, deadline: Duration) -> Result<(), String> {
        let mut why = "no status read yet".to_owned();
        let watched = self.watch_rollout(name, &mut why);
        match tokio::time::timeout(deadline, watched).await {
            Ok(judged) => judged,
            Err(_) => Err(format!(
                "rollout not complete after {}s (health.deadline_seconds): {why}",
                deadline.as_secs()
            )),
        }
    }

    async fn watch_rollout(&self, name: &str, why: &mut String) -> Result<(), String> {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let events = watcher(self.deployments(), config).default_backoff();
        pin_mut!(events);
        let (mut listed, mut seen) = (false, false);
        let mut waiting = why.clone();
        loop {
            let event = match events.try_next().await {
                Ok(Some(event)) => event,
                Ok(None) => return Err(format!("the watch of Deployment {name} ended")),
                Err(e) if !listed => return Err(format!("reading Deployment {name}: {e}")),
                Err(e) => {
                    *why = format!("{waiting} (watch error, retrying: {e})");
                    continue;
                }
            };
            let deployment = match event {
                Watched::Apply(d) | Watched::InitApply(d) => d,
                Watched::Delete(_) => return Err(format!("Deployment {name} was deleted")),
                Watched::Init => {
                    seen = false;
                    continue;
                }
                Watched::InitDone if !seen => {
                    return Err(format!("reading Deployment {name}: not found"))
                }
                Watched::InitDone => {
                    listed = true;
                    continue;
                }
            };
            seen = true;
            match progress(&deployment) {
                Progress::Done => return Ok(()),
                Progress::Failed(reason) => return Err(reason),
                Progress::Waiting(now) => waiting = now,
            }
            why.clone_from(&waiting);
        }
    }

    /// `kubectl rollout undo --to-revision`: the ReplicaSet of `revision`
    /// gives its pod template (minus the controller's pod-template-hash
    /// label) to `deployment`, which is applied again.
    pub async fn undo_to(&self, revision: &str, deployment: &Value) -> Result<()> {
        let selector = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("the Deployment has no spec.selector.matchLabels")?
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let list = sets
            .list(&ListParams::default().labels(&selector))
            .await
            .context("listing ReplicaSets")?;
        let previous = list
            .items
            .into_iter()
            .find(|rs| {
                rs.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION))
                    .is_some_and(|r| r == revision)
            })
            .with_context(|| {
                format!("no ReplicaSet of revision {revision} is left (spec.revisionHistoryLimit)")
            })?;
        let mut template = serde_json::to_value(
            previous
                .spec
                .context("the previous ReplicaSet has no spec")?
                .template
                .context("the previous ReplicaSet has no pod template")?,
        )?;
        if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
            labels.remove("pod-template-hash");
        }
        let mut object = deployment.clone();
        object["spec"]["template"] = template;
        object["metadata"]["annotations"]["kubernetes.io/change-cause"] =
            format!("xtask: back to revision {revision} after a failed release").into();
        self.apply(&object).await
    }

    /// Events and last log lines of the release's pods that are not ready, for the report.
    pub async fn diagnostics(&self, release: &str, lines: i64) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!("{RELEASE_LABEL}={release}")))
            .await
            .context("listing the release's pods")?;
        let mut out = String::new();
        let failing = list.items.iter().filter(|p| !pod_ready(p)).take(2);
        for pod in failing {
            let name = pod.metadata.name.clone().unwrap_or_default();
            out.push_str(&format!("pod {name}:\n"));
            let field = format!("involvedObject.name={name}");
            if let Ok(found) = events.list(&ListParams::default().fields(&field)).await {
                for e in found.items.iter().rev().take(5).rev() {
                    out.push_str(&format!(
                        "  event {} {}: {}\n",
                        e.type_.as_deref().unwrap_or(""),
                        e.reason.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("").trim_end()
                    ));
                }
            }
            let params = LogParams {
                tail_lines: Some(lines),
                ..Default::default()
            };
            match pods.logs(&name, &params).await {
                Ok(log) => out.extend(log.lines().map(|l| format!("  | {l}\n"))),
                Err(e) => out.push_str(&format!("  (no logs: {e})\n")),
            }
        }
        Ok(out)
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "app", "generation": 2 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn progress_reads_the_status_like_rollout_status() {
        let done = deployment(serde_json::json!({ "observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2 }));
        assert_eq!(progress(&done), Progress::Done);
        let stale = deployment(serde_json::json!({ "observedGeneration": 1, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2 }));
        assert!(matches!(progress(&stale), Progress::Waiting(_)));
        let surging = deployment(serde_json::json!({ "observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3 }));
        assert_eq!(
            progress(&surging),
            Progress::Waiting("1 old pods still terminating".into())
        );
        let stuck = deployment(serde_json::json!({ "observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 1, "conditions": [{ "type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"app-2\" has timed out progressing." }] }));
        assert!(matches!(progress(&stuck), Progress::Failed(r) if r.contains("timed out")));
    }
}
