//! The deploy engine on the real engine and the HAProxy balancer container, with keep-alive load
//! sent only to 127.0.0.1: zero failed requests through rolling and
//! blue-green deploys and through automatic rollbacks.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::deploy_env::{outcome_of, TestEnv};
use xtask::load::Load;
use xtask::targets::Target;

/// One deploy test at a time (they share two cores), both releases built, and a fresh environment.
async fn setup(
    label: &str,
    strategy: &str,
    initial_delay_ms: u64,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    String,
    String,
    TestEnv,
) {
    let serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    support::balancer_image(&docker).await;
    (
        serial,
        v1,
        v2,
        TestEnv::new(label, strategy, initial_delay_ms),
    )
}

/// A secret passed with --env is refused before any engine is reached
/// (DOCKER_HOST names none here), and its value is not printed back.
#[test]
fn a_secret_passed_with_env_is_refused_before_anything_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "deploy",
            "--image",
            "xtask-test-app:never",
            "--env",
            "DB_PASS=hunter2-e2e",
        ])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--env DB_PASS=…: DB_PASS looks like a secret")
            && stderr.contains("[app.secrets]"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2-e2e")
            && !String::from_utf8_lossy(&out.stdout).contains("hunter2-e2e")
    );
}

/// Under GitHub Actions a failing `--json` run keeps stdout one JSON
/// document: the `::error::` annotation goes to stderr, and the failure is
/// reported in the JSON itself. (No engine: the refusal comes first.)
#[test]
fn a_failing_json_run_under_actions_keeps_annotations_out_of_stdout() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "deploy",
            "--image",
            "xtask-test-app:never",
            "--env",
            "DB_PASS=x",
            "--json",
        ])
        .env("GITHUB_ACTIONS", "true")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("DB_PASS looks like a secret"),
        "{report}"
    );
    assert!(
        stderr.contains("::error::--env DB_PASS=…: DB_PASS looks like a secret"),
        "{stderr}"
    );
}

async fn load_against(env: &TestEnv) -> Load {
    env.load(env.target().await.public_client().unwrap()).await
}

