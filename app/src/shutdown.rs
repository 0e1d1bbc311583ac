//! Serving and the shutdown sequence an orchestrator expects:
//! SIGTERM -> `/ready` answers 503 at once -> keep serving for the drain
//! window while balancers take the instance out -> stop accepting -> let
//! in-flight requests finish (bounded) -> exit 0.
use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::oneshot,
};

use crate::{
    config::Config,
    deps::Dependency,
    routes,
    state::{self, AppState},
};

pub async fn serve(config: Config) -> Result<()> {
    let address = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address} (PORT/BIND)"))?;
    let state = AppState::new(Dependency::from_config(&config));
    tracing::info!(%address, version = state::VERSION, revision = state::REVISION, "listening");
    tokio::spawn(state::wait_until_started(state.clone()));

    let app = routes::router(state.clone(), config.debug_routes);
    let (stop_accepting, stopped) = oneshot::channel::<()>();
    let (drain, shutdown_timeout) = (config.drain, config.shutdown_timeout);
    let lifecycle = state.clone();
    tokio::spawn(async move {
        let name = termination_signal().await;
        lifecycle.begin_drain();
        tracing::info!(
            signal = name,
            drain_seconds = drain.as_secs_f64(),
            "draining: /ready now answers 503"
        );
        tokio::time::sleep(drain).await;
        tracing::info!("drain window over: no longer accepting connections");
        let _ = stop_accepting.send(());
    });

    let (in_flight_deadline_tx, in_flight_deadline) = oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.await;
        let _ = in_flight_deadline_tx.send(());
    });
    tokio::select! {
        served = server => served.context("serving HTTP")?,
        () = async {
            let _ = in_flight_deadline.await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!(timeout_seconds = shutdown_timeout.as_secs_f64(), "in-flight requests still running at the shutdown deadline; exiting anyway");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn termination_signal() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
