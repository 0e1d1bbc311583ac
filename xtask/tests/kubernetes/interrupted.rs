//! A deploy process that died mid-run (kill -9, a lost runner): its release
//! is left in progress, its Lease expires with a pid that is gone, and the
//! cluster stays as it stood. The next command, in a fresh process with a
//! fresh target, closes the release and repairs the cluster from what the
//! cluster and the history say.
use xtask::{
    deploy::release::Release,
    environment::Strategy,
    targets::{Split, Target},
};

use super::{
    blue_green::{blue_green, colour_of, replicas},
    *,
};

/// A target as a new process makes it: no run state of its own.
async fn fresh(s: &Setup) -> KubeTarget {
    KubeTarget::from_kubeconfig_file(&s.env, &s.fake.kubeconfig, None)
        .await
        .unwrap()
}

/// The start of the run that dies: `image` recorded in progress by its own
/// target, and its Lease, whose holder's pid is gone and whose ttl has passed.
async fn dying_run(s: &Setup, image: &str, strategy: Strategy) -> (KubeTarget, Release) {
    let dead = fresh(s).await;
    let mut history = dead.read_history().await.unwrap();
    let options = Options {
        strategy: Some(strategy),
        ..options("deploy")
    };
    let source = Source::Image {
        image: image.into(),
        overrides: BTreeMap::new(),
    };
    let mut release = deploy::draft_release(&s.env, &history, source, &options).unwrap();
    dead.admit(&mut release).await.unwrap();
    let id = history.begin(release);
    dead.write_history(&history).await.unwrap();
    let holder = LockInfo {
        holder: "ci-runner".into(),
        host: xtask::deploy::release::hostname(),
        pid: u32::MAX - 1,
        since: chrono::Utc::now().timestamp() - 2000,
        ttl_seconds: 900,
        command: "deploy".into(),
        renewed: None,
    };
    s.fake.insert(LEASE, lease(&holder));
    let release = history.get(&id).unwrap().clone();
    (dead, release)
}

#[tokio::test]
async fn status_after_a_blue_green_run_died_switched_puts_the_service_back_on_the_active_colour() {
    let s = setup(None).await;
    assert!(blue_green(&s, "xtask-app:1.0.0").await.succeeded);
    assert!(blue_green(&s, "xtask-app:2.0.0").await.succeeded);
    assert_eq!(colour_of(&s, "app"), "green", "r2 serves on green");
    let (dead, r3) = dying_run(&s, "xtask-app:3.0.0", Strategy::BlueGreen).await;
    dead.prepare(&r3).await.unwrap();
    dead.start(&r3, r3.replicas).await.unwrap();
    dead.shift(&Split::all(&r3.id)).await.unwrap();
    drop(dead); // killed here: switched, never verified
    assert_eq!(colour_of(&s, "app"), "blue", "the unverified r3 serves");
    s.fake.take_calls();

    let recovered = deploy::recover_if_abandoned(&fresh(&s).await, &s.env, true)
        .await
        .unwrap();
    assert!(recovered);
    let hpa = "/apis/autoscaling/v2/namespaces/app-staging/horizontalpodautoscalers/app";
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[
            &format!("GET {HISTORY}"), // an in-progress release...
            &format!("GET {LEASE}"),   // ...and a Lease of a dead, expired holder
            &format!("POST {LEASES}"),
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"), // taken over
            &format!("POST {LEASES}"),
            &format!("GET {HISTORY}"),
            &format!("PUT {HISTORY}"),         // r3 closed as interrupted
            &format!("GET {NS}/services/app"), // live: blue
            &format!("GET {APPS}/deployments/app-blue"), // runs r3
            &format!("GET {APPS}/deployments/app-green"), // runs r2, the active release
            &format!("PATCH {NS}/services/app"), // back to green
            &format!("PATCH {hpa}"),
            &format!("PATCH {APPS}/deployments/app-blue"), // r3's colour to 0
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"),
        ])
    );
    assert_eq!(colour_of(&s, "app"), "green");
    assert_eq!(replicas(&s, "app-blue"), 0);
    assert_eq!(
        replicas(&s, "app-green"),
        2,
        "the active colour is untouched"
    );
    assert_eq!(
        s.fake.get(hpa).unwrap()["spec"]["scaleTargetRef"]["name"],
        "app-green"
    );
    let h = history(&s);
    assert_eq!(h.active().unwrap().id, "r2");
    let r3 = h.get("r3").unwrap();
    assert_eq!(r3.outcome, Outcome::Failed);
    assert!(
        r3.reason.as_deref().unwrap().contains("interrupted"),
        "{r3:?}"
    );
    assert!(s.fake.get(LEASE).is_none(), "the lock is released");

    // Repaired once: the next look finds nothing abandoned and changes nothing.
    assert!(
        !deploy::recover_if_abandoned(&fresh(&s).await, &s.env, true)
            .await
            .unwrap()
    );
    assert_eq!(
        lines(&s.fake.take_calls()),
        calls(&[&format!("GET {HISTORY}"), &format!("GET {LEASE}")])
    );
}

#[tokio::test]
async fn a_deploy_after_a_rolling_run_died_half_rolled_reapplies_the_active_release_first() {
    let s = setup(None).await;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    assert!(
        deploy(&s, "xtask-app:2.0.0", &[("FEATURE", "two")])
            .await
            .succeeded
    );
    let (dead, r3) = dying_run(&s, "xtask-app:3.0.0", Strategy::Rolling).await;
    dead.prepare(&r3).await.unwrap();
    dead.replace(&r3).await.unwrap();
    drop(dead); // killed during the rollout of r3
    let template = &applied_deployment(&s)["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["xtask.release"], "r3");
    s.fake.take_calls();

    let source = Source::Image {
        image: "xtask-app:4.0.0".into(),
        overrides: BTreeMap::new(),
    };
    let report = deploy::run(&fresh(&s).await, &s.env, source, &options("deploy"))
        .await
        .unwrap();
    assert!(report.succeeded, "{:?}", report.release.reason);
    let made = s.fake.take_calls();
    let mut expected = calls(&[
        &format!("POST {LEASES}"),
        &format!("GET {LEASE}"),
        &format!("DELETE {LEASE}"),
        &format!("POST {LEASES}"),
        &format!("GET {HISTORY}"),
        &format!("PUT {HISTORY}"),              // r3 closed as interrupted
        &format!("GET {NS}/services/app"),      // no colour: rolling
        &format!("GET {APPS}/deployments/app"), // its template runs r3, not r2
        &format!("GET {APPS}/deployments/app"), // r2 prepared as a rollback prepares it
    ]);
    expected.extend(applies());
    expected.extend(calls(&[
        &format!("GET {APPS}/deployments"), // r2's rollout, gated
        &format!("GET {APPS}/deployments?watch"),
        &format!("GET {APPS}/deployments/app"), // then r4's own deploy: the HPA's count
    ]));
    assert_eq!(lines(&made[..expected.len()]), expected);
    let repair = made
        .iter()
        .find(|c| c.method == "PATCH" && c.path == format!("{APPS}/deployments/app"))
        .unwrap();
    let template = &repair.body["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["image"], "xtask-app:2.0.0");
    assert_eq!(template["metadata"]["labels"]["xtask.release"], "r2");
    assert!(container["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "FEATURE" && v["value"] == "two"));
    let h = history(&s);
    assert_eq!(h.get("r3").unwrap().outcome, Outcome::Failed);
    assert_eq!(h.get("r2").unwrap().outcome, Outcome::Superseded);
    assert_eq!(h.active().unwrap().id, "r4");
}
