//! A Prometheus of our own (Debian `prometheus`) scraping one balancer's
//! exporter every 250 ms, for the canary benchmark and tests: their
//! analysis asks it. Killed on drop. It needs the binary; `cargo xtask ci`
//! installs it, the benchmark installs it, a test fails when it is missing.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Started on a free loopback port; returns once it has scraped the
    /// exporter at `127.0.0.1:<exporter_port>` successfully.
    pub async fn start(exporter_port: u16) -> Result<Prometheus> {
        let binary = which::which("prometheus").context(
            "`prometheus` is not installed (Debian package `prometheus`; `cargo xtask ci` installs it)",
        )?;
        let dir = tempfile::tempdir().context("a folder for Prometheus")?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: balancer\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?;
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let query = format!("{}/api/v1/query?query=up", prometheus.url);
        for _ in 0..300 {
            if let Ok(r) = client.get(&query).send().await {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["data"]["result"][0]["value"][1] == "1" {
                    return Ok(prometheus);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "Prometheus never scraped the balancer's exporter at 127.0.0.1:{exporter_port}"
        )
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
