//! A release that crashes after its verification window (`cargo xtask
//! watch`, the bake period a CD job runs after `deploy`).
//!
//! Expected:
//! - a healthy release watched for 3 s: exit 0, verdict "held", nothing
//!   recorded;
//! - one of its instances' processes SIGKILLed while `watch --for 60`
//!   runs (the engine restarts it by its policy): the watch fails it at
//!   once ("restarted 1 time(s) after verification"), rolls back through
//!   the deploy frame to the previous good release and exits 1; the history
//!   records the watched release **failed** with that reason (so no later
//!   rollback returns to it) and a new active release restoring the one
//!   before; the lock is free and only the restored release runs;
//! - `--for 0` is refused naming the flag.
use std::time::{Duration, Instant};

use xtask::targets::Target;

use crate::support::deploy_env::outcome_of;
use crate::{figure, instances, lock_is_free, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_crashes_after_verification_is_rolled_back_by_watch() {
    let (_serial, v1, v2, env) = setup("watch", 0).await;
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    assert!(env.xtask_json(&["deploy", "--image", &v2]).0);

    let (ok, held, stderr) = env.xtask_json(&["watch", "--for", "3"]);
    assert!(ok, "{held}\n{stderr}");
    assert_eq!(
        (held["verdict"].as_str(), held["release"].as_str()),
        (Some("held"), Some("r2"))
    );
    assert!(held["rounds"].as_u64() > Some(5), "{held}");

    let out = env.xtask(&["watch", "--for", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--for 0: watch for 1 to 86400 seconds"),
        "{stderr}"
    );

    let watching = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["watch", "--for", "60", "--json", "-e", env.arg()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let target = env.target().await;
    let victim = target
        .instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.release == "r2")
        .expect("an instance of r2");
    let killed = Instant::now();
    crate::crash(target.docker(), &victim.name).await;
    let out = tokio::task::block_in_place(|| watching.wait_with_output()).unwrap();
    let took = killed.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report["verdict"], "failed", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason
            == format!(
                "instance {} restarted 1 time(s) after verification",
                victim.name
            ),
        "{reason}"
    );
    let rollback = &report["rollback"];
    assert_eq!(
        (
            rollback["succeeded"].as_bool(),
            rollback["release"]["restores"].as_str()
        ),
        (Some(true), Some("r1")),
        "{report}"
    );

    let (_, history, _) = env.xtask_json(&["history"]);
    let (outcome, why) = outcome_of(&history, "r2");
    assert_eq!(outcome, "failed");
    assert_eq!(
        why,
        format!("failed after verification: {reason}; rolled back to r1")
    );
    assert_eq!(outcome_of(&history, "r3").0, "active");
    assert!(lock_is_free(&env).await);
    assert_eq!(instances(&env).await, vec![("r3".to_owned(), true); 3]);
    figure(
        "watch",
        "kill to rolled back (watch exit 1)",
        format!("{:.2}s", took.as_secs_f64()),
    );
}
