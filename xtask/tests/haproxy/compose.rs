//! The compose stacks' balancer config for real, without an engine: the
//! rendering `cargo xtask compose-config` writes, run by this machine's
//! HAProxy (the series the compose image pins) as a process in front of the
//! app binary, every listener on 127.0.0.1. The server address is the app's
//! 127.0.0.1 port instead of the compose service's DNS name; everything
//! else is what compose runs. Each behaviour `tests/nginx.rs` checks of the
//! nginx front is checked here.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use futures_util::{stream, StreamExt};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use reqwest::StatusCode;
use xtask::{
    haproxy::{
        compose::{self, ComposeSettings},
        dev_pem, runtime,
    },
    workspace,
};

use super::{assert_security_headers, client, support::free_port};

/// A process this test started; stopped and reaped however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command, log: &Path) -> Running {
    let file = std::fs::File::create(log).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    Running(child)
}

fn app_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // CARGO_BIN_EXE_app exists only for the app package's own tests.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "app"])
            .current_dir(workspace::root())
            .status()
            .expect("running cargo build -p app");
        assert!(status.success(), "cargo build -p app failed");
        workspace::target_dir().join("debug/app")
    })
}

/// Field order is drop order: processes stop before their folder goes.
pub struct Front {
    _haproxy: Running,
    _apps: Vec<Running>,
    pub http: u16,
    pub https: u16,
    pub exporter: u16,
    /// The one port every replica listens on.
    pub app_port: u16,
    dir: tempfile::TempDir,
}

impl Front {
    /// The app on 127.0.0.1, then HAProxy with the dev compose rendering, `tune`d.
    async fn start(tune: impl FnOnce(&mut ComposeSettings)) -> Front {
        Front::replicas(&["127.0.0.1"], tune).await
    }

