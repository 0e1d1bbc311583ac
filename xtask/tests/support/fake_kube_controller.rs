//! The fake API server's Deployment controller (see fake_kube.rs): each new
//! pod template makes (or reuses) a ReplicaSet with the next revision, and
//! each status read (GET, LIST item or watch event) takes the rollout one
//! scripted step on: stale first, then complete or stuck.
use serde_json::{json, Value};

use super::{store, Rollout, St};

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove("pod-template-hash");
    }
    t
}

/// The Deployment controller's part in an apply: generation, revision and ReplicaSets.
pub(super) fn controller(st: &mut St, path: &str, mut applied: Value) -> Value {
    let previous = st.objects.get(path).cloned();
    let old_template = previous.as_ref().map(|p| p["spec"]["template"].clone());
    let mut generation = previous
        .as_ref()
        .and_then(|p| p["metadata"]["generation"].as_i64())
        .unwrap_or(0);
    let mut revision: i64 = previous
        .as_ref()
        .and_then(|p| {
            p["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    if old_template.as_ref() != Some(&applied["spec"]["template"]) {
        generation += 1;
        let sets_path = path.replace(
            &format!(
                "/deployments/{}",
                applied["metadata"]["name"].as_str().unwrap()
            ),
            "/replicasets",
        );
        let highest = st
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&sets_path))
            .filter_map(|(_, rs)| {
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        revision = highest + 1;
        // Like the real controller: an old ReplicaSet with the same template is reused with the new revision.
        let reused = st
            .objects
            .iter()
            .find(|(k, rs)| {
                k.starts_with(&sets_path)
                    && without_hash(&rs["spec"]["template"]) == applied["spec"]["template"]
            })
            .map(|(k, _)| k.clone());
        let key = reused.unwrap_or_else(|| {
            format!(
                "{sets_path}/{}-{revision}",
                applied["metadata"]["name"].as_str().unwrap()
            )
        });
        let mut template = applied["spec"]["template"].clone();
        template["metadata"]["labels"]["pod-template-hash"] = json!(format!("h{revision}"));
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": { "name": key.rsplit('/').next().unwrap(), "labels": template["metadata"]["labels"].clone(),
                "annotations": { "deployment.kubernetes.io/revision": revision.to_string() } },
            "spec": { "replicas": applied["spec"]["replicas"].clone(), "selector": applied["spec"]["selector"].clone(), "template": template },
        });
        store(st, &key, rs);
        let next = st.script.pop_front().unwrap_or(Rollout::Completes);
        st.rollouts.insert(path.to_owned(), (next, 1));
    }
    applied["metadata"]["generation"] = json!(generation);
    applied["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
        json!(revision.to_string());
    applied
}

/// The status the controller would report at this read.
pub(super) fn with_status(st: &mut St, path: &str, mut object: Value) -> Value {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    let want = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let Some((rollout, stale)) = st.rollouts.get_mut(path) else {
        return object;
    };
    object["status"] = if *stale > 0 {
        *stale -= 1;
        json!({ "observedGeneration": generation - 1, "replicas": want, "updatedReplicas": 0, "readyReplicas": want, "availableReplicas": want })
    } else {
        match rollout {
            Rollout::Completes => {
                json!({ "observedGeneration": generation, "replicas": want, "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want })
            }
            Rollout::Stuck => {
                json!({ "observedGeneration": generation, "replicas": want + 1, "updatedReplicas": 1, "readyReplicas": want, "availableReplicas": want,
                "conditions": [{ "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": format!("ReplicaSet has timed out progressing.") }] })
            }
        }
    };
    object
}
