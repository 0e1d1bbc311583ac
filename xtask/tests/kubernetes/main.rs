//! The Kubernetes target against a fake API server (support/fake_kube.rs):
//! kube-rs really connects through a kubeconfig to http://127.0.0.1:PORT,
//! and each test asserts the exact API calls made, in order. That the
//! overlays render and parse is `cargo xtask lint`'s test (tests/lint.rs,
//! "base, staging and production"); here the deploy's own rendering of them is checked.
// One file per concern: rolling (and rollback), locking, blue-green, the CLI
// commands, replicas under an autoscaler, the deployer's Role against the calls.
mod autoscaling;
mod blue_green;
mod commands;
mod digests;
#[path = "../support/fake_kube.rs"]
mod fake_kube;
mod interrupted;
mod locking;
mod rbac;
mod rolling;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc,
    },
};

use fake_kube::{lines, Call, FakeKube, Rollout};
use serde_json::json;
use xtask::{
    deploy::lock::LockInfo,
    deploy::release::{History, Outcome},
    deploy::{self, records::HistoryStore, DeployReport, Options, Source},
    environment::{self, Environment, KubeTargetConfig, TargetConfig},
    targets::kubernetes::{manifests, KubeTarget},
};

/// The `[target]` table of a Kubernetes environment, to change in a test.
fn kube_config(env: &mut Environment) -> &mut KubeTargetConfig {
    match &mut env.file.target {
        TargetConfig::Kubernetes(k) => k,
        _ => panic!("not a kubernetes environment"),
    }
}

const NS: &str = "/api/v1/namespaces/app-staging";
const APPS: &str = "/apis/apps/v1/namespaces/app-staging";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/app-staging/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/app-staging/leases/app-kt-deploy-lock";
const HISTORY: &str = "/api/v1/namespaces/app-staging/configmaps/app-kt-xtask-history";

fn environment(dir: &std::path::Path, public_url: Option<&str>, overlay: &str) -> Environment {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let public = public_url
        .map(|u| format!("public_url = \"{u}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
[target]
kind = "kubernetes"
overlay = "{}"
namespace = "app-staging"
context = "fake"
deployment = "app"
service = "app"
{public}
[image]
repo = "xtask-app"
[deploy]
replicas = 2
strategy = "rolling"
[app.env]
LOG_FORMAT = "json"
[health]
interval_ms = 10
timeout_ms = 500
success_threshold = 2
failure_threshold = 2
deadline_seconds = 5
drain_seconds = 0
verify_seconds = 0
"#,
        root.join("infrastructure/kubernetes/overlays")
            .join(overlay)
            .display()
    );
    let path = dir.join("kt.toml");
    std::fs::write(&path, &text).unwrap();
    environment::parse(&path, &text).unwrap()
}

struct Setup {
    fake: FakeKube,
    env: Environment,
    target: KubeTarget,
    _dir: tempfile::TempDir,
}

async fn setup(public_url: Option<&str>) -> Setup {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = environment(dir.path(), public_url, "staging");
    Setup::on(fake, env, dir).await
}

impl Setup {
    /// The target of `env` against `fake`. The kubeconfig's current context
    /// points elsewhere: target.context = "fake" must win.
    async fn on(fake: FakeKube, env: Environment, dir: tempfile::TempDir) -> Setup {
        let target = KubeTarget::from_kubeconfig_file(&env, &fake.kubeconfig, None)
            .await
            .unwrap();
        Setup {
            fake,
            env,
            target,
            _dir: dir,
        }
    }
}

/// A lock whose holder's process and host are gone, long past its ttl.
fn stale_lock() -> LockInfo {
    LockInfo {
        holder: "bob".into(),
        host: "gone-host".into(),
        pid: 1,
        since: chrono::Utc::now().timestamp() - 2000,
        ttl_seconds: 900,
        command: "deploy".into(),
        renewed: None,
    }
}

fn options(command: &str) -> Options {
    Options {
        strategy: None,
        quiet: true,
        command: command.into(),
        ..Default::default()
    }
}

async fn deploy(s: &Setup, image: &str, vars: &[(&str, &str)]) -> DeployReport {
    let overrides: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let source = Source::Image {
        image: image.into(),
        overrides,
    };
    deploy::run(&s.target, &s.env, source, &options("deploy"))
        .await
        .unwrap()
}

/// The server-side applies of the staging overlay, in kustomize's order.
fn applies() -> Vec<String> {
    [
        "/api/v1/namespaces/app-staging".to_owned(),
        format!("{NS}/serviceaccounts/app"),
        format!("{NS}/configmaps/app-config"),
        format!("{NS}/services/app"),
        format!("{APPS}/deployments/app"),
        "/apis/policy/v1/namespaces/app-staging/poddisruptionbudgets/app".to_owned(),
        "/apis/autoscaling/v2/namespaces/app-staging/horizontalpodautoscalers/app".to_owned(),
        "/apis/networking.k8s.io/v1/namespaces/app-staging/ingresses/app".to_owned(),
        "/apis/networking.k8s.io/v1/namespaces/app-staging/networkpolicies/app".to_owned(),
    ]
    .into_iter()
    .map(|p| format!("PATCH {p}"))
    .collect()
}

fn calls(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn history(s: &Setup) -> History {
    let map = s.fake.get(HISTORY).expect("history ConfigMap written");
    serde_json::from_str(map["data"]["history.json"].as_str().unwrap()).unwrap()
}

fn applied_deployment(s: &Setup) -> serde_json::Value {
    s.fake.get(&format!("{APPS}/deployments/app")).unwrap()
}

/// An HTTP server on 127.0.0.1 whose answer the test sets.
async fn gate_server() -> (String, Arc<AtomicU16>) {
    let code = Arc::new(AtomicU16::new(200));
    let answer = code.clone();
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        async move { axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, code)
}

fn lease(info: &LockInfo) -> serde_json::Value {
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "app-kt-deploy-lock", "annotations": { "xtask.dev/lock": serde_json::to_string(info).unwrap() } },
        "spec": { "holderIdentity": info.holder, "leaseDurationSeconds": info.ttl_seconds } })
}