    /// One app per address in `binds`, all on the same port (as compose's
    /// replicas are), then HAProxy with the dev compose rendering pointed at
    /// the first address, then `tune`d.
    pub async fn replicas(binds: &[&str], tune: impl FnOnce(&mut ComposeSettings)) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let app_port = free_port();
        let apps = binds
            .iter()
            .map(|bind| {
                spawn(
                    Command::new(app_binary())
                        .env("PORT", app_port.to_string())
                        .env("BIND", bind)
                        .env("LOG_FORMAT", "json")
                        .env("DRAIN_SECONDS", "0")
                        .env_remove("DATABASE_URL")
                        .env_remove("REDIS_URL"),
                    &dir.path().join(format!("app-{bind}.log")),
                )
            })
            .collect();
        let (http, https, exporter) = (free_port(), free_port(), free_port());
        let mut settings = ComposeSettings::dev(https);
        settings.app_host = binds[0].into();
        settings.app_port = app_port;
        let h = &mut settings.haproxy;
        h.http_bind = format!("127.0.0.1:{http}");
        h.https_bind = format!("127.0.0.1:{https}");
        h.exporter_bind = format!("127.0.0.1:{exporter}");
        h.cert_path = dir.path().join("balancer.pem").display().to_string();
        h.socket_path = dir.path().join("admin.sock").display().to_string();
        h.check_interval_ms = 300;
        tune(&mut settings);
        let config = compose::write(dir.path(), &settings, Some(&dev_pem().unwrap().1)).unwrap();
        let haproxy = spawn(
            Command::new("haproxy").arg("-f").arg(&config),
            &dir.path().join("haproxy.log"),
        );
        let front = Front {
            _haproxy: haproxy,
            _apps: apps,
            http,
            https,
            exporter,
            app_port,
            dir,
        };
        front.wait_until_served().await;
        front
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }

    /// The backend's slots, from the admin socket's `show stat`.
    pub fn servers(&self) -> Vec<runtime::ServerStat> {
        use std::io::{Read, Write};
        let path = self.dir.path().join("admin.sock");
        let mut socket = std::os::unix::net::UnixStream::connect(path).unwrap();
        socket.write_all(b"show stat\n").unwrap();
        let mut text = String::new();
        socket.read_to_string(&mut text).unwrap();
        runtime::parse_show_stat(&text).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Until a request goes through HAProxy to the app (both start, the
    /// health checks pass).
    pub async fn wait_until_served(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = client.get(self.url("/health")).send().await;
            if answer.as_ref().is_ok_and(|a| a.status() == StatusCode::OK) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "no /health through HAProxy within 20s ({answer:?}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn compose_http_redirects_to_https_which_sends_security_headers_and_logs_timing() {
    let front = Front::start(|_| {}).await;
    let client = client();

    let plain = client
        .get(format!("http://127.0.0.1:{}/version?x=1", front.http))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        plain.headers()["location"],
        format!("https://127.0.0.1:{}/version?x=1", front.https).as_str()
    );

    let secure = client.get(front.url("/version")).send().await.unwrap();
    assert_eq!(secure.status(), StatusCode::OK);
    let headers = secure.headers().clone();
    let body = secure.text().await.unwrap();
    assert!(body.contains("version"), "not the app's /version: {body}");
    assert_security_headers(&headers);
    // Nothing names the proxy or its version (nginx needed server_tokens off).
    assert!(headers.get("server").is_none(), "{headers:?}");
    assert_eq!(headers["x-request-id"].to_str().unwrap().len(), 36);

    // Errors from the app carry the headers too.
    let missing = client.get(front.url("/no-such-page")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_security_headers(missing.headers());

    // The request's log line, with the server slot and its five timers
    // (TR/Tw/Tc/Tr/Ta); HAProxy writes it as the request ends.
    let mut line = None;
    for _ in 0..40 {
        line = front
            .log()
            .lines()
            .find(|l| l.contains("\"GET /version HTTP/1.1\""))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = line.unwrap_or_else(|| panic!("/version is not logged:\n{}", front.log()));
    assert!(line.contains(" app/s") && line.contains(" 200 "), "{line}");
    let timers = line.split_whitespace().any(|word| {
        let parts: Vec<&str> = word.split('/').collect();
        parts.len() == 5 && parts.iter().all(|p| p.parse::<i64>().is_ok())
    });
    assert!(timers, "no TR/Tw/Tc/Tr/Ta in: {line}");
}

#[tokio::test]
async fn compose_metrics_are_refused_outside_the_allow_list_and_the_exporter_has_its_own_port() {
    let client = client();
    let refused = Front::start(|s| {
        s.haproxy.metrics_allow = vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()]
    })
    .await;
    let response = client.get(refused.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_security_headers(response.headers());
    let other = client.get(refused.url("/version")).send().await.unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "only /metrics is restricted"
    );
    // HAProxy's own metrics are on the exporter port, not the public one.
    let exported = reqwest::get(format!("http://127.0.0.1:{}/metrics", refused.exporter))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = runtime::exporter_per_server(&exported, "haproxy_server_http_responses_total");
    assert!(
        served.values().sum::<f64>() >= 1.0,
        "the /version answer is not counted per server: {served:?}"
    );

    let allowed = Front::start(|s| s.haproxy.metrics_allow = vec!["127.0.0.1".into()]).await;
    let response = client.get(allowed.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(body.contains("app_build_info"), "not the app's metrics");
}

/// `count` requests, 32 at a time: how many got `served` and how many 429
/// (nothing else may come back).
async fn burst(
    client: &reqwest::Client,
    url: &str,
    count: usize,
    served: StatusCode,
) -> (usize, usize) {
    let statuses: Vec<StatusCode> = stream::iter(0..count)
        .map(|_| async move { client.get(url).send().await.unwrap().status() })
        .buffer_unordered(32)
        .collect()
        .await;
    let count_of = |code| statuses.iter().filter(|s| **s == code).count();
    let (ok, limited) = (count_of(served), count_of(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(
        ok + limited,
        count,
        "only {served} or 429 expected: {statuses:?}"
    );
    (ok, limited)
}

#[tokio::test]
async fn compose_rate_limits_answer_429_past_the_budget_and_never_to_probes() {
    let front = Front::start(|s| s.haproxy.api_rate = 20).await;
    let client = client();

    // /auth/ has its own, far smaller budget (5/s). The app has no such
    // route: the requests that get through answer 404.
    let (passed, _) = burst(
        &client,
        &front.url("/auth/login"),
        40,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        (1..=12).contains(&passed),
        "{passed} of 40 auth requests passed"
    );

    // Let the auth requests leave the API window (they count there too).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (ok, limited) = burst(&client, &front.url("/version"), 200, StatusCode::OK).await;
    assert!(ok >= 20, "the budget was not served: {ok} ok");
    assert!(limited > 0, "200 requests at once were never limited");

    // Probes are never limited, even right after the API budget is spent.
    let (ok, limited) = burst(&client, &front.url("/health"), 200, StatusCode::OK).await;
    assert_eq!((ok, limited), (200, 0));
}
