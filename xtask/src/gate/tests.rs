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
