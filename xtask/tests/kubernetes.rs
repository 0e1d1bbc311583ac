//! The Kubernetes target against a fake API server (support/fake_kube.rs):
//! kube-rs really connects through a kubeconfig to http://127.0.0.1:PORT,
//! and each test asserts the exact API calls made, in order. That the
//! overlays render and parse is `cargo xtask lint`'s test (tests/lint.rs,
//! "base, staging and production"); here the deploy's own rendering of them is checked.
#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc,
    },
};

use fake_kube::{lines, FakeKube, Rollout};
use serde_json::json;
use xtask::{
    deploy::{DeployReport, Options, Source},
    environment::{self, Environment},
    kube_deploy,
    lock::LockInfo,
    release::{History, Outcome},
    target::kubernetes::{manifests, KubeTarget},
};

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
    // The kubeconfig's current context points elsewhere: target.context = "fake" must win.
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

fn options(command: &str) -> Options {
    Options {
        strategy: None,
        quiet: true,
        command: command.into(),
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
    kube_deploy::run(&s.target, &s.env, source, &options("deploy"))
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

#[tokio::test]
async fn rolling_deploy_applies_the_overlay_waits_for_the_rollout_and_records_it() {
    let s = setup(None).await;
    let report = deploy(&s, "xtask-app:1.0.0", &[]).await;
    assert!(report.succeeded, "{:?}", report.release.reason);
    let mut expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("POST {NS}/configmaps"),
        &format!("GET {APPS}/deployments/app"),
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments/app"), // stale: observedGeneration behind
        &format!("GET {APPS}/deployments/app"), // complete
        &format!("PUT {HISTORY}"),
        &format!("GET {LEASE}"),
        &format!("DELETE {LEASE}"),
    ]));
    let made = s.fake.take_calls();
    assert_eq!(lines(&made), expected);
    let apply = made
        .iter()
        .find(|c| c.method == "PATCH" && c.path.ends_with("/deployments/app"))
        .unwrap();
    assert!(
        apply.query.contains("fieldManager=xtask") && apply.query.contains("force=true"),
        "{}",
        apply.query
    );
    let d = &apply.body;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "xtask-app:1.0.0"
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["xtask.release"],
        "r1"
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"],
        "1.0.0"
    );
    assert_eq!(d["spec"]["replicas"], 2);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(
        env.iter()
            .any(|v| v["name"] == "LOG_FORMAT" && v["value"] == "json"),
        "{env:?}"
    );
    let h = history(&s);
    assert_eq!(h.active().unwrap().id, "r1");
    assert!(s.fake.get(LEASE).is_none(), "the lock is released");
}

