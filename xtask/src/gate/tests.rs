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
