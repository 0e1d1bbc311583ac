//! A canary on swarm: the new release on the other colour's service, its
//! tasks given a share of the traffic through the balancer's weights, judged
//! by a real Prometheus scraping the balancer's exporter, under keep-alive
//! load. The shares are counted from HAProxy's own per-server counters.
use std::collections::BTreeMap;

use super::*;
use support::{
    canary::{
        assert_step_shares, canary_table, finished, held_steps, spawn_deploy, wait_for_share,
        Counter, Counts,
    },
    prometheus::Prometheus,
};

impl Counter for SwarmTarget {
    async fn count(&self) -> Counts {
        let rows = self.rows().await.unwrap();
        let mut out: BTreeMap<String, (u64, u32)> = BTreeMap::new();
        for task in self.all_tasks().await.unwrap() {
            let Some(row) = xtask::targets::swarm::router::slot_row(&rows, task.addr) else {
                continue;
            };
            let entry = out.entry(task.release).or_default();
            entry.0 += row.hrsp_2xx + row.hrsp_4xx + row.hrsp_5xx;
            entry.1 += row.user_weight;
        }
        out
    }
}

/// A swarm canary environment with the exporter on a known port, r1 deployed
/// (at once: nothing to compare with) and Prometheus scraping its balancer.
async fn canary_setup(
    label: &str,
    first_step: u8,
    pause: f64,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    String,
    TestEnv,
    Prometheus,
) {
    let (serial, v1, v2, env) = setup(label, "canary", "").await;
    let exporter = support::free_port();
    env.edit("[app.env]", "[app]\ndebug_knobs = true\n[app.env]");
    env.edit(
        "api_rate = 1000000",
        &format!("api_rate = 1000000\nmetrics_port = {exporter}"),
    );
    canary_table(&env, "http://127.0.0.1:9", first_step, pause);
    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{first} {stderr}");
    let prometheus = support::prometheus::start(exporter).await;
    env.edit("http://127.0.0.1:9", &prometheus.url);
    (serial, v2, env, prometheus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_canary_gets_its_shares_and_is_promoted_or_aborted_at_once() {
    let (_serial, v2, env, _prometheus) = canary_setup("sw-can", 10, 2.0).await;
    let target = env.swarm_target().await;
    let load = load_against(&env).await;
    let mut child = spawn_deploy(&env, &v2, &[]);
    let steps = held_steps(&target, "r2", &mut child).await;
    let (ok, report, stderr) = finished(child);
    assert!(ok, "{report} {stderr}");
    assert_step_shares(&steps, "r2", "swarm canary");
    assert_eq!(
        report["release"]["analysis"].as_array().unwrap().len(),
        4,
        "{report}"
    );
    assert_eq!(running(&target).await, all("green", "r2"));

    // A fifth of its requests failing: aborted at the first step, and the
    // stable colour serves alone again.
    let child = spawn_deploy(
        &env,
        &v2,
        &[
            "--env",
            "APP_DEBUG_ROUTES=true",
            "--env",
            "APP_ERROR_RATE=0.2",
        ],
    );
    wait_for_share(&target, "r3", 10).await;
    let (ok, report, _) = finished(child);
    let stats = load.stop().await;
    assert!(!ok, "{report}");
    let reason = report["release"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("error-ratio = 0.") && reason.contains("fail at 10 %"),
        "{reason}"
    );
    assert_eq!(running(&target).await, all("green", "r2"));
    let total = stats.ok + stats.failed;
    println!(
        "{} of {total} requests failed over both canaries",
        stats.failed
    );
    assert!(
        stats.failed * 50 < total,
        "errors under 2 % of both runs: {} of {total}",
        stats.failed
    );
    assert!(
        stats.errors.iter().all(|e| e.contains("500")),
        "only the injected errors: {:?}",
        stats.errors
    );
}