#[tokio::test]
async fn a_stuck_rollout_reapplies_the_previous_replicaset_template() {
    let s = setup(None).await;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    // A pod of the coming release that never gets ready, and what the kubelet said about it.
    s.fake.insert(
        &format!("{NS}/pods/app-2-x"),
        json!({ "metadata": { "name": "app-2-x", "labels": { "xtask.release": "r2" } },
        "status": { "conditions": [{ "type": "Ready", "status": "False" }] } }),
    );
    s.fake.insert(&format!("{NS}/events/e1"), json!({ "metadata": { "name": "e1" }, "involvedObject": { "name": "app-2-x" },
        "type": "Warning", "reason": "Unhealthy", "message": "Readiness probe failed: HTTP probe failed with statuscode: 503" }));
    s.fake.take_calls();
    s.fake.script(Rollout::Stuck);
    let report = deploy(
        &s,
        "xtask-app:2.0.0",
        &[("DATABASE_URL", "postgres://u:pw@127.0.0.1:1/x")],
    )
    .await;
    assert!(!report.succeeded);
    let reason = report.release.reason.clone().unwrap();
    assert!(reason.contains("ProgressDeadlineExceeded"), "{reason}");
    let logs = report.failure_logs.clone().unwrap();
    assert!(
        logs.contains("Readiness probe failed") && logs.contains("cannot connect to the database"),
        "{logs}"
    );
    let mut expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("PUT {HISTORY}"),
        &format!("GET {APPS}/deployments/app"),
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments/app"),
        &format!("GET {APPS}/deployments/app"), // ProgressDeadlineExceeded
        &format!("GET {NS}/pods"),
        &format!("GET {NS}/events"),
        &format!("GET {NS}/pods/app-2-x/log"),
        &format!("GET {APPS}/deployments/app"), // has the apply made a new revision?
        &format!("GET {APPS}/replicasets"),
        &format!("PATCH {APPS}/deployments/app"), // revision 1's template again
        &format!("GET {APPS}/deployments/app"),
        &format!("GET {APPS}/deployments/app"),
        &format!("PUT {HISTORY}"),
        &format!("GET {LEASE}"),
        &format!("DELETE {LEASE}"),
    ]));
    assert_eq!(lines(&s.fake.take_calls()), expected);
    let d = applied_deployment(&s);
    let template = &d["spec"]["template"];
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "xtask-app:1.0.0"
    );
    assert_eq!(template["metadata"]["labels"]["xtask.release"], "r1");
    assert!(
        template["metadata"]["labels"]["pod-template-hash"].is_null(),
        "the controller's label is not applied"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "undo makes a new revision"
    );
    let h = history(&s);
    assert_eq!(h.get("r2").unwrap().outcome, Outcome::Failed);
    assert_eq!(h.active().unwrap().id, "r1");
    let shown = serde_json::to_string(&report.release.redacted()).unwrap();
    assert!(
        !shown.contains(":pw@"),
        "the password is not shown: {shown}"
    );
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

#[tokio::test]
async fn a_failing_http_gate_rolls_back_after_a_complete_rollout() {
    let (url, code) = gate_server().await;
    let s = setup(Some(&url)).await;
    assert!(
        deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded,
        "the gate passes on 200"
    );
    s.fake.take_calls();
    code.store(503, Ordering::SeqCst);
    let report = deploy(&s, "xtask-app:2.0.0", &[]).await;
    assert!(!report.succeeded);
    let reason = report.release.reason.clone().unwrap();
    assert!(
        reason.contains("HTTP gate") && reason.contains("HTTP 503") && reason.contains("/ready"),
        "{reason}"
    );
    let made = lines(&s.fake.take_calls());
    let undo = made
        .iter()
        .position(|c| c == &format!("GET {APPS}/replicasets"))
        .expect("looked for the previous ReplicaSet");
    assert_eq!(made[undo + 1], format!("PATCH {APPS}/deployments/app"));
    assert_eq!(
        applied_deployment(&s)["spec"]["template"]["spec"]["containers"][0]["image"],
        "xtask-app:1.0.0"
    );
    assert_eq!(history(&s).get("r2").unwrap().outcome, Outcome::Failed);
}

#[tokio::test]
async fn rollback_to_reapplies_that_releases_image_and_env() {
    let s = setup(None).await;
    assert!(
        deploy(&s, "xtask-app:1.0.0", &[("FEATURE", "old")])
            .await
            .succeeded
    );
    assert!(
        deploy(&s, "xtask-app:2.0.0", &[("FEATURE", "new")])
            .await
            .succeeded
    );
    s.fake.take_calls();
    let source = Source::Restore {
        to: Some("r1".into()),
    };
    let report = kube_deploy::run(&s.target, &s.env, source, &options("rollback"))
        .await
        .unwrap();
    assert!(report.succeeded);
    let mut expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("PUT {HISTORY}"),
        &format!("GET {APPS}/deployments/app"),
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments/app"),
        &format!("GET {APPS}/deployments/app"),
        &format!("PUT {HISTORY}"),
        &format!("GET {LEASE}"),
        &format!("DELETE {LEASE}"),
    ]));
    assert_eq!(lines(&s.fake.take_calls()), expected);
    let container = applied_deployment(&s)["spec"]["template"]["spec"]["containers"][0].clone();
    assert_eq!(container["image"], "xtask-app:1.0.0");
    assert!(container["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "FEATURE" && v["value"] == "old"));
    let h = history(&s);
    assert_eq!(h.active().unwrap().restores.as_deref(), Some("r1"));
    assert_eq!(h.get("r2").unwrap().outcome, Outcome::RolledBack);
    let err = kube_deploy::run(
        &s.target,
        &s.env,
        Source::Restore {
            to: Some("r9".into()),
        },
        &options("rollback"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--to r9") && err.contains("r1, r2, r3"),
        "{err}"
    );
}

fn lease(info: &LockInfo) -> serde_json::Value {
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "app-kt-deploy-lock", "annotations": { "xtask.dev/lock": serde_json::to_string(info).unwrap() } },
        "spec": { "holderIdentity": info.holder, "leaseDurationSeconds": info.ttl_seconds } })
}

