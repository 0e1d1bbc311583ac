//! A small stand-in for the Kubernetes API server: enough of it for kube-rs
//! to deploy against. It records every request and answers from a map of
//! objects keyed by API path, with create/replace/delete conflicts checked
//! the way the real server checks them (name taken, resourceVersion, delete
//! preconditions) and a scripted Deployment controller: each new pod
//! template makes (or reuses) a ReplicaSet with the next revision, and the
//! rollout completes or gets stuck (ProgressDeadlineExceeded) as the test says.
//! A WATCH of deployments streams the rest of that scripted status progression
//! as MODIFIED events, then holds the stream open as an idle server would.
//! Of server-side apply's field ownership it keeps one field, a Deployment's
//! spec.replicas (managedFields, conflicts, the reset to 1 of a field no one
//! owns any more), because the autoscaler handling depends on it.
//! Every request is authorized against the deployer's Role (fake_kube_rbac.rs):
//! a call it does not grant is answered 403.
//! It proves the calls xtask makes and how it reads the answers; it proves
//! nothing about real scheduling, probes, admission, or watch semantics
//! beyond that happy path (no bookmarks, 410 Gone, timeouts or reconnects).
#![allow(dead_code)] // each test uses a different part

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
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

// The scripted Deployment controller: revisions, ReplicaSets and the status progression.
#[path = "fake_kube_controller.rs"]
mod controller;
use controller::{apply_replicas, controller, replicas_owner, with_status};

// LIST and WATCH answers: selectors, and the watch's scripted events.
#[path = "fake_kube_reads.rs"]
mod reads;
use reads::{list, watch};

// What the deployer's Role allows, and how a request is named to RBAC.
#[path = "fake_kube_rbac.rs"]
pub mod rbac;
use rbac::Access;

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
    /// One status read (GET, LIST item or watch event) shows the old generation,
    /// the next one a complete rollout.
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
    /// What the Role allows; every request is checked against it.
    granted: BTreeSet<Access>,
    /// Every access asked for since the start (never forgotten), and those refused.
    asked: BTreeSet<Access>,
    denied: BTreeSet<Access>,
}

pub struct FakeKube {
    state: Arc<Mutex<St>>,
    pub url: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeKube {
    /// Authorizing requests with the deployer's Role (infrastructure/kubernetes/deployer-role.yaml).
    pub async fn start() -> FakeKube {
        Self::start_with_role(&rbac::deployer_role()).await
    }

    pub async fn start_with_role(role: &k8s_openapi::api::rbac::v1::Role) -> FakeKube {
        let state = Arc::new(Mutex::new(St {
            granted: rbac::grants(role),
            ..St::default()
        }));
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

    /// What the HorizontalPodAutoscaler does: spec.replicas of a Deployment
    /// set through the scale subresource, an update that makes the
    /// controller manager the field's only owner.
    pub fn autoscale(&self, path: &str, replicas: i64) {
        let mut st = self.state.lock().unwrap();
        let mut object = st.objects.get(path).cloned().expect("no such Deployment");
        object["spec"]["replicas"] = json!(replicas);
        object["metadata"]["managedFields"] =
            json!([replicas_owner("kube-controller-manager", "Update")]);
        store(&mut st, path, object);
    }

    /// Every access asked for since the start (take_calls does not forget these).
    pub fn asked(&self) -> BTreeSet<Access> {
        self.state.lock().unwrap().asked.clone()
    }

    /// The accesses answered 403 because the Role does not grant them.
    pub fn denied(&self) -> BTreeSet<Access> {
        self.state.lock().unwrap().denied.clone()
    }

    /// Every call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }
}

/// "METHOD path" of each call, "?watch" marking a watch: what the tests compare.
pub fn lines(calls: &[Call]) -> Vec<String> {
    let watch = |c: &Call| if is_watch(&c.query) { "?watch" } else { "" };
    calls
        .iter()
        .map(|c| format!("{} {}{}", c.method, c.path, watch(c)))
        .collect()
}

/// One query parameter's value, as sent (the fake's callers send plain ones).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

fn is_watch(query: &str) -> bool {
    query.split('&').any(|p| p == "watch=true")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16() });
    (code, Json(body)).into_response()
}

/// Collections end in a plural resource name; everything else names an object.
fn is_collection(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    let plural = "leases configmaps deployments replicasets pods events";
    plural.split(' ').any(|p| p == last)
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
    let access = rbac::access(method.as_str(), &path, &query);
    st.asked.insert(access.clone());
    if !st.granted.contains(&access) {
        let message = format!(
            "User \"system:serviceaccount:xtask-deployer\" cannot {} resource \"{}\" in API group \"{}\"",
            access.verb, access.resource, access.group
        );
        st.denied.insert(access);
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    if path.ends_with("/log") {
        return "starting\nerror: cannot connect to the database\n".into_response();
    }
    match (method.as_str(), is_collection(&path)) {
        ("GET", true) if is_watch(&query) => watch(&mut st, &path, &query),
        ("GET", true) => list(&mut st, &path, &query),
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
            if path.contains("/deployments/") && !body["spec"]["replicas"].is_null() {
                // An update of the field moves its ownership to the updater.
                current["metadata"]["managedFields"] =
                    json!([replicas_owner("merge-patch", "Update")]);
            }
            Json(store(&mut st, &path, current)).into_response()
        }
        ("PATCH", false) => {
            let object = if path.contains("/deployments/") {
                let manager = param(&query, "fieldManager").unwrap_or_default();
                let force = param(&query, "force") == Some("true");
                match apply_replicas(st.objects.get(&path), body, manager, force) {
                    Ok(body) => controller(&mut st, &path, body),
                    Err(message) => return status(StatusCode::CONFLICT, "Conflict", message),
                }
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
