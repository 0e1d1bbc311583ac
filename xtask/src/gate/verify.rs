//! The verification window: after traffic moved, the public URL is watched
//! before the old release goes. Each round
//! probes the health path and every `health.verify_paths` route: a release
//! whose health answers while its API fails must not stay.
use std::time::Instant;

use super::probe::probe;
use crate::{environment::HealthConfig, progress::Step};

/// The URLs one round probes: the health path first, then the real routes.
pub fn round_urls(public_url: &str, config: &HealthConfig) -> Vec<String> {
    std::iter::once(&config.path)
        .chain(&config.verify_paths)
        .map(|path| format!("{public_url}{path}"))
        .collect()
}

/// One round: every URL probed at once.
pub async fn probe_round(
    client: &reqwest::Client,
    urls: &[String],
    timeout: std::time::Duration,
) -> Vec<super::ProbeResult> {
    futures_util::future::join_all(urls.iter().map(|url| probe(client, url, timeout))).await
}

/// Watches the public URL for the verification window. `failure_threshold`
/// failed rounds in a row fail it, as they fail the gate: one probe that
/// timed out on a loaded runner is not the release's fault, a release that
/// answers 500 fails every round. The window does not end on a failing round.
pub async fn verify_public(
    client: &reqwest::Client,
    public_url: &str,
    config: &HealthConfig,
    step: &Step,
) -> Result<u32, String> {
    let urls = round_urls(public_url, config);
    let until = Instant::now() + config.verify();
    let mut streak = super::watch::Watch::public_only(config.failure_threshold);
    let mut rounds = 0;
    loop {
        let results = probe_round(client, &urls, config.timeout()).await;
        rounds += 1;
        if let Some(reason) = streak.take(&results, &[]) {
            return Err(format!("{reason} during verification"));
        }
        match results.iter().find(|r| !r.ok()) {
            Some(failed) => step.line(&format!(
                "public {} answered {}: watching on",
                failed.url,
                failed.describe()
            )),
            None if Instant::now() >= until => return Ok(rounds),
            None => step.line(&format!(
                "public {public_url}: {rounds} rounds ok ({} paths each)",
                urls.len()
            )),
        }
        tokio::time::sleep(config.interval()).await;
    }
}