#[tokio::test]
async fn a_lease_held_by_a_live_deployer_refuses_the_deploy() {
    let s = setup(None).await;
    let other = LockInfo {
        holder: "alice (GitHub Actions run 42)".into(),
        host: "runner-7".into(),
        pid: 1,
        since: chrono::Utc::now().timestamp(),
        ttl_seconds: 900,
        command: "deploy".into(),
    };
    s.fake.insert(LEASE, lease(&other));
    let source = Source::Image {
        image: "xtask-app:1.0.0".into(),
        overrides: BTreeMap::new(),
    };
    let err = kube_deploy::run(&s.target, &s.env, source, &options("deploy"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("locked by alice (GitHub Actions run 42)") && err.contains("runner-7"),
        "{err}"
    );
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[&format!("POST {LEASES}"), &format!("GET {LEASE}")])
    );
    assert!(s.fake.get(LEASE).is_some(), "alice's lease is left alone");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_only_that_lease_is_deleted() {
    let s = setup(None).await;
    let stale = LockInfo {
        holder: "bob".into(),
        host: "gone-host".into(),
        pid: 1,
        since: chrono::Utc::now().timestamp() - 2000,
        ttl_seconds: 900,
        command: "deploy".into(),
    };
    s.fake.insert(LEASE, lease(&stale));
    let uid = s.fake.get(LEASE).unwrap()["metadata"]["uid"].clone();
    let report = deploy(&s, "xtask-app:1.0.0", &[]).await;
    assert!(report.succeeded);
    let made = s.fake.take_calls();
    assert_eq!(
        lines(&made[..5]),
        calls(&[
            &format!("POST {LEASES}"),
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"),
            &format!("POST {LEASES}"),
            &format!("GET {HISTORY}")
        ])
    );
    assert_eq!(
        made[2].body["preconditions"]["uid"], uid,
        "the delete names the stale lease"
    );
    assert_eq!(
        made[3].body["spec"]["holderIdentity"],
        xtask::release::deployer()
    );
}

#[tokio::test]
async fn every_overlay_renders_into_a_release_deployment() {
    let s = setup(None).await;
    for overlay in ["staging", "production"] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = environment(dir.path(), None, overlay);
        let namespace = if overlay == "staging" {
            "app-staging"
        } else {
            "app-production"
        };
        env.file.target.namespace = Some(namespace.into());
        let target = KubeTarget::from_kubeconfig_file(&env, &s.fake.kubeconfig, None)
            .await
            .unwrap();
        let mut release = History::default().begin_preview("xtask-app:9.9.9");
        release.replicas = 3;
        let objects =
            manifests::render(&target, &release).unwrap_or_else(|e| panic!("{overlay}: {e:#}"));
        let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(d["metadata"]["namespace"], namespace, "{overlay}");
        assert_eq!(d["spec"]["replicas"], 3, "{overlay}");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"], "xtask-app:9.9.9",
            "{overlay}"
        );
    }
    assert!(
        s.fake.take_calls().is_empty(),
        "rendering touches no cluster"
    );
}

