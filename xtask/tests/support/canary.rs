//! What the canary tests of every target share: the environment's
//! `[canary]` table, the deploy in a child process, and counting each
//! step's share from the balancer's own per-server response counters.
use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::deploy_env::TestEnv;

/// Per release: responses the balancer has counted (2xx+4xx+5xx), and the weight it gives.
pub type Counts = BTreeMap<String, (u64, u32)>;

/// A target whose balancer's counters a test can read.
#[allow(async_fn_in_trait)]
pub trait Counter {
    async fn count(&self) -> Counts;
}

/// The canary's error ratio over the last 2 s, from the balancer's counters.
pub const ERROR_RATIO: &str = r#"sum(rate(haproxy_server_http_responses_total{proxy="app",server=~"{{canary}}",code="5xx"}[2s])) / sum(rate(haproxy_server_http_responses_total{proxy="app",server=~"{{canary}}"}[2s]))"#;

pub fn canary_table(env: &TestEnv, prometheus: &str, first_step: u8, pause: f64) {
    env.append(&format!(
        "[canary]\nsteps = [{first_step}, 50, 100]\npause_seconds = {pause}\nprometheus_url = \"{prometheus}\"\n\
         [[canary.analysis]]\nname = \"error-ratio\"\nquery = '{ERROR_RATIO}'\nmax = 0.05\n\
         [[canary.analysis]]\nname = \"requests\"\nquery = 'sum(rate(haproxy_server_http_responses_total{{proxy=\"app\",server=~\"{{{{canary}}}}\"}}[2s]))'\nmin = 1\ndry_run = true\n"
    ));
}

/// `deploy IMAGE --json` (plus `extra`) in a child process.
pub fn spawn_deploy(env: &TestEnv, image: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deploy", "--image", image, "--json", "-e", env.arg()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn finished(child: Child) -> (bool, serde_json::Value, String) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); stderr:\n{stderr}"));
    (out.status.success(), json, stderr)
}

/// Waits until the balancer gives `release` `percent` of the weight (±1).
pub async fn wait_for_share(
    counter: &impl Counter,
    release: &str,
    percent: u32,
) -> BTreeMap<String, (u64, u32)> {
    for _ in 0..600 {
        let now = counter.count().await;
        let total: u32 = now.values().map(|(_, w)| w).sum();
        let mine = now.get(release).map_or(0, |(_, w)| *w);
        if total > 0 && (mine * 100 / total).abs_diff(percent) <= 1 {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{release} never got {percent} % of the weight");
}

/// While `deploy` runs: for each weight share `release` held, the first and
/// the last count taken at that share. Shares only rise during a canary, so
/// everything between two counts at one share was served at that share.
pub async fn held_steps(
    counter: &impl Counter,
    release: &str,
    deploy: &mut Child,
) -> BTreeMap<u32, (Counts, Counts)> {
    let mut steps: BTreeMap<u32, (Counts, Counts)> = BTreeMap::new();
    while deploy.try_wait().unwrap().is_none() {
        let now = counter.count().await;
        let total: u32 = now.values().map(|(_, w)| w).sum();
        let mine = now.get(release).map_or(0, |(_, w)| *w);
        if total > 0 && mine > 0 {
            let share = ((mine * 100 + total / 2) / total).clamp(1, 100);
            steps
                .entry(share)
                .and_modify(|(_, last)| *last = now.clone())
                .or_insert_with(|| (now.clone(), now));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    steps
}

/// The share of the responses `release` served between two counts, in percent, and how many.
pub fn served_share(
    before: &BTreeMap<String, (u64, u32)>,
    after: &BTreeMap<String, (u64, u32)>,
    release: &str,
) -> (f64, u64) {
    let delta = |r: &str| {
        after
            .get(r)
            .map_or(0, |a| a.0)
            .saturating_sub(before.get(r).map_or(0, |b| b.0))
    };
    let total: u64 = after.keys().map(|r| delta(r)).sum();
    (delta(release) as f64 * 100.0 / total.max(1) as f64, total)
}

/// The shares `release` served while it held 10 % and 50 % of the weight,
/// counted by the balancer: within 3 and 5 points, over enough requests.
pub fn assert_step_shares(steps: &BTreeMap<u32, (Counts, Counts)>, release: &str, what: &str) {
    let share = |step: u32| {
        steps
            .get(&step)
            .map_or((0.0, 0), |(a, b)| served_share(a, b, release))
    };
    let ((share_10, counted_10), (share_50, counted_50)) = (share(10), share(50));
    println!("{what} served {share_10:.1} % of {counted_10} at 10 %, {share_50:.1} % of {counted_50} at 50 %");
    assert!(
        counted_10 >= 100 && counted_50 >= 100,
        "enough requests to count: {counted_10}, {counted_50}"
    );
    assert!(
        (share_10 - 10.0).abs() <= 3.0,
        "10 % step served {share_10:.1} %"
    );
    assert!(
        (share_50 - 50.0).abs() <= 5.0,
        "50 % step served {share_50:.1} %"
    );
}
