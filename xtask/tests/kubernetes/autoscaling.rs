//! spec.replicas and the HorizontalPodAutoscaler: the staging overlay's HPA
//! (minReplicas 2) scales the Deployment, so the applies leave the count to
//! it; the fixture overlay without one gets `deploy.replicas` applied.
use super::*;

/// The PATCHes of one Deployment (server-side applies and handovers), in order.
fn patches_of(made: &[Call], deployment: &str) -> Vec<Call> {
    let path = format!("{APPS}/deployments/{deployment}");
    made.iter()
        .filter(|c| c.method == "PATCH" && c.path == path)
        .cloned()
        .collect()
}

fn stored_replicas(s: &Setup, deployment: &str) -> serde_json::Value {
    s.fake
        .get(&format!("{APPS}/deployments/{deployment}"))
        .unwrap()["spec"]["replicas"]
        .clone()
}

#[tokio::test]
async fn with_an_hpa_the_apply_leaves_replicas_to_it_and_the_rollout_waits_for_its_count() {
    let mut s = setup(None).await;
    s.env.file.deploy.replicas = 4; // the file's number: the HPA decides instead
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    let created = patches_of(&s.fake.take_calls(), "app");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].body["spec"]["replicas"], 2,
        "created at the HPA's minReplicas, not 1 and not the file's 4"
    );
    assert_eq!(history(&s).get("r1").unwrap().replicas, 2);

    // r1's apply made xtask the owner of spec.replicas: leaving it out now would reset it to 1.
    assert!(deploy(&s, "xtask-app:2.0.0", &[]).await.succeeded);
    let made = patches_of(&s.fake.take_calls(), "app");
    assert_eq!(made.len(), 2, "a handover, then the apply");
    assert!(
        made[0].query.contains("fieldManager=xtask-hpa-handover")
            && !made[0].query.contains("force"),
        "{}",
        made[0].query
    );
    assert_eq!(made[0].body["spec"], json!({ "replicas": 2 }));
    assert!(
        made[1].query.ends_with("fieldManager=xtask") && made[1].query.contains("force=true"),
        "{}",
        made[1].query
    );
    assert!(
        made[1].body["spec"].get("replicas").is_none(),
        "{}",
        made[1].body["spec"]
    );
    assert_eq!(stored_replicas(&s, "app"), 2, "kept, not defaulted to 1");

    // The HPA scales up under load; the next deploy neither undoes it nor hands over again.
    s.fake.autoscale(&format!("{APPS}/deployments/app"), 5);
    let report = deploy(&s, "xtask-app:3.0.0", &[]).await;
    assert!(report.succeeded, "{:?}", report.release.reason);
    let made = patches_of(&s.fake.take_calls(), "app");
    assert_eq!(made.len(), 1);
    assert!(made[0].body["spec"].get("replicas").is_none());
    assert_eq!(
        stored_replicas(&s, "app"),
        5,
        "the HPA's count survives the deploy"
    );
    // What the gate waited for (the rollout itself is judged on the live spec.replicas).
    assert_eq!(history(&s).get("r3").unwrap().replicas, 5);
}

#[tokio::test]
async fn without_an_hpa_the_file_count_is_applied_every_time() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = environment(dir.path(), None, "staging");
    kube_config(&mut env).overlay = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubernetes/no-hpa"),
    );
    env.file.deploy.replicas = 4;
    let s = Setup::on(fake, env, dir).await;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    // Someone scales it by hand: the overlay (and deploy.replicas) is the source of truth.
    s.fake.autoscale(&format!("{APPS}/deployments/app"), 7);
    s.fake.take_calls();
    assert!(deploy(&s, "xtask-app:2.0.0", &[]).await.succeeded);
    let made = s.fake.take_calls();
    assert_eq!(
        lines(&made[..4]),
        calls(&[
            &format!("POST {LEASES}"),
            &format!("GET {HISTORY}"),
            &format!("PUT {HISTORY}"), // nothing read for a count: the file's is used
            &format!("GET {APPS}/deployments/app"),
        ])
    );
    let applied = patches_of(&made, "app");
    assert_eq!(applied.len(), 1, "no handover");
    assert_eq!(applied[0].body["spec"]["replicas"], 4);
    assert_eq!(stored_replicas(&s, "app"), 4);
    assert_eq!(history(&s).get("r2").unwrap().replicas, 4);
}

#[tokio::test]
async fn blue_green_starts_the_new_colour_at_the_count_the_hpa_gave_the_live_one() {
    let mut s = setup(None).await;
    s.env.file.deploy.replicas = 4;
    assert!(
        super::blue_green::blue_green(&s, "xtask-app:1.0.0")
            .await
            .succeeded
    );
    assert_eq!(stored_replicas(&s, "app-blue"), 2, "the HPA's minReplicas");
    s.fake.autoscale(&format!("{APPS}/deployments/app-blue"), 5);
    s.fake.take_calls();
    let report = super::blue_green::blue_green(&s, "xtask-app:2.0.0").await;
    assert!(report.succeeded, "{:?}", report.release.reason);
    // The colour being filled is not the HPA's target yet: its count is applied, the live one's.
    let green = patches_of(&s.fake.take_calls(), "app-green");
    assert_eq!(green[0].body["spec"]["replicas"], 5);
    assert_eq!(history(&s).get("r2").unwrap().replicas, 5);
    let hpa = "/apis/autoscaling/v2/namespaces/app-staging/horizontalpodautoscalers/app";
    assert_eq!(
        s.fake.get(hpa).unwrap()["spec"]["scaleTargetRef"]["name"],
        "app-green"
    );
    assert_eq!(stored_replicas(&s, "app-blue"), 0);
}

/// `deploy --dry-run` shows the count the deploy would run, the HPA's, not the file's.
#[tokio::test]
async fn the_dry_run_plan_shows_the_count_the_hpa_runs() {
    use xtask::targets::Target;
    let mut s = setup(None).await;
    s.env.file.deploy.replicas = 4;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    s.fake.autoscale(&format!("{APPS}/deployments/app"), 5);
    s.fake.take_calls();
    let mut release = History::default().begin_preview("xtask-app:2.0.0");
    release.replicas = 4;
    let plan = s.target.plan(&release).await.unwrap();
    let deployment = plan["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_eq!(plan["replicas"], 5);
    assert!(
        s.fake.take_calls().iter().all(|c| c.method == "GET"),
        "a plan changes nothing"
    );
    assert_eq!(stored_replicas(&s, "app"), 5);
}
