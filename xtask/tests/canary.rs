//! Canary releases on the Docker target, against the real engine, the real
//! HAProxy balancer and a real Prometheus (Debian `prometheus`) scraping the
//! balancer's exporter, under keep-alive load through the public URL. The
//! canary's share is counted from the balancer's own per-server response
//! counters, not from the weights the deploy asked for.
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use support::{
    canary::{
        assert_step_shares, canary_table, finished, held_steps, spawn_deploy, wait_for_share,
        Counter, Counts,
    },
    deploy_env::TestEnv,
};
use xtask::targets::docker::DockerTarget;

/// A canary environment: steps 10 then 50 then 100, 1 s per step, the
/// error ratio limited to 5 %, the balancer's exporter on a known port (the
/// deploy's balancer is made before Prometheus scrapes it).
async fn setup(
    label: &str,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    String,
    String,
    TestEnv,
    u16,
) {
    let serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    support::balancer_image(&docker).await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    let env = TestEnv::new(label, "canary", 0);
    let exporter = support::free_port();
    env.edit("[app.env]", "[app]\ndebug_knobs = true\n[app.env]");
    env.edit(
        "api_rate = 1000000",
        &format!("api_rate = 1000000\nmetrics_port = {exporter}"),
    );
    (serial, v1, v2, env, exporter)
}

impl Counter for DockerTarget {
    async fn count(&self) -> Counts {
        counted(self).await
    }
}

/// Per release: responses the balancer has counted (2xx+4xx+5xx), and the weight it gives.
async fn counted(target: &DockerTarget) -> Counts {
    use xtask::targets::Target;
    let mut out: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    let instances = target.instances().await.unwrap();
    for release in instances.iter().map(|i| i.release.clone()) {
        out.entry(release).or_default();
    }
    let rows = balancer_rows(target).await;
    for container in target.containers().await.unwrap() {
        let Some(row) = container.addr.and_then(|a| {
            rows.iter()
                .find(|r| r.addr == a.to_string() && r.slot.is_some())
        }) else {
            continue;
        };
        let entry = out.entry(container.release).or_default();
        entry.0 += row.hrsp_2xx + row.hrsp_4xx + row.hrsp_5xx;
        entry.1 += row.user_weight;
    }
    out
}

