//! The fake API server's LIST and WATCH answers (see fake_kube.rs): label and
//! field selectors, and a watch that streams the scripted rollout.
use axum::{
    body::Bytes,
    response::{IntoResponse, Response},
    Json,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{with_status, St};

/// The label and field selectors of a query, as (key, value) pairs.
fn selectors(query: &str) -> (Pairs, Pairs) {
    let (mut labels, mut fields) = (Vec::new(), Vec::new());
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v
            .replace("%3D", "=")
            .replace("%2C", ",")
            .replace("%2F", "/");
        let target = match k {
            "labelSelector" => &mut labels,
            "fieldSelector" => &mut fields,
            _ => continue,
        };
        target.extend(
            v.split(',')
                .filter_map(|s| s.split_once('=').map(|(a, b)| (a.to_owned(), b.to_owned()))),
        );
    }
    (labels, fields)
}

type Pairs = Vec<(String, String)>;

pub(super) fn list(st: &mut St, path: &str, query: &str) -> Response {
    let (labels, fields) = selectors(query);
    let items: Vec<(String, Value)> = st
        .objects
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(path)
                .is_some_and(|rest| rest.matches('/').count() == 1)
        })
        .filter(|(_, v)| {
            labels
                .iter()
                .all(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want))
        })
        .filter(|(_, v)| {
            fields.iter().all(|(k, want)| match k.as_str() {
                "involvedObject.name" => v["involvedObject"]["name"].as_str() == Some(want),
                "metadata.name" => v["metadata"]["name"].as_str() == Some(want),
                _ => true,
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let items: Vec<Value> = items
        .into_iter()
        .map(|(k, v)| with_status(st, &k, v))
        .collect();
    let kind = if path.ends_with("/deployments") {
        "DeploymentList"
    } else {
        "List"
    };
    Json(json!({ "apiVersion": "v1", "kind": kind, "metadata": { "resourceVersion": st.version.to_string() }, "items": items })).into_response()
}

/// A watch of one Deployment (fieldSelector metadata.name=NAME): the rest of its
/// scripted status progression, one MODIFIED event per line, then an open, idle stream.
/// A re-watch (the watcher's, after any dropped stream) gets the current status again.
pub(super) fn watch(st: &mut St, path: &str, query: &str) -> Response {
    let (_, fields) = selectors(query);
    let name = fields.iter().find(|(k, _)| k == "metadata.name");
    let key = format!(
        "{path}/{}",
        name.map(|(_, v)| v.as_str()).unwrap_or_default()
    );
    let mut events = Vec::new();
    while let Some(object) = st.objects.get(&key).cloned() {
        let more = st.rollouts.get(&key).is_some_and(|(_, stale)| *stale > 0);
        let event = json!({ "type": "MODIFIED", "object": with_status(st, &key, object) });
        events.push(Ok::<_, std::convert::Infallible>(Bytes::from(format!(
            "{event}\n"
        ))));
        if !more {
            break;
        }
    }
    let stream = futures_util::stream::iter(events).chain(futures_util::stream::pending());
    axum::body::Body::from_stream(stream).into_response()
}