#[tokio::test]
async fn the_context_flag_overrides_target_context() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = environment(dir.path(), None, "staging");
    // "other" is the kubeconfig's cluster on 127.0.0.1:9, where nothing listens.
    env.file.target.context = Some("other".into());
    let wrong = KubeTarget::from_kubeconfig_file(&env, &fake.kubeconfig, None)
        .await
        .unwrap();
    assert!(
        wrong.read_history().await.is_err(),
        "target.context = other is used"
    );
    let right = KubeTarget::from_kubeconfig_file(&env, &fake.kubeconfig, Some("fake"))
        .await
        .unwrap();
    assert!(right.read_history().await.unwrap().releases.is_empty());
    assert_eq!(
        lines(&fake.take_calls()),
        calls(&[&format!("GET {HISTORY}")])
    );
}

#[tokio::test]
async fn status_history_and_lock_commands_dispatch_to_the_cluster() {
    use xtask::commands::{
        observe::status,
        releases::{history_command, lock_command, EnvArg, EnvJsonArgs, LockAction},
    };
    let s = setup(None).await;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    let stuck = LockInfo {
        holder: "carol".into(),
        host: "elsewhere".into(),
        pid: 1,
        since: chrono::Utc::now().timestamp(),
        ttl_seconds: 900,
        command: "deploy".into(),
    };
    s.fake.insert(LEASE, lease(&stuck));
    s.fake.take_calls();
    // The commands read KUBECONFIG, as on a runner; no other test here reads it.
    std::env::set_var("KUBECONFIG", &s.fake.kubeconfig);
    let arg = EnvArg {
        environment: s.env.path.to_string_lossy().into_owned(),
        context: Some("fake".into()),
    };
    let args = |json| EnvJsonArgs {
        env: arg.clone(),
        json,
    };
    status(args(true)).await.unwrap();
    history_command(args(true)).await.unwrap();
    lock_command(LockAction::Release(args(false)))
        .await
        .unwrap();
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[
            &format!("GET {HISTORY}"),
            &format!("GET {LEASE}"),
            &format!("GET {NS}/services/app"), // no colour: a rolling deploy
            &format!("GET {APPS}/deployments/app"),
            &format!("GET {HISTORY}"),
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"),
        ])
    );
    assert!(
        s.fake.get(LEASE).is_none(),
        "lock release removed carol's lease"
    );
    let docker = EnvArg {
        environment: "staging".into(),
        context: Some("fake".into()),
    };
    let err = history_command(EnvJsonArgs {
        env: docker,
        json: true,
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--context") && err.contains("not a kubernetes target"),
        "{err}"
    );
}

async fn blue_green(s: &Setup, image: &str) -> DeployReport {
    let source = Source::Image {
        image: image.into(),
        overrides: BTreeMap::new(),
    };
    let options = Options {
        strategy: Some(xtask::environment::Strategy::BlueGreen),
        quiet: true,
        command: "deploy".into(),
    };
    kube_deploy::run(&s.target, &s.env, source, &options)
        .await
        .unwrap()
}

fn colour_of(s: &Setup, service: &str) -> serde_json::Value {
    s.fake.get(&format!("{NS}/services/{service}")).unwrap()["spec"]["selector"]["xtask.colour"]
        .clone()
}

fn replicas(s: &Setup, deployment: &str) -> serde_json::Value {
    s.fake
        .get(&format!("{APPS}/deployments/{deployment}"))
        .unwrap()["spec"]["replicas"]
        .clone()
}

