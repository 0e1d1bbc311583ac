//! What every handler shares: the lifecycle phase (starting, serving,
//! draining), the configured dependencies and the metrics.
use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{deps::Dependency, metrics::Metrics};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("APP_GIT_REVISION");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Serving = 1,
    Draining = 2,
}

pub struct AppState {
    phase: AtomicU8,
    pub started_at: Instant,
    pub dependencies: Vec<Dependency>,
    pub metrics: Metrics,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(dependencies: Vec<Dependency>) -> SharedState {
        Arc::new(AppState {
            phase: AtomicU8::new(Phase::Starting as u8),
            started_at: Instant::now(),
            dependencies,
            metrics: Metrics::new(VERSION, REVISION),
        })
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }

    /// Starting -> Serving only: a SIGTERM that came during start-up wins.
    pub fn mark_started(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Starting as u8,
            Phase::Serving as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    pub fn begin_drain(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::SeqCst);
    }

    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }
}

/// Start-up gate: the service becomes ready once every required dependency
/// answers. Retries with a capped back-off, forever: an orchestrator decides
/// when a start has taken too long, not the service.
pub async fn wait_until_started(state: SharedState) {
    let mut delay = Duration::from_millis(100);
    loop {
        let mut all_up = true;
        for dep in state.dependencies.iter().filter(|d| d.required) {
            let result = dep.check().await;
            if !result.is_up() {
                tracing::warn!(
                    dependency = dep.name,
                    error = result.error.as_deref().unwrap_or("unknown"),
                    "start-up check failed; not ready yet"
                );
                all_up = false;
            }
        }
        if all_up {
            state.mark_started();
            tracing::info!("start-up checks passed; ready");
            return;
        }
        if state.phase() == Phase::Draining {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
