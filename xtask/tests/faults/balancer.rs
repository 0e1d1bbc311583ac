//! The balancer container killed between deploys and during one.
use std::time::{Duration, Instant};

use xtask::targets::Target;

use crate::support::deploy_env::{outcome_of, TestEnv};
use crate::{figure, instances, load_against, lock_is_free, setup, wait_public};

/// How the balancer dies.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Its HAProxy process SIGKILLed from the host (a crash, the OOM
    /// killer): the engine restarts it by its restart policy.
    Crash,
    /// `docker kill`: the engine treats it as stopped by hand and does not
    /// restart it (Docker cancels the restart policy of a killed container).
    DockerKill,
}

async fn kill_balancer(env: &TestEnv, how: Death) {
    let target = env.target().await;
    let name = xtask::haproxy::container_name(target.scope());
    match how {
        Death::DockerKill => target
            .docker()
            .kill_container(
                &name,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .unwrap(),
        Death::Crash => {
            let inspect = target
                .docker()
                .inspect_container(&name, None)
                .await
                .unwrap();
            let pid = inspect.state.unwrap().pid.unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
    }
}

/// One death of the balancer and its repair; returns (kill to the fault
/// seen, route's run, kill to public 200).
async fn kill_and_route(env: &TestEnv, how: Death) -> (Duration, Duration, Duration) {
    let client = env.target().await.public_client().unwrap();
    let killed = Instant::now();
    kill_balancer(env, how).await;
    // A crash: restarted with every slot in MAINT (503). docker kill: down
    // (no answer at all).
    let (seen, _, status) = wait_public(env, &client, Duration::from_secs(30), |s| match how {
        Death::Crash => s == Some(503),
        Death::DockerKill => s.is_none(),
    })
    .await;

    let (healthy, health, _) = env.xtask_json(&["health"]);
    assert!(!healthy, "{how:?}: health must fail ({status:?}): {health}");
    let diagnosis = health["diagnosis"].as_str().unwrap_or_default();
    assert!(
        diagnosis.contains("balancer")
            && diagnosis.contains("slots")
            && diagnosis.contains("cargo xtask route"),
        "{how:?}: health names the balancer, its slots and the repair: {health}"
    );
    let out = env.xtask(&["health"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cargo xtask route"), "{stderr}");
    let (ok, status, stderr) = env.xtask_json(&["status"]);
    assert!(ok, "{stderr}");
    assert!(
        status["diagnosis"]
            .as_str()
            .unwrap_or_default()
            .contains("cargo xtask route"),
        "{how:?}: status says so too: {status}"
    );
    let active = status["active_release"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        instances(env).await,
        vec![(active.clone(), false); 3],
        "{how:?}: the instances run on, out of traffic"
    );

    let route_started = Instant::now();
    let (ok, routed, stderr) = env.xtask_json(&["route"]);
    let route_took = route_started.elapsed();
    assert!(ok, "{stderr}");
    assert_eq!(
        (routed["release"].as_str(), routed["moved"].as_u64()),
        (Some(active.as_str()), Some(3)),
        "{routed}"
    );
    wait_public(env, &client, Duration::from_secs(10), |s| s == Some(200)).await;
    let recovered = killed.elapsed();
    let (healthy, health, _) = env.xtask_json(&["health"]);
    assert!(healthy, "{how:?}: {health}");
    assert!(health["diagnosis"].is_null(), "{health}");
    assert_eq!(instances(env).await, vec![(active, true); 3]);
    (seen, route_took, recovered)
}

/// Expected, for a crash of HAProxy (SIGKILL of its process from the host)
/// and for `docker kill` of `<scope>-balancer`, one after the other:
/// - crash: the engine restarts the container by its restart policy, but
///   HAProxy's runtime slots were in memory only: the public URL answers
///   503 while the three instances run on;
/// - `docker kill`: the engine does not restart a container killed through
///   its API: the public URL does not answer;
/// - either way `health` exits 1 and its diagnosis names the balancer, its
///   slots and `cargo xtask route`; `status` (exit 0) says the same;
/// - `route` (starting the balancer again if needed) puts the three
///   instances back (moved = 3) and the public URL answers 200; `health` is
///   0 again;
/// - the next deploy under keep-alive load fails no request; nothing is
///   recorded for the fault (r1 superseded by r2, no other release) and the
///   lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_killed_between_deploys_is_reported_by_health_and_repaired_by_route() {
    let (_serial, v1, v2, env) = setup("bkill", 0).await;
    let (ok, _, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{stderr}");

    let crash = kill_and_route(&env, Death::Crash).await;
    let killed = kill_and_route(&env, Death::DockerKill).await;

    let load = load_against(&env).await;
    let (ok, next, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "{stderr}");
    assert_eq!(next["release"]["id"], "r2");
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(report.ok > 100, "load ran: {}", report.ok);
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(outcome_of(&history, "r1").0, "superseded");
    assert_eq!(outcome_of(&history, "r2").0, "active");
    assert!(lock_is_free(&env).await);

    let t = "balancer_killed_between_deploys";
    for (how, (seen, route, recovered)) in [("crash", crash), ("docker kill", killed)] {
        figure(
            t,
            &format!("{how}: kill to fault seen"),
            format!("{:.2}s", seen.as_secs_f64()),
        );
        figure(
            t,
            &format!("{how}: route run"),
            format!("{:.2}s", route.as_secs_f64()),
        );
        figure(
            t,
            &format!("{how}: kill to public 200 after route"),
            format!("{:.2}s", recovered.as_secs_f64()),
        );
    }
    figure(
        t,
        "next deploy under load",
        format!("{} ok, {} failed", report.ok, report.failed),
    );
}
