//! Serving and the shutdown sequence an orchestrator expects:
//! SIGTERM -> `/ready` answers 503 at once -> keep serving for the drain
//! window while balancers take the instance out -> stop accepting -> let
//! in-flight requests finish (bounded) -> exit 0.
use std::{net::SocketAddr, os::unix::fs::PermissionsExt, path::Path, time::Duration};

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

/// Binds the socket for its owner and group only (0660): a process of
/// another user on the host could otherwise send it requests that skip the
/// balancer's TLS, rate limits and /metrics rule. A balancer that runs as
/// another user reaches it through the group (or as root).
fn bind_unix(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding {} (LISTEN_SOCKET)", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("making {} reachable by the balancer", path.display()))?;
    tracing::info!(socket = %path.display(), "listening on unix socket");
    Ok(listener)
}

/// How long a client may take to send a request's headers (and how long a
/// kept-alive connection may sit idle): a client that trickles its headers
/// byte by byte (slowloris) is cut off instead of holding a connection and
/// its task for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1 until `stop` turns true, then finishes in-flight requests.
/// `axum::serve` sets no header read timeout (hyper has no timer there), so
/// connections are served here, with one.
async fn serve_until<L>(
    mut listener: L,
    app: Router,
    stop: watch::Receiver<bool>,
    what: &'static str,
) -> Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        service::TowerToHyperService,
    };
    use tower::ServiceExt;
    // Each connection holds a receiver; all dropped means all finished.
    let (open_tx, open_rx) = watch::channel(());
    let mut stopping = stop.clone();
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => break,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            |r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
        ));
        let mut stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    tracing::debug!(on = what, "every connection finished");
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