async fn balancer_rows(target: &DockerTarget) -> Vec<xtask::haproxy::ServerStat> {
    xtask::haproxy::HaproxyBalancer::open(target.docker(), target.scope())
        .await
        .unwrap()
        .servers()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_gets_its_shares_and_is_promoted_and_a_killed_one_goes_back_to_stable() {
    let (_serial, v1, v2, env, exporter) = setup("can-good").await;
    // The first release has nothing to compare with: it goes in at once,
    // and makes the balancer Prometheus scrapes.
    canary_table(&env, "http://127.0.0.1:9", 10, 2.0);
    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{first} {stderr}");
    let prometheus = support::prometheus::start(exporter).await;
    env.edit("http://127.0.0.1:9", &prometheus.url);
    let target = env.target().await;
    let load = env
        .load(xtask::targets::Target::public_client(&target).unwrap())
        .await;

    let mut child = spawn_deploy(&env, &v2, &[]);
    let steps = held_steps(&target, "r2", &mut child).await;
    let (ok, report, stderr) = finished(child);
    assert!(ok, "{report} {stderr}");
    let stats = load.stop().await;
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);
    assert_step_shares(&steps, "r2", "canary");
    assert_eq!(report["release"]["outcome"], "active");
    // Every measurement is kept with the release: 2 queries at 2 steps.
    let analysis = report["release"]["analysis"].as_array().unwrap();
    assert_eq!(analysis.len(), 4, "{analysis:?}");
    assert!(
        analysis.iter().all(|m| m["verdict"] == "pass"),
        "{analysis:?}"
    );
    assert_eq!(analysis[0]["step"], 10);
    assert!(
        analysis[0]["query"]
            .as_str()
            .unwrap()
            .contains("server=~\"s"),
        "{analysis:?}"
    );
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["analysis"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // kill -9 while the next canary takes 10 %: the next `status` puts all
    // traffic back on the stable release and removes the canary.
    let mut child = spawn_deploy(&env, &v1, &[]);
    wait_for_share(&target, "r3", 10).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, status, stderr) = env.xtask_json(&["status"]);
    assert!(ok, "{status} {stderr}");
    let now = counted(&target).await;
    assert_eq!(now.get("r3").map_or(0, |c| c.1), 0, "{now:?}");
    assert!(now.get("r2").is_some_and(|c| c.1 > 0), "{now:?}");
    let (_, history, _) = env.xtask_json(&["history"]);
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["outcome"],
        "failed",
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_errors_is_aborted_at_once_and_a_silent_prometheus_never_promotes() {
    let (_serial, v1, v2, env, exporter) = setup("can-bad").await;
    // A first step of 5 %: a fifth of those requests failing is 1 % of the
    // traffic while the step lasts, and the whole run stays under that.
    canary_table(&env, "http://127.0.0.1:9", 5, 1.0);
    assert!(env.xtask_json(&["deploy", "--image", &v1]).0);
    let mut prometheus = support::prometheus::start(exporter).await;
    env.edit("http://127.0.0.1:9", &prometheus.url);
    let target = env.target().await;
    let load = env
        .load(xtask::targets::Target::public_client(&target).unwrap())
        .await;

    // 20 % of its real requests fail; its probes pass, so only the analysis can tell.
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
    let (ok, report, stderr) = finished(child);
    assert!(!stderr.is_empty() || !ok);
    let stats = load.stop().await;
    assert!(!ok, "{report}");
    let reason = report["release"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("error-ratio = 0.") && reason.contains("(limit <= 0.05): fail at 5 %"),
        "{reason}"
    );
    let analysis = report["release"]["analysis"].as_array().unwrap();
    assert!(
        analysis.iter().all(|m| m["step"] == 5),
        "aborted at the first step: {analysis:?}"
    );
    let value = analysis[0]["value"].as_f64().unwrap();
    assert!(
        (0.1..0.3).contains(&value),
        "the ratio measured is about 0.2: {value}"
    );
    // How fast is the bench's to say (`cargo xtask bench deploy`); printed here.
    let rollback = report["rollback_seconds"].as_f64().unwrap();
    println!(
        "stable alone {rollback:.3} s after the failing evaluation; {} of {} requests failed",
        stats.failed,
        stats.ok + stats.failed
    );
    let total = stats.ok + stats.failed;
    assert!(
        stats.failed * 100 < total,
        "errors under 1 %: {} of {total}",
        stats.failed
    );
    let now = counted(&target).await;
    assert_eq!(now.get("r2").map_or(0, |c| c.1), 0, "{now:?}");
    let (_, history, _) = env.xtask_json(&["history"]);
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["analysis"][0]["verdict"], "fail", "{last}");
    let (_, status, _) = env.xtask_json(&["status"]);
    assert_eq!(
        status["latest_release"]["analysis"][0]["verdict"], "fail",
        "{status}"
    );
    let text = env.xtask(&["history"]);
    let shown = String::from_utf8_lossy(&text.stderr);
    assert!(
        shown.contains("canary analysis of r2") && shown.contains("error-ratio"),
        "{shown}"
    );

    // Prometheus gone once the canary has its 10 %: inconclusive, never promoted.
    let child = spawn_deploy(&env, &v2, &[]);
    wait_for_share(&target, "r3", 5).await;
    prometheus.stop();
    let (ok, report, _) = finished(child);
    assert!(!ok, "{report}");
    let analysis = report["release"]["analysis"].as_array().unwrap();
    assert!(
        analysis
            .iter()
            .any(|m| m["verdict"] == "inconclusive" && !m["dry_run"].as_bool().unwrap()),
        "{analysis:?}"
    );
    assert!(
        report["release"]["reason"]
            .as_str()
            .unwrap()
            .contains("inconclusive"),
        "{report}"
    );
    let now = counted(&target).await;
    assert_eq!(now.get("r3").map_or(0, |c| c.1), 0, "{now:?}");
    assert!(now.get("r1").is_some_and(|c| c.1 > 0), "{now:?}");
}
