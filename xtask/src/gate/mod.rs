//! Probes and the health gate. A failed probe is data (a `ProbeResult`),
//! not an error: the gate decides from counts, container state and time.
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{
    environment::HealthConfig,
    progress::Step,
    targets::{Instance, InstanceState, Target},
};

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

#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub passed: bool,
    pub probes: u32,
    pub failures: u32,
    pub seconds: f64,
    /// Why it failed, in words for the release record.
    pub reason: Option<String>,
    /// When the first failed probe (or the exit) was seen, for the rollback-time measurement.
    #[serde(skip)]
    pub first_failure: Option<Instant>,
}

/// Probes one new instance directly until it passes (`success_threshold`
/// consecutive 2xx) or fails: `failure_threshold` consecutive failures after
/// the initial delay, the container exiting or restarting, or the deadline.
pub async fn gate(
    target: &impl Target,
    instance: &Instance,
    config: &HealthConfig,
    step: &Step,
) -> GateReport {
    let client = reqwest::Client::new();
    let url = format!("{}{}", instance.probe_url, config.path);
    let started = Instant::now();
    let mut report = GateReport {
        passed: false,
        probes: 0,
        failures: 0,
        seconds: 0.0,
        reason: None,
        first_failure: None,
    };
    let (mut successes, mut consecutive_failures) = (0u32, 0u32);
    tokio::time::sleep(Duration::from_millis(config.initial_delay_ms)).await;
    loop {
        match target.instance_state(instance).await {
            Ok(InstanceState::Running { restarts: 0 }) => {}
            Ok(state) => {
                report.first_failure.get_or_insert_with(Instant::now);
                report.reason = Some(match state {
                    InstanceState::Exited { code } => format!(
                        "instance {} exited with code {code} before passing the gate",
                        instance.name
                    ),
                    InstanceState::Running { restarts } => format!(
                        "instance {} restarted {restarts} time(s) during the gate",
                        instance.name
                    ),
                    InstanceState::Missing => {
                        format!("instance {} disappeared during the gate", instance.name)
                    }
                });
                break;
            }
            Err(e) => {
                report.reason = Some(format!("cannot inspect instance {}: {e:#}", instance.name));
                break;
            }
        }
        let result = probe(&client, &url, config.timeout()).await;
        report.probes += 1;
        if result.ok() {
            successes += 1;
            consecutive_failures = 0;
            if successes >= config.success_threshold {
                report.passed = true;
                break;
            }
        } else {
            report.failures += 1;
            report.first_failure.get_or_insert_with(Instant::now);
            successes = 0;
            consecutive_failures += 1;
            if consecutive_failures >= config.failure_threshold {
                report.reason = Some(format!(
                    "{url} failed {consecutive_failures} probes in a row (last: {})",
                    result.describe()
                ));
                break;
            }
        }
        step.line(&format!(
            "{}: {} probes, {} failed, last {}",
            instance.name,
            report.probes,
            report.failures,
            result.describe()
        ));
        if started.elapsed() > config.deadline() {
            report.reason = Some(format!(
                "{url} not healthy within the {}s deadline",
                config.deadline_seconds
            ));
            break;
        }
        tokio::time::sleep(config.interval()).await;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

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
