//! The swarm target on the real engine in swarm mode (single node,
//! `swarm init --advertise-addr 127.0.0.1`), the real registry and real
//! nginx, with keep-alive load sent only to 127.0.0.1: rolling and
//! blue-green deploys and both kinds of rollback without a failed request.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::deploy_env::{outcome_of, TestEnv};
use xtask::{
    load::Load,
    target::swarm::{service::release_of, SwarmTarget},
};

/// One swarm test at a time, both releases built, swarm mode on, a fresh environment.
async fn setup(
    label: &str,
    strategy: &str,
    swarm_toml: &str,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    String,
    String,
    TestEnv,
) {
    let serial = support::SERIAL.lock().await;
    let docker = support::swarm().await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    (serial, v1, v2, TestEnv::swarm(label, strategy, swarm_toml))
}

async fn load_against(env: &TestEnv) -> Load {
    env.load(env.swarm_target().await.public_client().unwrap())
        .await
}

/// The tasks swarm wants running, as (service, release, routed) triples, sorted.
async fn running(target: &SwarmTarget) -> Vec<(String, String, bool)> {
    let routes = target.routes();
    let mut out = vec![];
    for colour in ["blue", "green"] {
        let name = target.service_name(colour);
        if target.inspect_service(&name).await.unwrap().is_none() {
            continue;
        }
        for task in target.tasks(&name).await.unwrap() {
            if task.wanted() {
                let routed = routes.contains(&Some(task.id.clone()));
                out.push((colour.to_owned(), task.release, routed));
            }
        }
    }
    out.sort();
    out
}

