use super::*;

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
        renewed: None,
    };
    s.fake.insert(LEASE, lease(&other));
    let source = Source::Image {
        image: "xtask-app:1.0.0".into(),
        overrides: BTreeMap::new(),
    };
    let err = deploy::run(&s.target, &s.env, source, &options("deploy"))
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
    let stale = super::stale_lock();
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
        xtask::deploy::release::deployer()
    );
}

#[tokio::test]
async fn a_lease_made_by_another_tool_expires_by_its_own_renew_time() {
    let s = setup(None).await;
    // No xtask annotation: holder and expiry come from the Lease's own fields.
    s.fake.insert(
        LEASE,
        json!({ "metadata": { "name": "app-kt-deploy-lock" },
            "spec": { "holderIdentity": "some-operator", "leaseDurationSeconds": 60,
                "renewTime": "2020-01-01T00:00:00.000000Z" } }),
    );
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    let made = s.fake.take_calls();
    assert_eq!(
        lines(&made[..4]),
        calls(&[
            &format!("POST {LEASES}"),
            &format!("GET {LEASE}"),
            &format!("DELETE {LEASE}"),
            &format!("POST {LEASES}"),
        ])
    );
    let acquired = made[3].body["spec"]["acquireTime"].as_str().unwrap();
    assert!(
        acquired.starts_with("20") && acquired.ends_with('Z'),
        "{acquired}"
    );
}
