//! One HTTP probe. A failed probe is data (a `ProbeResult`), not an error:
//! the gate decides from counts, instance state and time.
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

impl ProbeResult {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn describe(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        }
    }
}

pub async fn probe(client: &reqwest::Client, url: &str, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let result = client.get(url).timeout(timeout).send().await;
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    match result {
        Ok(response) => ProbeResult {
            url: url.to_owned(),
            status: Some(response.status().as_u16()),
            latency_ms,
            error: None,
        },
        Err(e) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection refused"
            } else {
                "request failed"
            };
            ProbeResult {
                url: url.to_owned(),
                status: None,
                latency_ms,
                error: Some(kind.to_owned()),
            }
        }
    }
}
