//! Serving and the shutdown sequence an orchestrator expects:
//! SIGTERM -> `/ready` answers 503 at once -> keep serving for the drain
//! window while balancers take the instance out -> stop accepting -> let
//! in-flight requests finish (bounded) -> exit 0.
use std::{net::SocketAddr, os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, Result};
use axum::Router;
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    config::Config,
    deps::Dependency,
    routes,
    state::{self, AppState},
};

pub async fn serve(config: Config) -> Result<()> {
    // The socket first: once TCP accepts, the socket exists with its mode set
    // (a caller that waits for the port can rely on both).
    let unix = match &config.listen_socket {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    let address = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address} (PORT/BIND)"))?;
    let state = AppState::new(Dependency::from_config(&config));
    tracing::info!(%address, version = state::VERSION, revision = state::REVISION, "listening");
    tokio::spawn(state::wait_until_started(state.clone()));

    let app = routes::router(state.clone(), config.debug_routes, config.error_rate);
    let (stop_accepting, stopped) = watch::channel(false);
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
        let _ = stop_accepting.send(true);
    });

    let servers = async {
        let tcp = serve_until(listener, app.clone(), stopped.clone(), "TCP");
        match unix {
            Some(unix) => {
                let (a, b) = tokio::join!(
                    tcp,
                    serve_until(unix, app, stopped.clone(), "the unix socket")
                );
                a.and(b)
            }
            None => tcp.await,
        }
    };
    let mut deadline_signal = stopped.clone();
    tokio::select! {
        served = servers => served?,
        () = async {
            let _ = deadline_signal.wait_for(|stop| *stop).await;
            tokio::time::sleep(shutdown_timeout).await;
        } => {
            tracing::warn!(timeout_seconds = shutdown_timeout.as_secs_f64(), "in-flight requests still running at the shutdown deadline; exiting anyway");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds the socket world-writable: the balancer's workers run as another user.
fn bind_unix(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding {} (LISTEN_SOCKET)", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("making {} reachable by the balancer", path.display()))?;
    tracing::info!(socket = %path.display(), "listening on unix socket");
    Ok(listener)
}

/// Serves until `stop` turns true, then finishes in-flight requests.
async fn serve_until<L>(
    listener: L,
    app: Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await
        .with_context(|| format!("serving HTTP on {what}"))
}

async fn termination_signal() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