/// Instances of the environment, as (release, routed) pairs.
async fn instances(env: &TestEnv) -> Vec<(String, bool)> {
    let target = env.target().await;
    target
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.release.clone(), i.traffic.is_some_and(|t| t > 0.0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_and_blue_green_deploys_under_keep_alive_load_fail_no_request() {
    let (_serial, v1, v2, env) = setup("zero", "rolling", 0).await;

    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{stderr}");
    assert_eq!(first["release"]["outcome"], "active");

    let load = load_against(&env).await;
    let before = load.ok_so_far();
    let (ok, rolling, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "{stderr}");
    assert!(
        load.ok_so_far() > before + 100,
        "load ran during the rolling deploy"
    );
    assert_eq!(
        (
            rolling["strategy"].as_str(),
            rolling["release"]["image"].as_str()
        ),
        (Some("rolling"), Some(v2.as_str()))
    );
    let before = load.ok_so_far();
    let (ok, blue_green, stderr) =
        env.xtask_json(&["deploy", "--image", &v1, "--strategy", "blue-green"]);
    assert!(ok, "{stderr}");
    assert!(
        load.ok_so_far() > before + 100,
        "load ran during the blue-green deploy"
    );
    assert_eq!(blue_green["strategy"], "blue-green");
    let report = load.stop().await;
    eprintln!(
        "rolling + blue-green under load: {} requests ok, {} failed",
        report.ok, report.failed
    );

    assert_eq!(
        report.failed, 0,
        "failed requests during deploys: {:?}",
        report.errors
    );
    assert!(
        report.ok > 200,
        "the load generator barely ran: {} requests",
        report.ok
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(outcome_of(&history, "r1").0, "superseded");
    assert_eq!(outcome_of(&history, "r2").0, "superseded");
    assert_eq!(outcome_of(&history, "r3").0, "active");
    let running = instances(&env).await;
    assert_eq!(running.len(), 3, "old instances were stopped: {running:?}");
    assert!(
        running
            .iter()
            .all(|(release, routed)| release == "r3" && *routed),
        "{running:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_and_crashing_releases_roll_back_by_themselves_without_a_failed_request() {
    let (_serial, v1, v2, env) = setup("bad", "rolling", 0).await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);

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
    assert_eq!(never_ready["release"]["outcome"], "failed");
    assert!(
        never_ready["release"]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{never_ready}"
    );
    assert!(
        never_ready["failure_logs"]
            .as_str()
            .unwrap()
            .contains("start-up check failed"),
        "the failing instance's log is shown"
    );
    assert!(never_ready["rollback_seconds"].as_f64().unwrap() < 10.0);

    let (ok, crashing, _) = env.xtask_json(&[
        "deploy",
        "--image",
        &v2,
        "--env",
        "PORT=abc",
        "--strategy",
        "blue-green",
    ]);
    assert!(!ok);
    let reason = crashing["release"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("restarted") || reason.contains("exited"),
        "{reason}"
    );
    assert!(
        crashing["failure_logs"]
            .as_str()
            .unwrap()
            .contains("PORT=abc: not a port number"),
        "{crashing}"
    );
    assert!(
        load.ok_so_far() > before + 100,
        "load ran during both failed deploys"
    );
    let report = load.stop().await;

    assert_eq!(
        report.failed, 0,
        "the previous release must keep serving: {:?}",
        report.errors
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(outcome_of(&history, "r1").0, "active");
    assert_eq!(
        outcome_of(&history, "r2"),
        (
            "failed".to_owned(),
            never_ready["release"]["reason"]
                .as_str()
                .unwrap()
                .to_owned()
        )
    );
    assert_eq!(outcome_of(&history, "r3").0, "failed");
    let running = instances(&env).await;
    assert_eq!(
        running,
        vec![("r1".to_owned(), true); 3],
        "no orphan of the failed releases"
    );
}

/// The value of `name` in a running instance's environment.
async fn instance_env(env: &TestEnv, name: &str) -> Vec<String> {
    let target = env.target().await;
    let mut values = Vec::new();
    for instance in target.instances().await.unwrap() {
        let inspect = target
            .docker()
            .inspect_container(&instance.id, None)
            .await
            .unwrap();
        let vars = inspect.config.unwrap().env.unwrap_or_default();
        values.extend(
            vars.into_iter()
                .filter_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_owned)),
        );
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_rollback_to_restore_the_release_and_its_env_from_a_fresh_process() {
    let (_serial, v1, v2, env) = setup("back", "rolling", 0).await;
    assert!(
        env.xtask_json(&["deploy", "--image", &v1, "--env", "GREETING=one"])
            .0
    );
    assert!(
        env.xtask_json(&["deploy", "--image", &v2, "--env", "GREETING=two"])
            .0
    );
    assert_eq!(instance_env(&env, "GREETING").await, vec!["two"; 3]);

    // Each command is a new process with no local state: everything comes
    // from the engine. Even the balancer's certificate: a fresh runner has
    // none, takes the one the balancer serves, and keeps that balancer.
    let target = env.target().await;
    let balancer = xtask::haproxy::container_name(target.scope());
    let balancer_id = || async {
        let inspect = target.docker().inspect_container(&balancer, None).await;
        inspect.unwrap().id.unwrap()
    };
    let before = balancer_id().await;
    std::fs::remove_dir_all(target.runtime_dir()).unwrap();
    let (ok, back, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "{stderr}");
    assert_eq!(balancer_id().await, before, "the balancer was replaced");
    assert_eq!(
        (
            back["release"]["restores"].as_str(),
            back["release"]["image"].as_str()
        ),
        (Some("r1"), Some(v1.as_str()))
    );
    assert_eq!(
        instance_env(&env, "GREETING").await,
        vec!["one"; 3],
        "rollback restores the release's env"
    );

    let (ok, forward, stderr) = env.xtask_json(&["rollback", "--to", "r2"]);
    assert!(ok, "{stderr}");
    assert_eq!(forward["release"]["image"], v2.as_str());
    assert_eq!(instance_env(&env, "GREETING").await, vec!["two"; 3]);
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(
        outcome_of(&history, "r3"),
        ("rolled-back".to_owned(), "rolled back to r2".to_owned())
    );

    let missing = env.xtask(&["rollback", "--to", "r99"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("--to r99: no such release") && stderr.contains("kept: r1, r2, r3, r4"),
        "{stderr}"
    );

    // The balancer restarts (an engine restart, a crash): HAProxy loads the
    // slots balancer-ctl saved, and serves the same instances at once.
    target
        .docker()
        .restart_container(&balancer, None)
        .await
        .unwrap();
    let client = target.public_client().unwrap();
    let health = format!("{}/health", env.public_url());
    let status = |client: &reqwest::Client| {
        let request = client.get(&health).send();
        async move { request.await.map(|r| r.status().as_u16()).ok() }
    };
    let answered = |want: Option<u16>| {
        let status = &status;
        let client = &client;
        async move {
            let mut seen = None;
            for _ in 0..100 {
                seen = status(client).await;
                if seen == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    };
    assert_eq!(
        answered(Some(200)).await,
        Some(200),
        "a restarted balancer keeps its slots"
    );
    let (ok, routed, stderr) = env.xtask_json(&["route"]);
    assert!(
        ok && routed["moved"] == 0,
        "nothing to move: {routed}\n{stderr}"
    );

    // Slots lost all the same (a balancer without its saved state): every
    // slot in MAINT, 503 while the instances run on. `route` puts them back.
    let haproxy = xtask::haproxy::HaproxyBalancer::open(target.docker(), target.scope())
        .await
        .unwrap();
    for row in haproxy.servers().await.unwrap() {
        haproxy
            .exec_raw(&format!("set server app/{} state maint", row.name))
            .await
            .unwrap();
    }
    assert_eq!(answered(Some(503)).await, Some(503), "no slot serves");
    let (ok, routed, stderr) = env.xtask_json(&["route"]);
    assert!(ok, "{stderr}");
    assert_eq!(routed["release"], "r4", "{routed}");
    assert_eq!(routed["moved"], 3, "{routed}");
    for _ in 0..20 {
        assert_eq!(status(&client).await, Some(200), "after route");
    }
    // A second pass finds nothing to move.
    let (ok, again, _) = env.xtask_json(&["route"]);
    assert!(ok && again["moved"] == 0, "{again}");
}

async fn lock_is_free(env: &TestEnv) -> bool {
    xtask::deploy::lock::LockStore::lock_read(&env.target().await)
        .await
        .unwrap()
        .is_none()
}

/// Waits until the environment's lock is taken (the spawned deploy is under way).
async fn wait_for_lock(env: &TestEnv) {
    for _ in 0..200 {
        if !lock_is_free(env).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the deploy never took the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_are_refused_and_killed_or_interrupted_ones_are_cleaned_up() {
    // Every gate waits 2 s before its first probe: time to act mid-deploy.
    let (_serial, v1, v2, env) = setup("lock", "rolling", 2000).await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);

    let mut first = env.spawn_deploy(&v2);
    wait_for_lock(&env).await;
    let second = env.xtask(&["deploy", "--image", &v2]);
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is locked by") && stderr.contains(&format!("pid {}", first.id())),
        "names the holder: {stderr}"
    );

    // kill -9 mid-gate: a new instance is up, the lock and an in-progress record are left behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        instances(&env)
            .await
            .iter()
            .any(|(release, _)| release == "r2"),
        "the killed deploy had started an instance"
    );

    // `status` finds the abandoned run and finishes its cleanup.
    let (ok, status, stderr) = env.xtask_json(&["status"]);
    assert!(ok, "{stderr}");
    assert_eq!(status["recovered_abandoned_run"], true, "{status}");
    assert!(stderr.contains("taking over the lock"), "{stderr}");
    assert_eq!(
        instances(&env).await,
        vec![("r1".to_owned(), true); 3],
        "back to r1, no orphan"
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert!(
        outcome_of(&history, "r2").1.starts_with("interrupted"),
        "{history}"
    );
    assert_eq!(outcome_of(&history, "r1").0, "active");

    let (ok, next, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "the next deploy needs no manual step: {stderr}");
    assert_eq!(next["release"]["id"], "r3");
    assert_eq!(
        instances(&env).await,
        vec![("r3".to_owned(), true); 3],
        "no orphan containers"
    );

    // Ctrl-C mid-deploy rolls back what is half done and frees the lock.
    let interrupted = env.spawn_deploy(&v1);
    wait_for_lock(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(interrupted.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = interrupted.wait_with_output().unwrap();
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["release"]["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted by SIGINT"),
        "{report}"
    );
    assert!(lock_is_free(&env).await, "lock released");
    assert_eq!(instances(&env).await, vec![("r3".to_owned(), true); 3]);
}

#[test]
fn a_bad_environment_file_is_named_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[target]\nkind = \"docker\"\n[image]\nrepo = \"x\"\n[deploy]\nreplicas = 0\nstrategy = \"rolling\"\n").unwrap();
    let out = support::xtask(&["deploy", "-e", path.to_str().unwrap(), "--image", "x:1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.toml") && stderr.contains("health"),
        "missing [health] named: {stderr}"
    );
    std::fs::write(
        &path,
        std::fs::read_to_string(support::workspace_env("dev"))
            .unwrap()
            .replace("replicas = 3", "replicas = 0"),
    )
    .unwrap();
    let out = support::xtask(&["deploy", "-e", path.to_str().unwrap(), "--image", "x:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.toml: deploy.replicas = 0: must be between 1 and 50"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_the_deploy_before_anything_is_recorded() {
    let (_serial, v1, _, env) = setup("secret", "rolling", 0).await;
    env.append("[app.secrets]\nDATABASE_URL = \"env:XTASK_TEST_UNSET_SECRET\"\n");
    let out = env.xtask(&["deploy", "--image", &v1]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "secret DATABASE_URL: environment variable XTASK_TEST_UNSET_SECRET is not set"
        ),
        "{stderr}"
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(
        history,
        serde_json::json!([]),
        "nothing recorded, nothing left in progress"
    );
    assert!(lock_is_free(&env).await, "lock released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_main_job_and_down_stops_it() {
    // `up` deploys the image of this tree, which setup has built.
    let (_serial, _, _, env) = setup("up", "rolling", 0).await;
    let out = env.xtask(&["up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("is up: {}", env.public_url())),
        "{stderr}"
    );
    let client = env.target().await.public_client().unwrap();
    let health = client
        .get(format!("{}/health", env.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let out = env.xtask(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        instances(&env).await.is_empty(),
        "down removes every instance"
    );
    assert!(
        client
            .get(format!("{}/health", env.public_url()))
            .send()
            .await
            .is_err(),
        "the balancer is stopped"
    );
}
