//! The deploy process stopped (SIGSTOP) past its lock's time-to-live, the
//! lock taken over by another deploy, then the first one resumed (SIGCONT).
use std::time::{Duration, Instant};

use nix::{sys::signal, unistd::Pid};
use xtask::deploy::lock::LockStore;

use crate::support::deploy_env::outcome_of;
use crate::{figure, instances, load_against, lock_is_free, setup, wait_for_lock};

/// Expected, with `lock_ttl_seconds = 60` (the minimum) and no test hook
/// (the real time-to-live is waited out, about a minute): while the
/// stopped run's lock is within its time-to-live a second deploy is
/// refused, naming the holder's pid; once it has passed, the second
/// deploy takes the lock over (its stderr says so), finishes the stopped
/// run's release as interrupted, and deploys: its release stands. The
/// stopped run, resumed, sees on its first look that its time-to-live
/// passed, exits 1 saying it lost the lock and touches nothing: the second
/// run's release stays active with all three instances in traffic, no
/// keep-alive request fails, the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_stopped_past_its_lock_ttl_loses_the_lock_and_touches_nothing_when_resumed() {
    let (_serial, v1, v2, env) = setup("stop", 2000).await;
    env.edit("lock_ttl_seconds = 600", "lock_ttl_seconds = 60");
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let load = load_against(&env).await;

    let stopped = env.spawn_deploy(&v2);
    let pid = Pid::from_raw(stopped.id() as i32);
    wait_for_lock(&env).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal::kill(pid, signal::Signal::SIGSTOP).unwrap();
    let stopped_at = Instant::now();

    let refused = env.xtask(&["deploy", "--image", &v1]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains(&format!("pid {}", stopped.id())),
        "refused while the ttl runs: {stderr}"
    );

    // The real time-to-live: wait until the lock reads as expired.
    let target = env.target().await;
    loop {
        let (_, info) = target.lock_read().await.unwrap().expect("still locked");
        if info.expired(chrono::Utc::now().timestamp()) {
            break;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(90));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expired_after = stopped_at.elapsed();
    let taking = Instant::now();
    let (ok, taken, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    let takeover_took = taking.elapsed();
    assert!(ok, "the second deploy takes over: {stderr}");
    assert!(stderr.contains("taking over the lock"), "{stderr}");
    assert_eq!(taken["release"]["id"], "r3");

    let resumed = Instant::now();
    signal::kill(pid, signal::Signal::SIGCONT).unwrap();
    let out = tokio::task::block_in_place(|| stopped.wait_with_output()).unwrap();
    let quit_after = resumed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("lost the lock"), "{stderr}");
    // Give anything the resumed run might still have sent time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;

    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(outcome_of(&history, "r3").0, "active", "{history}");
    assert!(
        outcome_of(&history, "r2").1.starts_with("interrupted"),
        "{history}"
    );
    assert_eq!(instances(&env).await, vec![("r3".to_owned(), true); 3]);
    assert!(lock_is_free(&env).await);
    assert_eq!(report.failed, 0, "{:?}", report.errors);

    let t = "sigstop_past_lock_ttl";
    figure(
        t,
        "stopped to lock expired (ttl 60 s)",
        format!("{:.1}s", expired_after.as_secs_f64()),
    );
    figure(
        t,
        "takeover deploy",
        format!("{:.1}s", takeover_took.as_secs_f64()),
    );
    figure(
        t,
        "SIGCONT to the resumed run's exit 1",
        format!("{:.2}s", quit_after.as_secs_f64()),
    );
    figure(
        t,
        "load throughout",
        format!("{} ok, {} failed", report.ok, report.failed),
    );
}
