//! The verification window: after traffic moved, the public URL is watched
//! before the old release goes, and the first failure ends it.
use std::time::Instant;

use super::probe::probe;
use crate::{environment::HealthConfig, progress::Step};

/// Watches the public URL for the verification window; the first failure ends it.
pub async fn verify_public(
    client: &reqwest::Client,
    public_url: &str,
    config: &HealthConfig,
    step: &Step,
) -> Result<u32, String> {
    let url = format!("{public_url}{}", config.path);
    let until = Instant::now() + config.verify();
    let mut probes = 0;
    loop {
        let result = probe(client, &url, config.timeout()).await;
        probes += 1;
        if !result.ok() {
            return Err(format!(
                "public {url} answered {} during verification",
                result.describe()
            ));
        }
        step.line(&format!("public {url}: {probes} probes ok"));
        if Instant::now() >= until {
            return Ok(probes);
        }
        tokio::time::sleep(config.interval()).await;
    }
}
