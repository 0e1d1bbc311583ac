//! Lowering `deploy.replicas` between deploys.
//!
//! Expected: after a deploy with 3 replicas, a rolling deploy with 2 leaves
//! exactly 2 instances, both of the new release and in traffic, and a
//! blue-green deploy with 1 leaves exactly 1: no instance of an older
//! release keeps running outside the balancer.
use xtask::targets::Target;

use crate::setup;

async fn running(env: &crate::support::deploy_env::TestEnv) -> Vec<(String, bool)> {
    let mut seen: Vec<(String, bool)> = env
        .target()
        .await
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.release, i.traffic.is_some_and(|t| t > 0.0)))
        .collect();
    seen.sort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_replicas_leaves_only_the_new_count_running() {
    let (_serial, v1, v2, env) = setup("replicas", 0).await;
    let (docker, _) = crate::support::docker().await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    assert_eq!(running(&env).await.len(), 3);

    for (from, to, image, strategy, id) in [
        (3, 2, &v2, "rolling", "r2"),
        (2, 1, &v1, "blue-green", "r3"),
    ] {
        env.edit(&format!("replicas = {from}"), &format!("replicas = {to}"));
        let (ok, out, stderr) =
            env.xtask_json(&["deploy", "--image", image, "--strategy", strategy]);
        assert!(ok, "{out}\n{stderr}");
        assert_eq!(
            running(&env).await,
            vec![(id.to_owned(), true); to],
            "{strategy} {from} -> {to}"
        );
        // Stopped ones too: the engine holds nothing of an older release.
        let containers = env.containers(&docker, Some("instance")).await;
        let names: Vec<_> = containers.iter().map(|c| c.names.clone()).collect();
        assert_eq!(
            containers.len(),
            to,
            "instance containers on the engine: {names:?}"
        );
    }
}
