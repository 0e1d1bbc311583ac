//! A Prometheus of the test's own (Debian `prometheus`), scraping one
//! balancer's exporter: the canary tests' analysis asks it.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A Prometheus of the test's own, scraping the balancer's exporter every
/// 250 ms; killed on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(exporter_port: u16) -> Prometheus {
        let binary = which::which("prometheus").unwrap_or_else(|_| {
            panic!("`prometheus` is not installed: run `cargo xtask ci`, which installs the test services")
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: balancer\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
            ),
        )
        .unwrap();
        let port = super::free_port();
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
            .unwrap();
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Ready, and one scrape of the balancer in.
        let client = reqwest::Client::new();
        let query = format!("{}/api/v1/query?query=up", prometheus.url);
        for _ in 0..200 {
            if let Ok(r) = client.get(&query).send().await {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["data"]["result"][0]["value"][1] == "1" {
                    return prometheus;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Prometheus never scraped the balancer at 127.0.0.1:{exporter_port}");
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
