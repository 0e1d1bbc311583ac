//! The gate's conditions, as pure functions of what was observed.
use std::time::{Duration, Instant};

use super::Tally;
use crate::{
    environment::HealthConfig,
    gate::ProbeResult,
    targets::{Check, InstanceState, Seen},
};

fn health() -> HealthConfig {
    HealthConfig {
        path: "/ready".into(),
        interval_ms: 100,
        timeout_ms: 100,
        initial_delay_ms: 1000,
        success_threshold: 2,
        failure_threshold: 2,
        deadline_seconds: 10,
        drain_seconds: 0.0,
        verify_seconds: 0.0,
        verify_paths: Vec::new(),
    }
}

fn seen(state: InstanceState, status: Option<u16>) -> Seen {
    Seen {
        id: "i".into(),
        name: "i".into(),
        state,
        check: status.map(|s| {
            Check::Probe(ProbeResult {
                url: "http://i/ready".into(),
                status: Some(s),
                latency_ms: 1.0,
                error: None,
            })
        }),
        detail: Some("pulling".into()),
    }
}

const UP: InstanceState = InstanceState::Running { restarts: 0 };

#[test]
fn failures_inside_the_initial_delay_do_not_count_and_successes_in_a_row_pass() {
    let (h, t0) = (health(), Instant::now());
    let mut tally = Tally::new(t0);
    for _ in 0..5 {
        tally.take(&seen(UP, Some(503)), &h, t0).unwrap();
    }
    tally.take(&seen(UP, Some(200)), &h, t0).unwrap();
    assert!(!tally.ready, "one success of two");
    tally.take(&seen(UP, Some(200)), &h, t0).unwrap();
    assert!(tally.ready);
}

#[test]
fn failures_in_a_row_after_the_delay_fail_and_name_the_last_answer() {
    let (h, t0) = (health(), Instant::now());
    let later = t0 + Duration::from_secs(2);
    let mut tally = Tally::new(t0);
    tally.take(&seen(UP, Some(503)), &h, later).unwrap();
    let err = tally.take(&seen(UP, Some(503)), &h, later).unwrap_err();
    assert!(
        err.contains("failed 2 probes in a row (last: HTTP 503)"),
        "{err}"
    );
    assert_eq!(
        tally.first_failure,
        Some(later),
        "the rollback clock starts at the first"
    );
}

#[test]
fn an_exit_a_restart_or_the_deadline_fail_at_once() {
    let (h, t0) = (health(), Instant::now());
    let err = Tally::new(t0)
        .take(&seen(InstanceState::Exited { code: 2 }, None), &h, t0)
        .unwrap_err();
    assert!(err.contains("exited with code 2"), "{err}");
    let err = Tally::new(t0)
        .take(&seen(InstanceState::Running { restarts: 1 }, None), &h, t0)
        .unwrap_err();
    assert!(err.contains("restarted 1 time(s)"), "{err}");
    let err = Tally::new(t0)
        .take(
            &seen(InstanceState::Pending, None),
            &h,
            t0 + Duration::from_secs(11),
        )
        .unwrap_err();
    assert!(
        err.contains("not ready within the 10s deadline (pulling)"),
        "{err}"
    );
}

fn checked(check: Check) -> Seen {
    Seen {
        check: Some(check),
        ..seen(UP, None)
    }
}

#[test]
fn a_failed_balancer_check_counts_like_a_failed_probe_and_names_its_evidence() {
    let (h, t0) = (health(), Instant::now());
    let down = || {
        checked(Check::Failed {
            reason: "HAProxy check L7STS, HTTP 503".into(),
        })
    };
    let mut tally = Tally::new(t0);
    // Inside the initial delay (an app still binding its port) it does not count.
    for _ in 0..5 {
        tally.take(&down(), &h, t0).unwrap();
    }
    let later = t0 + Duration::from_secs(2);
    tally.take(&down(), &h, later).unwrap();
    let err = tally.take(&down(), &h, later).unwrap_err();
    assert!(
        err.contains("HAProxy check L7STS, HTTP 503 (2 looks in a row)"),
        "{err}"
    );
    assert!(!tally.ready);
}

#[test]
fn a_never_ready_instance_is_never_reported_ready() {
    let (h, t0) = (health(), Instant::now());
    let mut tally = Tally::new(t0);
    // UP after maint before any check ("UP 1/2"), then DOWN: never ready.
    let looks = [
        Check::Reported { ready: false },
        Check::Failed {
            reason: "DOWN".into(),
        },
        Check::Reported { ready: false },
    ];
    for (i, check) in looks.into_iter().cycle().take(60).enumerate() {
        let now = t0 + Duration::from_millis(100 * i as u64);
        match tally.take(&checked(check), &h, now) {
            Ok(()) => assert!(!tally.ready),
            Err(e) => {
                assert!(e.contains("deadline"), "{e}");
                return;
            }
        }
    }
    let err = tally
        .take(&down_look(), &h, t0 + Duration::from_secs(11))
        .unwrap_err();
    assert!(
        err.contains("deadline") || err.contains("in a row"),
        "{err}"
    );
    assert!(!tally.ready);
}

fn down_look() -> Seen {
    checked(Check::Failed {
        reason: "DOWN".into(),
    })
}

#[test]
fn a_verification_round_probes_the_health_path_then_each_real_route() {
    let mut config = health();
    assert_eq!(
        super::verify::round_urls("https://h:1", &config),
        ["https://h:1/ready"]
    );
    config.verify_paths = vec!["/items".into(), "/version".into()];
    assert_eq!(
        super::verify::round_urls("https://h:1", &config),
        [
            "https://h:1/ready",
            "https://h:1/items",
            "https://h:1/version"
        ]
    );
}

/// A public URL whose first `bad` answers are 503, then 200.
async fn flaky_public(bad: u32) -> String {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };
    let seen = Arc::new(AtomicU32::new(0));
    let app = axum::Router::new().fallback(move || {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            match n < bad {
                true => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                false => axum::http::StatusCode::OK,
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// One failed round is forgiven (a probe lost on a loaded runner);
/// `failure_threshold` in a row fail the window, and it never ends on one.
#[tokio::test]
async fn verification_fails_on_failed_rounds_in_a_row_only() {
    let client = reqwest::Client::new();
    let step = crate::progress::Step::start("verify", true);
    let config = health(); // failure_threshold 2, verify_seconds 0
    let url = flaky_public(1).await;
    assert_eq!(
        super::verify_public(&client, &url, &config, &step).await,
        Ok(2)
    );
    let url = flaky_public(u32::MAX).await;
    let failed = super::verify_public(&client, &url, &config, &step).await;
    assert_eq!(
        failed,
        Err(format!(
            "public {url}/ready answered HTTP 503 (2 rounds in a row) during verification"
        ))
    );
}
