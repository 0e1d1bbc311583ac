use super::*;

#[tokio::test]
async fn rolling_deploy_applies_the_overlay_waits_for_the_rollout_and_records_it() {
    let s = setup(None).await;
    let report = deploy(&s, "xtask-app:1.0.0", &[]).await;
    assert!(report.succeeded, "{:?}", report.release.reason);
    let mut expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("GET {APPS}/deployments/app"), // the HPA's count: no Deployment yet
        &format!("POST {NS}/configmaps"),
        &format!("GET {APPS}/deployments/app"),
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments"), // the watcher's LIST: stale, observedGeneration behind
        &format!("GET {APPS}/deployments?watch"), // MODIFIED: complete
        &format!("GET {NS}/pods"),          // the digest its pods pulled: none here
        &format!("PUT {HISTORY}"), // verified: a later run finishes it should the last write fail
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
    // The watcher lists the one Deployment by name, then watches from that list's resourceVersion.
    let w = made
        .iter()
        .position(|c| c.query.contains("watch=true"))
        .unwrap();
    let (list, watch) = (&made[w - 1], &made[w]);
    for c in [list, watch] {
        assert!(
            c.query.contains("fieldSelector=metadata.name%3Dapp"),
            "{}",
            c.query
        );
    }
    assert!(
        watch.query.contains("watch=true") && watch.query.contains("resourceVersion="),
        "{}",
        watch.query
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
    // The overlay's HPA scales it: a new Deployment starts at its minReplicas.
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
        &[("DATABASE_URL", "postgres://u@127.0.0.1:1/x")],
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
        &format!("GET {APPS}/deployments/app"), // the count the HPA runs
        &format!("PUT {HISTORY}"),
        &format!("GET {APPS}/deployments/app"),
        // r1 created it with spec.replicas: handed over before the apply leaves it out.
        &format!("PATCH {APPS}/deployments/app"),
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments"),
        &format!("GET {APPS}/deployments?watch"), // MODIFIED: ProgressDeadlineExceeded
        &format!("GET {NS}/pods"),
        &format!("GET {NS}/events"),
        &format!("GET {NS}/pods/app-2-x/log"),
        &format!("GET {APPS}/deployments/app"), // has the apply made a new revision?
        &format!("GET {APPS}/replicasets"),
        &format!("PATCH {APPS}/deployments/app"), // revision 1's template again
        &format!("GET {APPS}/deployments"),
        &format!("GET {APPS}/deployments?watch"),
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
        reason.contains("during verification")
            && reason.contains("HTTP 503")
            && reason.contains("/ready"),
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
    let report = deploy::run(&s.target, &s.env, source, &options("rollback"))
        .await
        .unwrap();
    assert!(report.succeeded);
    let mut expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("GET {APPS}/deployments/app"), // the count the HPA runs
        &format!("PUT {HISTORY}"),
        &format!("GET {APPS}/deployments/app"), // no handover: r2 did it
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments"),
        &format!("GET {APPS}/deployments?watch"),
        &format!("GET {NS}/pods"), // the digest its pods pulled
        &format!("PUT {HISTORY}"),
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
    let err = deploy::run(
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
        kube_config(&mut env).namespace = Some(namespace.into());
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
async fn the_rollout_watch_fails_at_once_without_the_deployment_and_at_the_deadline_without_progress(
) {
    use std::time::{Duration, Instant};
    let s = setup(None).await;
    let started = Instant::now();
    let missing = s
        .target
        .wait_rollout("app", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(missing.contains("not found"), "{missing}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the deadline"
    );
    // No controller script for it: the LIST and the one watch event carry no status, then the stream idles.
    let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "app", "generation": 1 },
        "spec": { "replicas": 2, "selector": {}, "template": {} } });
    s.fake
        .insert(&format!("{APPS}/deployments/app"), deployment);
    let late = s
        .target
        .wait_rollout("app", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        late.contains("not complete after 1s") && late.contains("no status yet"),
        "{late}"
    );
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[
            &format!("GET {APPS}/deployments"), // empty: not found
            &format!("GET {APPS}/deployments"),
            &format!("GET {APPS}/deployments?watch"),
        ])
    );
}
