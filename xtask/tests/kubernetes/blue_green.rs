use super::*;

pub(super) async fn blue_green(s: &Setup, image: &str) -> DeployReport {
    let source = Source::Image {
        image: image.into(),
        overrides: BTreeMap::new(),
    };
    let options = Options {
        strategy: Some(xtask::environment::Strategy::BlueGreen),
        quiet: true,
        command: "deploy".into(),
        ..Default::default()
    };
    deploy::run(&s.target, &s.env, source, &options)
        .await
        .unwrap()
}

pub(super) fn colour_of(s: &Setup, service: &str) -> serde_json::Value {
    s.fake.get(&format!("{NS}/services/{service}")).unwrap()["spec"]["selector"]["xtask.colour"]
        .clone()
}

pub(super) fn replicas(s: &Setup, deployment: &str) -> serde_json::Value {
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
        &format!("GET {NS}/services/app"), // the live colour, whose count the HPA chose
        &format!("GET {APPS}/deployments/app-blue"),
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
        &format!("GET {APPS}/deployments"), // the watcher's LIST of app-green
        &format!("GET {APPS}/deployments?watch"),
        &format!("PATCH {NS}/services/app"), // the switch
        &format!("PATCH {hpa}"),
        &format!("GET {NS}/pods"), // the digest green's pods pulled
        &format!("PUT {HISTORY}"), // verified
        &format!("PATCH {APPS}/deployments/app-blue"), // scaled to 0
        &format!("PATCH {APPS}/deployments/app"), // none here: 404
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
