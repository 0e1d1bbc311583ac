//! A small stand-in for the Kubernetes API server: enough of it for kube-rs
//! to deploy against. It records every request and answers from a map of
//! objects keyed by API path, with create/replace/delete conflicts checked
//! the way the real server checks them (name taken, resourceVersion, delete
//! preconditions) and a scripted Deployment controller: each new pod
//! template makes (or reuses) a ReplicaSet with the next revision, and the
//! rollout completes or gets stuck (ProgressDeadlineExceeded) as the test says.
//! It proves the calls xtask makes and how it reads the answers; it proves
//! nothing about real scheduling, probes, RBAC, admission or watch semantics.
#![allow(dead_code)] // each test uses a different part

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

/// How the scripted controller handles the next new pod template.
#[derive(Debug, Clone, Copy)]
pub enum Rollout {
    /// One status read shows the old generation, the next one a complete rollout.
    Completes,
    /// One stale read, then Progressing=False with reason ProgressDeadlineExceeded.
    Stuck,
}

#[derive(Default)]
struct St {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    version: u64,
    script: VecDeque<Rollout>,
    /// Deployment path -> (how its current rollout goes, stale reads left).
    rollouts: BTreeMap<String, (Rollout, u32)>,
}

pub struct FakeKube {
    state: Arc<Mutex<St>>,
    pub url: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let state = Arc::new(Mutex::new(St::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: other\n\
                 clusters:\n- name: fake\n  cluster:\n    server: {url}\n\
                 - name: elsewhere\n  cluster:\n    server: http://127.0.0.1:9\n\
                 users:\n- name: tester\n  user: {{}}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n\
                 - name: other\n  context:\n    cluster: elsewhere\n    user: tester\n"
            ),
        )
        .unwrap();
        FakeKube {
            state,
            url,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn script(&self, rollout: Rollout) {
        self.state.lock().unwrap().script.push_back(rollout);
    }

    /// Puts an object in place as if it were created earlier.
    pub fn insert(&self, path: &str, mut object: Value) {
        let mut st = self.state.lock().unwrap();
        st.version += 1;
        object["metadata"]["resourceVersion"] = json!(st.version.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{}", st.version));
        st.objects.insert(path.to_owned(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Every call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }
}

/// "METHOD path" of each call: what the tests compare.
pub fn lines(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16() });
    (code, Json(body)).into_response()
}

/// Collections end in a plural resource name; everything else names an object.
fn is_collection(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    ["leases", "configmaps", "replicasets", "pods", "events"].contains(&last)
}

async fn handle(
    State(state): State<Arc<Mutex<St>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = state.lock().unwrap();
    st.calls.push(Call {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    if path.ends_with("/log") {
        return "starting\nerror: cannot connect to the database\n".into_response();
    }
    match (method.as_str(), is_collection(&path)) {
        ("GET", true) => list(&st, &path, &query),
        ("POST", true) => {
            let key = format!(
                "{path}/{}",
                body["metadata"]["name"].as_str().unwrap_or_default()
            );
            if st.objects.contains_key(&key) {
                return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
            }
            let stored = store(&mut st, &key, body);
            (StatusCode::CREATED, Json(stored)).into_response()
        }
        ("GET", false) => match st.objects.get(&path).cloned() {
            Some(object) if path.contains("/deployments/") => {
                Json(with_status(&mut st, &path, object)).into_response()
            }
            Some(object) => Json(object).into_response(),
            None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
        },
        ("PUT", false) => {
            let Some(current) = st.objects.get(&path) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            };
            if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified",
                );
            }
            Json(store(&mut st, &path, body)).into_response()
        }
        ("PATCH", false)
            if headers
                .get("content-type")
                .is_some_and(|t| t == "application/merge-patch+json") =>
        {
            let Some(mut current) = st.objects.get(&path).cloned() else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            };
            merge(&mut current, &body);
            Json(store(&mut st, &path, current)).into_response()
        }
        ("PATCH", false) => {
            let object = if path.contains("/deployments/") {
                controller(&mut st, &path, body)
            } else {
                body
            };
            let stored = store(&mut st, &path, object);
            Json(stored).into_response()
        }
        ("DELETE", false) => {
            let Some(current) = st.objects.get(&path) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "not found");
            };
            let pre = &body["preconditions"];
            for (field, meta) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
                if !pre[field].is_null() && pre[field] != current["metadata"][meta] {
                    return status(StatusCode::CONFLICT, "Conflict", "precondition failed");
                }
            }
            st.objects.remove(&path);
            Json(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200 })).into_response()
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not in the fake",
        ),
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn store(st: &mut St, path: &str, mut object: Value) -> Value {
    st.version += 1;
    let uid = st.objects.get(path).map(|o| o["metadata"]["uid"].clone());
    object["metadata"]["uid"] = uid.unwrap_or_else(|| json!(format!("uid-{}", st.version)));
    object["metadata"]["resourceVersion"] = json!(st.version.to_string());
    st.objects.insert(path.to_owned(), object.clone());
    object
}

fn list(st: &St, path: &str, query: &str) -> Response {
    let mut labels = Vec::new();
    let mut fields = Vec::new();
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
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(path)
                .is_some_and(|rest| rest.matches('/').count() == 1)
        })
        .map(|(_, v)| v.clone())
        .filter(|v| {
            labels
                .iter()
                .all(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want))
        })
        .filter(|v| {
            fields.iter().all(|(k, want)| {
                k != "involvedObject.name" || v["involvedObject"]["name"].as_str() == Some(want)
            })
        })
        .collect();
    Json(json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": st.version.to_string() }, "items": items })).into_response()
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove("pod-template-hash");
    }
    t
}

/// The Deployment controller's part in an apply: generation, revision and ReplicaSets.
fn controller(st: &mut St, path: &str, mut applied: Value) -> Value {
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
fn with_status(st: &mut St, path: &str, mut object: Value) -> Value {
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
