//! `docker system prune -f` and `docker container prune -f` between deploys
//! and during one: what a well-meaning operator (or a cron job) runs on a
//! full disk.
use std::time::{Duration, Instant};

use crate::support::deploy_env::outcome_of;
use crate::{figure, instances, load_against, lock_is_free, setup, wait_for_lock};

/// `docker ARGS` against this checkout's engine (never another one).
async fn docker_cli(args: &[&str]) -> String {
    let (_, state) = crate::support::docker().await;
    let host = state
        .expect("the engine `cargo xtask engine start` recorded for this checkout")
        .docker_host;
    let out = std::process::Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", &host)
        .output()
        .expect("running the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn prune_both() {
    docker_cli(&["container", "prune", "-f"]).await;
    docker_cli(&["system", "prune", "-f"]).await;
}

fn ids(history: &serde_json::Value) -> Vec<(String, String)> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Expected between deploys (two releases recorded, keep-alive load on):
/// both prunes leave the history (a named volume per record) and the free
/// lock as they were, and what serves serves on: no failed request. A
/// rollback afterwards restores r1 under load without a failed request.
/// During a deploy (both prunes every 200 ms from the lock taken to the
/// deploy's end): the deploy either succeeds (its release active) or fails
/// and is undone (recorded failed, the previous release serving alone);
/// either way the lock is released, nothing is left in progress, and
/// rollback still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_between_and_during_deploys_keeps_history_lock_and_rollback() {
    let (_serial, v1, v2, env) = setup("prune", 2000).await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    assert!(env.xtask_json(&["deploy", "--image", &v2]).0);
    let (_, before, _) = env.xtask_json(&["history"]);

    let load = load_against(&env).await;
    let pruned = Instant::now();
    prune_both().await;
    let prune_took = pruned.elapsed();
    let (_, after, _) = env.xtask_json(&["history"]);
    assert_eq!(
        ids(&after),
        ids(&before),
        "the history survives both prunes"
    );
    assert!(lock_is_free(&env).await);
    let (ok, back, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "rollback after prune: {stderr}");
    assert_eq!(back["release"]["restores"], "r1", "{back}");
    let between = load.stop().await;
    assert_eq!(between.failed, 0, "{:?}", between.errors);
    assert_eq!(instances(&env).await, vec![("r3".to_owned(), true); 3]);

    let load = load_against(&env).await;
    let mut deploy = env.spawn_deploy(&v2);
    wait_for_lock(&env).await;
    let mut prunes = 0;
    while deploy.try_wait().unwrap().is_none() {
        prune_both().await;
        prunes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tokio::task::block_in_place(|| deploy.wait_with_output()).unwrap();
    let during = load.stop().await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let outcome = report["release"]["outcome"].as_str().unwrap().to_owned();
    assert_eq!(report["release"]["id"], "r4");
    let (_, history, _) = env.xtask_json(&["history"]);
    let (_, status, _) = env.xtask_json(&["status"]);
    assert!(status["in_progress"].is_null(), "{status}");
    assert!(lock_is_free(&env).await, "lock released");
    let serving = if out.status.success() {
        assert_eq!(outcome, "active");
        "r4"
    } else {
        assert_eq!(outcome_of(&history, "r4").0, "failed", "{history}");
        assert_eq!(outcome_of(&history, "r3").0, "active", "{history}");
        "r3"
    };
    assert_eq!(instances(&env).await, vec![(serving.to_owned(), true); 3]);
    assert_eq!(during.failed, 0, "{:?}", during.errors);

    let (ok, back, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "rollback after prunes during a deploy: {stderr}");
    assert_eq!(back["release"]["id"], "r5");

    let t = "prune";
    figure(
        t,
        "both prunes (between deploys)",
        format!("{:.2}s", prune_took.as_secs_f64()),
    );
    figure(
        t,
        "between: prune + rollback under load",
        format!("{} ok, {} failed", between.ok, between.failed),
    );
    figure(t, "during: prunes while the deploy ran", prunes);
    figure(
        t,
        "during: deploy outcome",
        format!("{outcome} ({})", report["release"]["reason"]),
    );
    figure(
        t,
        "during: load",
        format!("{} ok, {} failed", during.ok, during.failed),
    );
}