fn all(colour: &str, release: &str) -> Vec<(String, String, bool)> {
    vec![(colour.to_owned(), release.to_owned(), true); 3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_and_blue_green_deploys_of_3_replicas_under_keep_alive_load_fail_no_request() {
    let (_serial, v1, v2, env) = setup("sw-roll", "rolling", "cpus = 0.5\nmemory_mb = 64").await;
    // The first release comes from the authenticated registry: the node pulls it
    // with the credentials sent along with the service create.
    let pushed = support::xtask(&["push", &v1, "--json"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let reference = serde_json::from_slice::<Value>(&pushed.stdout).unwrap()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let docker = support::swarm().await;
    docker
        .remove_image(
            &reference,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();
    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &reference]);
    assert!(ok, "{first} {stderr}");
    let target = env.swarm_target().await;
    assert_eq!(running(&target).await, all("blue", "r1"));

    // The service carries swarm's own policies, start-first both ways.
    let spec = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap()
        .spec
        .unwrap();
    let spec = serde_json::to_value(&spec).unwrap();
    assert_eq!(spec["UpdateConfig"]["Order"], "start-first");
    assert_eq!(spec["UpdateConfig"]["FailureAction"], "rollback");
    assert_eq!(
        spec["RollbackConfig"]["Order"], "start-first",
        "moby#34111/#43081"
    );
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
        64 * 1024 * 1024
    );
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"],
        500_000_000
    );
    assert!(
        spec["Networks"].is_null() && spec["EndpointSpec"]["Ports"].is_null(),
        "no ingress, no overlay: {spec}"
    );

    let load = load_against(&env).await;
    let before = load.ok_so_far();
    let (ok, rolled, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "{rolled} {stderr}");
    let blue = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        xtask::target::swarm::service::update_state(&blue).0,
        Some(bollard::models::ServiceUpdateStatusStateEnum::COMPLETED),
        "swarm did the update"
    );
    assert_eq!(running(&target).await, all("blue", "r2"));

    let (ok, green, stderr) =
        env.xtask_json(&["deploy", "--image", &v1, "--strategy", "blue-green"]);
    assert!(ok, "{green} {stderr}");
    assert_eq!(running(&target).await, all("green", "r3"));
    // The old colour is kept at 0 replicas, as history.
    let blue = target
        .inspect_service(&target.service_name("blue"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            release_of(&blue).as_deref(),
            xtask::target::swarm::service::replicas_of(&blue)
        ),
        (Some("r2"), 0)
    );

    let (ok, back, stderr) =
        env.xtask_json(&["deploy", "--image", &v2, "--strategy", "blue-green"]);
    assert!(ok, "{back} {stderr}");
    assert_eq!(running(&target).await, all("blue", "r4"));
    assert!(
        load.ok_so_far() > before + 300,
        "load ran through all three deploys"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    for r in [&rolled, &green, &back] {
        assert!(r["traffic_moved_seconds"].as_f64().unwrap() > 0.0, "{r}");
    }
}

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
    assert!(reason.contains("exit code 2"), "{reason}");
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
                if task.release == "r4" && task.running() {
                    let filters = std::collections::HashMap::from([(
                        "label".to_owned(),
                        vec![format!("com.docker.swarm.task.id={}", task.id)],
                    )]);
                    let options =
                        bollard::query_parameters::ListContainersOptionsBuilder::default()
                            .filters(&filters)
                            .build();
                    let containers = docker.list_containers(Some(options)).await.unwrap();
                    if let Some(id) = containers.into_iter().find_map(|c| c.id) {
                        docker
                            .kill_container(
                                &id,
                                None::<bollard::query_parameters::KillContainerOptions>,
                            )
                            .await
                            .unwrap();
                        break 'kill true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(killed, "a task of r4 ran");
    let out = tokio::task::block_in_place(|| flapping.wait_with_output()).unwrap();
    let flapped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success(), "{flapped}");
    let reason = flapped["release"]["reason"].as_str().unwrap();
    assert!(reason.contains("exit code 137"), "{reason}");
    assert_eq!(running(&target).await, all("blue", "r1"));

    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(outcome_of(&history, "r1").0, "active");
    for failed in ["r2", "r3", "r4"] {
        assert_eq!(outcome_of(&history, failed).0, "failed", "{history}");
    }
}

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
async fn a_rollback_after_traffic_moved_starts_the_old_tasks_first_without_a_failed_request() {
    // moby#34111 / #43081: a stop-first rollback drops every serving task at
    // once. Here the new release serves all traffic when the run is told to
    // stop (Ctrl-C during verification), so its rollback replaces serving tasks.
    let (_serial, v1, v2, env) = setup("sw-undo", "rolling", "").await;
    let text = std::fs::read_to_string(env.arg())
        .unwrap()
        .replace("verify_seconds = 1", "verify_seconds = 20");
    std::fs::write(env.arg(), text).unwrap();
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let target = env.swarm_target().await;
    let load = load_against(&env).await;

    let deploy = env.spawn_deploy(&v2);
    let mut moved = false;
    for _ in 0..1500 {
        if running(&target).await == all("blue", "r2") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "r2 took all traffic");
    let served_before = load.ok_so_far();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(deploy.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| deploy.wait_with_output()).unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert!(
        report["release"]["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted by SIGINT"),
        "{report}"
    );
    assert_eq!(
        running(&target).await,
        all("blue", "r1"),
        "swarm's rollback put r1 back"
    );
    assert!(
        load.ok_so_far() > served_before + 100,
        "load ran through the rollback"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_swarm_replaces_between_deploys_gets_its_slot_back_from_route() {
    let (_serial, v1, _, env) = setup("sw-route", "rolling", "").await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let target = env.swarm_target().await;
    let docker = support::swarm().await;

    // A crash no xtask sees: swarm restarts the task as a new one, with a new socket.
    let victim = target.routes()[0].clone().unwrap();
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("com.docker.swarm.task.id={victim}")],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let container = docker.list_containers(Some(options)).await.unwrap()[0]
        .id
        .clone()
        .unwrap();
    docker
        .kill_container(
            &container,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
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
    let lock = xtask::lock::LockInfo::mine("test", Duration::from_secs(600));
    assert!(xtask::lock::LockStore::lock_create(&target, &lock)
        .await
        .unwrap());
    let (ok, routed, _) = env.xtask_json(&["route"]);
    assert!(
        ok && routed["skipped"].as_str().unwrap().starts_with("locked by"),
        "{routed}"
    );
    let (token, _) = xtask::lock::LockStore::lock_read(&target)
        .await
        .unwrap()
        .unwrap();
    xtask::lock::LockStore::lock_remove(&target, &token)
        .await
        .unwrap();
}
