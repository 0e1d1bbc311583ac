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

/// A managedFields entry owning spec.replicas (the only field whose ownership the fake keeps).
pub(super) fn replicas_owner(manager: &str, operation: &str) -> Value {
    json!({ "manager": manager, "operation": operation, "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:replicas": {} } } })
}

/// Server-side apply's rules for spec.replicas of a Deployment, as the real
/// API server keeps them in managedFields: sent, the applier owns it (a
/// different value than other owners hold conflicts unless forced, and a
/// changed value leaves the applier its only owner); left out, the applier
/// lets go, and a field no one owns any more is removed and defaulted to 1.
/// A body without a pod template only sets fields on the stored object (a
/// partial apply, like the handover of spec.replicas); a full one replaces it.
pub(super) fn apply_replicas(
    previous: Option<&Value>,
    mut body: Value,
    manager: &str,
    force: bool,
) -> Result<Value, &'static str> {
    let sent = body["spec"].get("replicas").cloned();
    if let Some(previous) = previous.filter(|_| body["spec"].get("template").is_none()) {
        let mut merged = previous.clone();
        super::merge(&mut merged, &body);
        body = merged;
    }
    let mut owners: Vec<Value> = previous
        .and_then(|p| p["metadata"]["managedFields"].as_array().cloned())
        .unwrap_or_default();
    let before = previous.map(|p| p["spec"]["replicas"].clone());
    let mine = |o: &Value| o["manager"] == manager && o["operation"] == "Apply";
    match sent {
        Some(value) => {
            let changed = before.as_ref().is_some_and(|b| *b != value);
            if changed && !force && owners.iter().any(|o| !mine(o)) {
                return Err(
                    "Apply failed with 1 conflict: conflict with another manager on .spec.replicas",
                );
            }
            if changed {
                owners.clear();
            }
            owners.retain(|o| !mine(o));
            owners.push(replicas_owner(manager, "Apply"));
        }
        None => {
            let owned = owners.iter().any(mine);
            owners.retain(|o| !mine(o));
            body["spec"]["replicas"] = match before {
                Some(_) if owned && owners.is_empty() => json!(1),
                Some(b) if !b.is_null() => b,
                _ => json!(1),
            };
        }
    }
    body["metadata"]["managedFields"] = json!(owners);
    Ok(body)
}
