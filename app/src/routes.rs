//! The HTTP surface: liveness, readiness, detailed health, metrics, version.
use std::{collections::BTreeMap, time::Duration};

use axum::{
    extract::{Path, State},
    http::{header, HeaderName, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures_util::future::join_all;
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::{
    deps::CheckResult,
    metrics,
    state::{Phase, SharedState, REVISION, VERSION},
};

pub fn router(state: SharedState, debug_routes: bool, error_rate: f64) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut router = Router::new()
        .route("/health", get(liveness))
        .route("/ready", get(readiness))
        .route("/health/detailed", get(detailed))
        .route("/metrics", get(prometheus_text))
        .route("/version", get(version))
        .merge(crate::items::router(&state));
    if debug_routes {
        router = router.route("/debug/sleep/{ms}", get(sleep));
    }
    if error_rate > 0.0 {
        let errors = std::sync::Arc::new(Misbehave::new(error_rate));
        router = router.layer(middleware::from_fn(move |request, next| {
            misbehave(errors.clone(), request, next)
        }));
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        // Outermost: the id exists before tracking logs it, and is echoed back.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Fails exactly `rate` of the requests it sees, spread evenly (a counter,
/// not chance: a test's error ratio is then what it set).
pub struct Misbehave {
    rate: f64,
    seen: std::sync::atomic::AtomicU64,
}

impl Misbehave {
    pub fn new(rate: f64) -> Misbehave {
        Misbehave {
            rate,
            seen: 0.into(),
        }
    }

    /// Whether the next request fails.
    pub fn next_fails(&self) -> bool {
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

/// The probes and `/metrics` never misbehave: a canary with errors passes
/// its readiness gate, and only its real traffic shows the errors.
async fn misbehave(
    errors: std::sync::Arc<Misbehave>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let path = request.uri().path();
    let probe = matches!(path, "/health" | "/ready" | "/health/detailed" | "/metrics");
    if !probe && errors.next_fails() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected error (APP_ERROR_RATE)\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readiness(State(state): State<SharedState>) -> Response {
    match state.phase() {
        Phase::Starting => return unavailable("starting", None),
        Phase::Draining => return unavailable("draining", None),
        Phase::Serving => {}
    }
    let checks = run_checks(&state, true).await;
    if checks.values().all(CheckResult::is_up) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        unavailable("dependency down", Some(checks))
    }
}

async fn detailed(State(state): State<SharedState>) -> Response {
    let checks = run_checks(&state, false).await;
    let required_down = checks.values().any(|c| c.required && !c.is_up());
    let any_down = checks.values().any(|c| !c.is_up());
    let status = if required_down {
        "down"
    } else if any_down {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "phase": format!("{:?}", state.phase()).to_lowercase(),
        "version": VERSION,
        "revision": REVISION,
        "uptime_seconds": state.uptime().as_secs(),
        "checks": checks,
    });
    let code = if required_down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

async fn prometheus_text(State(state): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({ "version": VERSION, "revision": REVISION }))
}

async fn sleep(Path(ms): Path<u64>) -> Json<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    Json(json!({ "slept_ms": ms }))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))).into_response()
}

fn unavailable(reason: &str, checks: Option<BTreeMap<&'static str, CheckResult>>) -> Response {
    let mut body = json!({ "status": "unavailable", "reason": reason });
    if let Some(checks) = checks {
        body["checks"] = json!(checks);
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn run_checks(
    state: &SharedState,
    required_only: bool,
) -> BTreeMap<&'static str, CheckResult> {
    let deps = state
        .dependencies
        .iter()
        .filter(|d| d.required || !required_only);
    // Concurrently, so a slow Redis does not delay the PostgreSQL answer.
    join_all(deps.map(|d| async move { (d.name, d.check().await) }))
        .await
        .into_iter()
        .collect()
}
