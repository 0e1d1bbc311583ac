//! The deployer's Role (infrastructure/kubernetes/deployer-role.yaml) against
//! the calls the code makes. The fake API server answers 403 to any call the
//! Role does not grant, in every test here, so each scenario already proves
//! its calls are allowed; this file adds that the Role grants nothing the
//! scenarios never call, and that a Role missing a rule does fail a deploy.
use fake_kube::rbac::{access, deployer_role, grants, Access, ROLE_FILE};
use xtask::deploy::lock::LockStore;

use super::*;

fn named(list: &std::collections::BTreeSet<Access>) -> String {
    list.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn requests_are_named_as_rbac_names_them() {
    fn a(method: &str, path: &str, query: &str) -> String {
        let x = access(method, path, query);
        format!("{} {} {}", x.verb, x.group, x.resource)
    }
    assert_eq!(
        a("GET", &format!("{APPS}/deployments/app"), ""),
        "get apps deployments"
    );
    assert_eq!(
        a("GET", &format!("{APPS}/deployments"), "fieldSelector=x"),
        "list apps deployments"
    );
    assert_eq!(
        a("GET", &format!("{APPS}/deployments"), "watch=true&x=1"),
        "watch apps deployments"
    );
    assert_eq!(
        a("GET", &format!("{NS}/pods/p/log"), "tailLines=20"),
        "get  pods/log"
    );
    assert_eq!(a("PATCH", NS, "fieldManager=xtask"), "patch  namespaces");
    assert_eq!(a("POST", LEASES, ""), "create coordination.k8s.io leases");
    assert_eq!(a("PUT", HISTORY, ""), "update  configmaps");
    assert_eq!(a("DELETE", LEASE, ""), "delete coordination.k8s.io leases");
}

/// Every kind of call the target makes: a rolling deploy, a stuck rollout
/// undone (with its pods' events and logs), `rollback --to`, blue-green with a
/// retired colour, a stale Lease taken over, a renewal, and what status reads.
#[tokio::test]
async fn the_deployer_role_grants_every_call_and_nothing_else() {
    let s = setup(None).await;
    let role = deployer_role();
    for rule in role.rules.iter().flatten() {
        assert!(
            rule.resource_names.as_ref().is_none_or(|n| n.is_empty())
                && ![
                    &rule.verbs,
                    rule.resources.as_ref().unwrap(),
                    rule.api_groups.as_ref().unwrap()
                ]
                .iter()
                .any(|list| list.iter().any(|x| x == "*")),
            "{ROLE_FILE}: no wildcards or resourceNames (the fake does not model them): {rule:?}"
        );
    }
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    s.fake.insert(
        &format!("{NS}/pods/app-2-x"),
        json!({ "metadata": { "name": "app-2-x", "labels": { "xtask.release": "r2" } },
        "status": { "conditions": [{ "type": "Ready", "status": "False" }] } }),
    );
    s.fake.script(Rollout::Stuck);
    assert!(!deploy(&s, "xtask-app:2.0.0", &[]).await.succeeded);
    let restore = Source::Restore {
        to: Some("r1".into()),
    };
    let rolled = deploy::run(&s.target, &s.env, restore, &options("rollback")).await;
    assert!(rolled.unwrap().succeeded);
    assert!(
        super::blue_green::blue_green(&s, "xtask-app:3.0.0")
            .await
            .succeeded
    );
    let stale = super::stale_lock();
    s.fake.insert(LEASE, lease(&stale));
    assert!(deploy(&s, "xtask-app:4.0.0", &[]).await.succeeded);
    let token = s.target.lock_create(&stale).await.unwrap().unwrap();
    s.target.lock_renew(&token, stale.since + 10).await.unwrap();
    s.target.lock_remove(&token).await.unwrap();
    {
        use xtask::targets::Target;
        s.target.instances().await.unwrap();
    }

    let denied = s.fake.denied();
    assert!(
        denied.is_empty(),
        "{ROLE_FILE} does not allow: {}",
        named(&denied)
    );
    let asked = s.fake.asked();
    let unused: std::collections::BTreeSet<Access> =
        grants(&role).difference(&asked).cloned().collect();
    assert!(
        unused.is_empty(),
        "{ROLE_FILE} grants what no call uses: {}",
        named(&unused)
    );
}

#[tokio::test]
async fn a_role_without_a_needed_rule_fails_the_deploy_and_names_the_call() {
    let mut role = deployer_role();
    for rule in role.rules.iter_mut().flatten() {
        if rule
            .resources
            .as_ref()
            .unwrap()
            .contains(&"replicasets".to_owned())
        {
            rule.verbs.clear();
        }
    }
    let fake = FakeKube::start_with_role(&role).await;
    let dir = tempfile::tempdir().unwrap();
    let env = environment(dir.path(), None, "staging");
    let s = Setup::on(fake, env, dir).await;
    assert!(deploy(&s, "xtask-app:1.0.0", &[]).await.succeeded);
    s.fake.script(Rollout::Stuck);
    let report = deploy(&s, "xtask-app:2.0.0", &[]).await;
    assert!(!report.succeeded);
    let reason = report.release.reason.unwrap_or_default();
    assert!(
        reason.contains("cannot list resource \"replicasets\""),
        "{reason}"
    );
    assert_eq!(
        named(&s.fake.denied()),
        "list replicasets (apiGroup \"apps\")"
    );
}
