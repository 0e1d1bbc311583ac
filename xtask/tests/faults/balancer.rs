//! The balancer container killed between deploys and during one.
use std::time::{Duration, Instant};

use xtask::targets::Target;

use crate::support::deploy_env::{outcome_of, TestEnv};
use crate::{figure, instances, load_against, lock_is_free, setup, wait_for_lock, wait_public};

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

/// Until the balancer has `count` slots in use (not in MAINT).
async fn wait_for_slots(env: &TestEnv, count: usize) {
    let target = env.target().await;
    for _ in 0..400 {
        if let Ok(balancer) =
            xtask::haproxy::HaproxyBalancer::open(target.docker(), target.scope()).await
        {
            let rows = balancer.servers().await.unwrap_or_default();
            let used = rows
                .iter()
                .filter(|r| r.status != xtask::haproxy::ServerStatus::Maint)
                .count();
            if used >= count {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the deploy never gave its new instances their slots");
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
        Death::Crash => crate::crash(target.docker(), &name).await,
    }
}

async fn restart_count(env: &TestEnv) -> Option<i64> {
    let target = env.target().await;
    let name = xtask::haproxy::container_name(target.scope());
    let inspect = target.docker().inspect_container(&name, None).await;
    inspect.unwrap().restart_count
}

/// A crash of HAProxy between deploys: the engine restarts the container
/// and HAProxy loads the slots balancer-ctl saved, so the public URL serves
/// the same instances again with no command run. Returns (kill to public
/// 200, polls that were not 200 on the way).
async fn crash_recovers_by_itself(env: &TestEnv) -> (Duration, u32) {
    let client = env.target().await.public_client().unwrap();
    let (_, status, _) = env.xtask_json(&["status"]);
    let active = status["active_release"]["id"].as_str().unwrap().to_owned();
    let before = restart_count(env).await;
    let killed = Instant::now();
    kill_balancer(env, Death::Crash).await;
    // Until the engine has restarted it (the public URL may answer 200 from
    // the dying process for a moment), then until it serves.
    while restart_count(env).await == before {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the engine never restarted the balancer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, misses, _) =
        wait_public(env, &client, Duration::from_secs(30), |s| s == Some(200)).await;
    let recovered = killed.elapsed();
    assert_eq!(
        instances(env).await,
        vec![(active, true); 3],
        "the restarted balancer has the three instances in its slots"
    );
    let (healthy, health, _) = env.xtask_json(&["health"]);
    assert!(healthy, "no `route` needed: {health}");
    assert!(health["diagnosis"].is_null(), "{health}");
    (recovered, misses)
}

/// `docker kill` of the balancer and its repair; returns (kill to the fault
/// seen, route's run, kill to public 200).
async fn kill_and_route(env: &TestEnv) -> (Duration, Duration, Duration) {
    let how = Death::DockerKill;
    let client = env.target().await.public_client().unwrap();
    let killed = Instant::now();
    kill_balancer(env, how).await;
    // Not restarted: down (no answer at all).
    let (seen, _, status) =
        wait_public(env, &client, Duration::from_secs(30), |s| s.is_none()).await;

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
    // `route` starts the container again, and HAProxy loads its saved
    // slots: there may be nothing left to move.
    assert_eq!(
        routed["release"].as_str(),
        Some(active.as_str()),
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
/// - crash: the engine restarts the container by its restart policy and
///   HAProxy loads the slots balancer-ctl saved at the last change: the
///   public URL answers 200 again with no command run, the three instances
///   in traffic, `health` exits 0;
/// - `docker kill`: the engine does not restart a container killed through
///   its API: the public URL does not answer; `health` exits 1 and its
///   diagnosis names the balancer, its slots and `cargo xtask route`;
///   `status` (exit 0) says the same;
/// - `route` starts the balancer again (which loads its saved slots) and
///   puts any instance missing from them back; the public URL answers 200,
///   the three instances in traffic; `health` is 0 again;
/// - the next deploy under keep-alive load fails no request; nothing is
///   recorded for the fault (r1 superseded by r2, no other release) and the
///   lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_crash_recovers_alone_and_a_docker_kill_is_reported_and_repaired_by_route() {
    let (_serial, v1, v2, env) = setup("bkill", 0).await;
    let (ok, _, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{stderr}");

    let crash = crash_recovers_by_itself(&env).await;
    let killed = kill_and_route(&env).await;

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
    figure(
        t,
        "crash: kill to public 200, no command run",
        format!(
            "{:.2}s ({} polls not 200 on the way)",
            crash.0.as_secs_f64(),
            crash.1
        ),
    );
    {
        let (how, (seen, route, recovered)) = ("docker kill", killed);
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

/// Expected, for a crash and for `docker kill` of the balancer while a
/// rolling deploy of the other release waits in its gate (2 s before the
/// first check):
/// - `docker kill`: the deploy exits 1, its release recorded failed with
///   the reason, the lock released, nothing in progress; its automatic
///   rollback starts the balancer again and puts the previous release back
///   into its slots (the public URL answers 200 again, no `route` needed,
///   none of the new release's instances left);
/// - a crash: the engine restarts the balancer, which loads the slots saved
///   at the last change. If that happens before the deploy's next balancer
///   command fails (seen at 2.3 s), the deploy goes on and succeeds, all
///   three instances of the new release in traffic; otherwise the outcome
///   is the one above. Either way the lock is free and nothing is in
///   progress;
/// - then the next deploy needs no manual step and, under keep-alive load,
///   fails no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_killed_mid_deploy_leaves_nothing_half_done_and_the_next_deploy_recovers() {
    let (_serial, v1, v2, env) = setup("bmid", 2000).await;
    // The gate of the new release cannot pass while its slots are gone:
    // a short deadline keeps the failing run short.
    env.edit("deadline_seconds = 30", "deadline_seconds = 8");
    let (ok, _, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{stderr}");
    let client = env.target().await.public_client().unwrap();
    let t = "balancer_killed_mid_deploy";
    let mut active = ("r1".to_owned(), v1.clone());
    let mut next_id = 2;
    for (how, image) in [(Death::Crash, &v2), (Death::DockerKill, &v1)] {
        let id = format!("r{next_id}");
        let deploy = env.spawn_deploy(image);
        wait_for_lock(&env).await;
        // In the gate: the first new instance has its slot (at weight 0,
        // beside the 3 serving). A balancer lost before that is made again
        // by the deploy itself, which then succeeds: not this fault.
        wait_for_slots(&env, 4).await;
        let killed = Instant::now();
        kill_balancer(&env, how).await;
        let out = tokio::task::block_in_place(|| deploy.wait_with_output()).unwrap();
        let failed_after = killed.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{how:?}: no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        eprintln!("{how:?}: deploy said {}", report["release"]["reason"]);
        assert_eq!(report["release"]["id"], id.as_str(), "{report}");
        assert!(lock_is_free(&env).await, "{how:?}: lock released");
        let (_, status, _) = env.xtask_json(&["status"]);
        assert!(status["in_progress"].is_null(), "{status}");
        let (_, history, _) = env.xtask_json(&["history"]);
        if out.status.success() {
            // A crash the engine restarted quickly enough: HAProxy came back
            // with the slots balancer-ctl had saved, and the deploy went on.
            assert!(
                matches!(how, Death::Crash),
                "only the engine restarts a crashed balancer: {report}"
            );
            assert_eq!(report["release"]["outcome"], "active", "{report}");
            assert_eq!(outcome_of(&history, &active.0).0, "superseded");
            active = (id.clone(), image.clone());
        } else {
            assert_eq!(report["release"]["outcome"], "failed", "{report}");
            assert_eq!(outcome_of(&history, &id).0, "failed");
            assert_eq!(outcome_of(&history, &active.0).0, "active");
            // The rollback put the previous release back into the (restarted)
            // balancer's slots by itself: no `route` needed.
            let reason = report["release"]["reason"].as_str().unwrap();
            assert!(!reason.contains("rollback failed"), "{how:?}: {reason}");
        }
        wait_public(&env, &client, Duration::from_secs(10), |s| s == Some(200)).await;
        let recovered = killed.elapsed();
        assert_eq!(instances(&env).await, vec![(active.0.clone(), true); 3]);
        let outcome = if out.status.success() {
            "succeeded"
        } else {
            "failed"
        };

        let load = load_against(&env).await;
        let next = format!("r{}", next_id + 1);
        let (ok, deployed, stderr) = env.xtask_json(&["deploy", "--image", image]);
        assert!(
            ok,
            "{how:?}: the next deploy needs no manual step: {stderr}"
        );
        assert_eq!(deployed["release"]["id"], next.as_str());
        let report = load.stop().await;
        assert_eq!(report.failed, 0, "{how:?}: {:?}", report.errors);
        assert_eq!(instances(&env).await, vec![(next.clone(), true); 3]);
        figure(
            t,
            &format!("{how:?}: kill to deploy exit"),
            format!("{:.2}s ({outcome})", failed_after.as_secs_f64()),
        );
        figure(
            t,
            &format!("{how:?}: kill to public 200"),
            format!("{:.2}s", recovered.as_secs_f64()),
        );
        figure(
            t,
            &format!("{how:?}: next deploy under load"),
            format!("{} ok, {} failed", report.ok, report.failed),
        );
        active = (next, image.clone());
        next_id += 2;
    }
}
