//! The canary tests' Prometheus (`xtask::prometheus`), failing loudly when
//! the binary is missing.
pub use xtask::prometheus::Prometheus;

/// Started and scraping the balancer's exporter, or the test fails naming why.
pub async fn start(exporter_port: u16) -> Prometheus {
    Prometheus::start(exporter_port)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}
