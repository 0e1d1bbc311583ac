//! rollback from fresh processes with Docker secrets, the lock and kill -9, route.
use std::time::Duration;

use serde_json::Value;

use super::*;

/// The value of `name` in each wanted task's environment, from the service spec.
async fn service_env(target: &SwarmTarget, colour: &str) -> Vec<String> {
    let service = target
        .inspect_service(&target.service_name(colour))
        .await
        .unwrap()
        .unwrap();
    service
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.container_spec)
        .and_then(|c| c.env)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_rollback_to_from_a_fresh_process_with_secrets_as_docker_secrets() {
    let (_serial, v1, v2, env) = setup("sw-back", "rolling", "").await;
    // Redis down only degrades the app, so a real URL with a password is enough here.
    let password = "rds-pass-5521-secret";
    env.append("[app.secrets]\nREDIS_URL = \"env:SWARM_TEST_REDIS_URL\"\n");
    // SAFETY: set before any deploy runs; the child processes inherit it.
    unsafe {
        std::env::set_var(
            "SWARM_TEST_REDIS_URL",
            format!("redis://:{password}@127.0.0.1:1/0"),
        )
    };
    assert!(
        env.xtask_json(&["deploy", "--image", &v1, "--env", "GREETING=one"])
            .0
    );
    let (ok, second, stderr) = env.xtask_json(&["deploy", "--image", &v2, "--env", "GREETING=two"]);
    assert!(ok, "{second} {stderr}");
    let target = env.swarm_target().await;
    let spec_env = service_env(&target, "blue").await;
    assert!(
        spec_env.contains(&"GREETING=two".to_owned()),
        "{spec_env:?}"
    );
    assert!(
        spec_env.contains(&"REDIS_URL_FILE=/run/secrets/REDIS_URL".to_owned()),
        "{spec_env:?}"
    );
    let spec = serde_json::to_string(
        &target
            .inspect_service(&target.service_name("blue"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        !spec.contains(password),
        "the secret is not in the service spec"
    );
    // The app read it from the secret file: /health/detailed reports the Redis check.
    let client = target.public_client().unwrap();
    let detailed: Value = client
        .get(format!("{}/health/detailed", env.public_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(detailed["checks"]["redis"].is_object(), "{detailed}");
    assert!(!detailed.to_string().contains(password));

    // Each command is a new process with no local state: everything comes from the swarm.
    let (ok, back, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (
            back["release"]["restores"].as_str(),
            back["release"]["image"].as_str()
        ),
        (Some("r1"), Some(v1.as_str()))
    );
    assert!(service_env(&target, "blue")
        .await
        .contains(&"GREETING=one".to_owned()));
    assert_eq!(running(&target).await, all("blue", "r3"));

    let (ok, forward, stderr) = env.xtask_json(&["rollback", "--to", "r2"]);
    assert!(ok, "{stderr}");
    assert_eq!(forward["release"]["image"], v2.as_str());
    assert!(service_env(&target, "blue")
        .await
        .contains(&"GREETING=two".to_owned()));
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(
        outcome_of(&history, "r3"),
        ("rolled-back".to_owned(), "rolled back to r2".to_owned())
    );
    for command in [["history"], ["status"]] {
        let (ok, shown, _) = env.xtask_json(&command);
        assert!(ok);
        assert!(
            !shown.to_string().contains(password),
            "{command:?} printed the secret"
        );
    }
    let (ok, health, stderr) = env.xtask_json(&["health"]);
    assert!(ok && health["healthy"] == true, "{health} {stderr}");
    let missing = env.xtask(&["rollback", "--to", "r99"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && stderr.contains("--to r99: no such release"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploy_is_refused_and_a_killed_update_is_cleaned_up_before_a_clean_deploy() {
    // Two seconds between tasks: time to act while swarm is mid-update.
    let (_serial, v1, v2, env) = setup("sw-lock", "rolling", "update_delay_seconds = 2").await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let target = env.swarm_target().await;

    let mut first = env.spawn_deploy(&v2);
    let mut updating = false;
    for _ in 0..300 {
        let service = target
            .inspect_service(&target.service_name("blue"))
            .await
            .unwrap()
            .unwrap();
        if release_of(&service).as_deref() == Some("r2") {
            updating = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(updating, "the deploy started swarm's update");
    let second = env.xtask(&["deploy", "--image", &v2]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("is locked by") && stderr.contains(&format!("pid {}", first.id())),
        "{stderr}"
    );

    // kill -9 mid-update: the lock and an in-progress record stay behind, swarm goes on alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();

    // `status` finds the abandoned run and finishes it: swarm's update undone, the record closed.
    let (ok, status, stderr) = env.xtask_json(&["status"]);
    assert!(ok, "{stderr}");
    assert_eq!(status["recovered_abandoned_run"], true, "{status}");
    assert!(stderr.contains("taking over the lock"), "{stderr}");
    assert_eq!(
        running(&target).await,
        all("blue", "r1"),
        "back to r1, no task of the killed run"
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert!(
        outcome_of(&history, "r2").1.starts_with("interrupted"),
        "{history}"
    );
    assert_eq!(outcome_of(&history, "r1").0, "active");

    let (ok, next, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "the next deploy needs no manual step: {next} {stderr}");
    assert_eq!(next["release"]["id"], "r3");
    assert_eq!(running(&target).await, all("blue", "r3"));
    let (ok, lock, _) = env.xtask_json(&["lock", "status"]);
    assert!(ok && lock["locked"] == false, "{lock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_swarm_replaces_between_deploys_gets_its_slot_back_from_route() {
    let (_serial, v1, _, env) = setup("sw-route", "rolling", "").await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let target = env.swarm_target().await;
    let docker = support::swarm().await;

    // A crash no xtask sees: swarm restarts the task as a new one, at a new address.
    let victim = target.routed().await.unwrap().into_iter().next().unwrap();
    assert!(kill_task(&docker, &victim).await);
    let mut replaced = false;
    for _ in 0..500 {
        let tasks = target.tasks(&target.service_name("blue")).await.unwrap();
        let live: Vec<_> = tasks.iter().filter(|t| t.wanted() && t.running()).collect();
        if live.len() == 3 && live.iter().all(|t| t.id != victim) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replaced, "swarm replaced the killed task");
    let (healthy, health, _) = env.xtask_json(&["health"]);
    assert!(
        !healthy,
        "the slot left on the dead task is reported: {health}"
    );

    let (ok, routed, stderr) = env.xtask_json(&["route"]);
    assert!(ok, "{routed} {stderr}");
    assert_eq!(routed["moved"], 1, "{routed}");
    assert_eq!(running(&target).await, all("blue", "r1"));
    let (healthy, health, _) = env.xtask_json(&["health"]);
    assert!(healthy, "{health}");

    // While a deploy holds the lock, route stands aside.
    let lock = xtask::deploy::lock::LockInfo::mine("test", Duration::from_secs(600));
    assert!(xtask::deploy::lock::LockStore::lock_create(&target, &lock)
        .await
        .unwrap()
        .is_some());
    let (ok, routed, _) = env.xtask_json(&["route"]);
    assert!(
        ok && routed["skipped"].as_str().unwrap().starts_with("locked by"),
        "{routed}"
    );
    let (token, _) = xtask::deploy::lock::LockStore::lock_read(&target)
        .await
        .unwrap()
        .unwrap();
    xtask::deploy::lock::LockStore::lock_remove(&target, &token)
        .await
        .unwrap();
}