#[tokio::test]
async fn blue_green_deploys_beside_the_live_colour_then_switches_and_retires_it() {
    let s = setup(None).await;
    assert!(blue_green(&s, "xtask-app:1.0.0").await.succeeded);
    assert_eq!(colour_of(&s, "app"), "blue", "the first colour is blue");
    s.fake.take_calls();
    let report = blue_green(&s, "xtask-app:2.0.0").await;
    assert!(report.succeeded, "{:?}", report.release.reason);
    let hpa = "/apis/autoscaling/v2/namespaces/app-staging/horizontalpodautoscalers/app";
    let expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("PUT {HISTORY}"),
        &format!("GET {NS}/services/app"), // which colour is live
        "PATCH /api/v1/namespaces/app-staging",
        &format!("PATCH {NS}/serviceaccounts/app"),
        &format!("PATCH {NS}/configmaps/app-config"),
        &format!("PATCH {NS}/services/app"), // still on blue
        &format!("PATCH {NS}/services/app-preview"),
        &format!("PATCH {APPS}/deployments/app-green"),
        "PATCH /apis/policy/v1/namespaces/app-staging/poddisruptionbudgets/app",
        &format!("PATCH {hpa}"),
        "PATCH /apis/networking.k8s.io/v1/namespaces/app-staging/ingresses/app",
        "PATCH /apis/networking.k8s.io/v1/namespaces/app-staging/networkpolicies/app",
        &format!("GET {APPS}/deployments/app-green"),
        &format!("GET {APPS}/deployments/app-green"),
        &format!("PATCH {NS}/services/app"), // the switch
        &format!("PATCH {hpa}"),
        &format!("PATCH {APPS}/deployments/app-blue"), // scaled to 0
        &format!("PATCH {APPS}/deployments/app"),      // none here: 404
        &format!("PUT {HISTORY}"),
        &format!("GET {LEASE}"),
        &format!("DELETE {LEASE}"),
    ]);
    assert_eq!(lines(&s.fake.take_calls()), expected);
    assert_eq!(colour_of(&s, "app"), "green");
    assert_eq!(colour_of(&s, "app-preview"), "green");
    assert_eq!(replicas(&s, "app-blue"), 0);
    assert_eq!(replicas(&s, "app-green"), 2);
    let scaler = s.fake.get(hpa).unwrap();
    assert_eq!(scaler["spec"]["scaleTargetRef"]["name"], "app-green");
    assert!(s.fake.get(&format!("{APPS}/deployments/app")).is_none());
    let green = s
        .fake
        .get(&format!("{APPS}/deployments/app-green"))
        .unwrap();
    assert_eq!(
        green["spec"]["selector"]["matchLabels"]["xtask.colour"],
        "green"
    );
}

#[tokio::test]
async fn blue_green_switches_back_when_the_gate_fails_after_the_switch() {
    let (url, code) = gate_server().await;
    let s = setup(Some(&url)).await;
    assert!(blue_green(&s, "xtask-app:1.0.0").await.succeeded);
    s.fake.take_calls();
    code.store(503, Ordering::SeqCst);
    let report = blue_green(&s, "xtask-app:2.0.0").await;
    assert!(!report.succeeded);
    assert!(report
        .release
        .reason
        .as_deref()
        .unwrap()
        .contains("HTTP 503"));
    let made = lines(&s.fake.take_calls());
    let switch = made
        .iter()
        .rposition(|c| c == &format!("PATCH {NS}/services/app"))
        .unwrap();
    assert_eq!(
        made[switch - 3..],
        calls(&[
            &format!("PATCH {NS}/services/app"), // to green
            "PATCH /apis/autoscaling/v2/namespaces/app-staging/horizontalpodautoscalers/app",
            &format!("GET {NS}/pods"), // the failing release's pods: all ready here
            &format!("PATCH {NS}/services/app"), // back to blue
            "PATCH /apis/autoscaling/v2/namespaces/app-staging/horizontalpodautoscalers/app",
            &format!("PATCH {APPS}/deployments/app-green"), // scaled to 0
            &format!("PUT {HISTORY}"),
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"),
        ])[..]
    );
    assert_eq!(colour_of(&s, "app"), "blue");
    assert_eq!(replicas(&s, "app-green"), 0);
    assert_eq!(
        replicas(&s, "app-blue"),
        2,
        "the live colour was never touched"
    );
    let h = history(&s);
    assert_eq!(h.active().unwrap().id, "r1");
    assert_eq!(h.get("r2").unwrap().outcome, Outcome::Failed);
}
