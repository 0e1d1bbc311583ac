//! Releases that never get ready, crash, or flap: rolled back and recorded.
use std::time::Duration;

use serde_json::Value;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_crashing_and_flapping_releases_roll_back_and_are_recorded_failed() {
    let (_serial, v1, v2, env) = setup("sw-bad", "rolling", "update_delay_seconds = 1").await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let target = env.swarm_target().await;

    let load = load_against(&env).await;
    let before = load.ok_so_far();
    let (ok, never_ready, _) = env.xtask_json(&[
        "deploy",
        "--image",
        &v2,
        "--env",
        "DATABASE_URL=postgres://127.0.0.1:1/x",
    ]);
    assert!(!ok, "a release that never gets ready must exit non-zero");
    let reason = never_ready["release"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 503") || reason.contains("rolled service"),
        "{never_ready}"
    );
    assert!(
        never_ready["failure_logs"]
            .as_str()
            .unwrap_or_default()
            .contains("start-up check failed")
            || reason.contains("rolled service"),
        "{never_ready}"
    );
    assert_eq!(running(&target).await, all("blue", "r1"));

    let (ok, crashing, _) = env.xtask_json(&["deploy", "--image", &v2, "--env", "PORT=abc"]);
    assert!(!ok);
    let reason = crashing["release"]["reason"].as_str().unwrap();
    // Our gate ("exited with code 2") or swarm's own rollback ("exit code 2")
    // may see the dead task first; either way the reason names the exit code.
    assert!(reason.contains("code 2"), "{reason}");
    assert!(
        crashing["failure_logs"]
            .as_str()
            .unwrap()
            .contains("PORT=abc: not a port number"),
        "{crashing}"
    );
    assert_eq!(running(&target).await, all("blue", "r1"));
    assert!(
        load.ok_so_far() > before + 100,
        "load ran during both failed deploys"
    );
    let report = load.stop().await;
    assert_eq!(
        report.failed, 0,
        "the previous release kept serving: {:?}",
        report.errors
    );

    // A task that passed readiness and then dies (killed here) is a flap: the
    // gate fails the release on it, whatever swarm's monitor makes of it (moby#37972).
    let flapping = env.spawn_deploy(&v2);
    let docker = support::swarm().await;
    let killed = 'kill: {
        for _ in 0..300 {
            for task in target.tasks(&target.service_name("blue")).await.unwrap() {
                if task.release == "r4" && task.running() && kill_task(&docker, &task.id).await {
                    break 'kill Some(task.id);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    };
    let killed = killed.expect("a task of r4 ran");
    let out = tokio::task::block_in_place(|| flapping.wait_with_output()).unwrap();
    let flapped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success(), "{flapped}");
    let reason = flapped["release"]["reason"].as_str().unwrap();
    // Swarm's report of the kill ("exit code 137"), our gate's sight of the
    // exit ("exited with code 137") or its failed checks of that very task
    // may come first; each names the kill or the killed task.
    assert!(
        reason.contains("exit code 137")
            || reason.contains("exited with code 137")
            || reason.contains(&killed),
        "{reason} (killed task {killed})"
    );
    assert_eq!(running(&target).await, all("blue", "r1"));

    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(outcome_of(&history, "r1").0, "active");
    for failed in ["r2", "r3", "r4"] {
        assert_eq!(outcome_of(&history, failed).0, "failed", "{history}");
    }
}
