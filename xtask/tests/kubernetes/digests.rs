//! A release records the digest its pods pulled (`status.containerStatuses
//! [].imageID`), and a rollback to it applies that digest, not its tag: a
//! tag moved since cannot change what a rollback runs.
use super::*;

const PULLED: &str = "4b7ef1e5c9e2a5f3e3f0a3a8f5d1c2b4a6e8d0c2b4a6e8d0c2b4a6e8d0c2b4a6";

/// A pod of `release` whose app container runs `image_id`, as the kubelet reports it.
fn pod(s: &Setup, name: &str, release: &str, image_id: &str) {
    s.fake.insert(
        &format!("{NS}/pods/{name}"),
        json!({ "metadata": { "name": name, "labels": { "xtask.release": release } },
            "spec": { "containers": [{ "name": "app", "image": "ignored" }] },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }],
                "containerStatuses": [{ "name": "app", "image": "xtask-app:x", "imageID": image_id,
                    "ready": true, "restartCount": 0 }] } }),
    );
}

#[tokio::test]
async fn a_rollback_applies_the_digest_the_release_pulled_not_its_tag() {
    let s = setup(None).await;
    // dockershim's form and containerd's, naming the same digest.
    pod(
        &s,
        "app-1-a",
        "r1",
        &format!("docker-pullable://xtask-app@sha256:{PULLED}"),
    );
    pod(&s, "app-1-b", "r1", &format!("xtask-app@sha256:{PULLED}"));
    // r2's pods disagree (a tag pushed again while they started): no digest is recorded.
    pod(&s, "app-2-a", "r2", &format!("xtask-app@sha256:{PULLED}"));
    pod(
        &s,
        "app-2-b",
        "r2",
        &format!("xtask-app@sha256:{}", "0".repeat(64)),
    );
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    assert!(deploy(&s, "xtask-app:2.0.0", &[]).await.succeeded);
    let pinned = format!("xtask-app@sha256:{PULLED}");
    let h = history(&s);
    let r1 = h.get("r1").unwrap();
    assert_eq!(
        (r1.image.as_str(), r1.image_id.as_str()),
        ("xtask-app:1.0.0", pinned.as_str())
    );
    assert_eq!(
        h.get("r2").unwrap().image_id,
        "",
        "pods that disagree pin nothing"
    );
    s.fake.take_calls();

    // xtask-app:1.0.0 has been pushed again since: the rollback must not run it.
    let report = deploy::run(
        &s.target,
        &s.env,
        Source::Restore { to: None },
        &options("rollback"),
    )
    .await
    .unwrap();
    assert!(report.succeeded, "{:?}", report.release.reason);
    let made = s.fake.take_calls();
    let apply = made
        .iter()
        .find(|c| c.method == "PATCH" && c.path == format!("{APPS}/deployments/app"))
        .unwrap();
    let template = &apply.body["spec"]["template"];
    assert_eq!(template["spec"]["containers"][0]["image"], pinned.as_str());
    assert_eq!(
        template["metadata"]["labels"]["app.kubernetes.io/version"], "1.0.0",
        "the label still names the tag"
    );
    let r3 = history(&s).get("r3").unwrap().clone();
    assert_eq!(r3.restores.as_deref(), Some("r1"));
    assert_eq!(
        (r3.image.as_str(), r3.image_id.as_str()),
        ("xtask-app:1.0.0", pinned.as_str())
    );
}
