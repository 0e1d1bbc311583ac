//! nginx for real: the rendered template in front of the real app binary,
//! both on loopback ports, probed over HTTP and HTTPS.
use std::{
    net::{TcpListener, TcpStream},
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
use reqwest::{redirect, StatusCode};
use xtask::{
    nginx::{render, write_dev_certificate, NginxSettings},
    workspace,
};

/// A process this test started; killed and reaped however the test ends.
struct Running {
    child: Child,
}

impl Drop for Running {
    /// SIGTERM first: a SIGKILLed nginx master leaves its workers running.
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field order is drop order: processes stop before their folder goes.
struct Stack {
    _nginx: Running,
    _app: Running,
    http: u16,
    https: u16,
    dir: tempfile::TempDir,
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, process: &mut Running, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!(
                "{what} exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 15s");
}

fn spawn(command: &mut Command, log: &Path) -> Running {
    let file = std::fs::File::create(log).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawning");
    Running { child }
}

/// The app and nginx in front of it, `/metrics` open to `metrics_allow` only.
fn start(metrics_allow: &[&str]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let mut app = spawn(
        Command::new(app_binary())
            .env("PORT", app_port.to_string())
            .env("BIND", "127.0.0.1")
            .env("LOG_FORMAT", "json")
            // No drain wait on SIGTERM: nothing balances across this instance.
            .env("DRAIN_SECONDS", "0")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL"),
        &dir.path().join("app.log"),
    );
    wait_for_port(app_port, "app", &mut app, &dir.path().join("app.log"));

    let (http, https) = (free_port(), free_port());
    let mut settings = NginxSettings::local(
        dir.path(),
        http,
        https,
        vec![format!("127.0.0.1:{app_port}")],
    );
    settings.metrics_allow = metrics_allow.iter().map(|s| s.to_string()).collect();
    write_dev_certificate(&dir.path().join("tls")).unwrap();
    settings.create_dirs().unwrap();
    let config = dir.path().join("nginx.conf");
    std::fs::write(&config, render(&settings).unwrap()).unwrap();
    let log = dir.path().join("nginx.out");
    let mut nginx = spawn(
        Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(settings.log_dir.join("error.log"))
            .arg("-c")
            .arg(&config)
            .args(["-g", "daemon off;"]),
        &log,
    );
    wait_for_port(
        https,
        "nginx",
        &mut nginx,
        &settings.log_dir.join("error.log"),
    );
    wait_for_port(http, "nginx", &mut nginx, &log);
    Stack {
        _nginx: nginx,
        _app: app,
        http,
        https,
        dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        // The certificate is self-signed and made for this test.
        .danger_accept_invalid_certs(true)
        .redirect(redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn http_redirects_to_https_which_sends_security_headers_and_logs_timing() {
    let stack = start(&["127.0.0.1"]);
    let client = client();

    let plain = client
        .get(format!("http://127.0.0.1:{}/version?x=1", stack.http))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(
            plain.status(),
            StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
        ),
        "plain HTTP answered {}",
        plain.status()
    );
    assert_eq!(
        plain.headers()["location"],
        format!("https://127.0.0.1:{}/version?x=1", stack.https).as_str()
    );

    let secure = client
        .get(format!("https://127.0.0.1:{}/version", stack.https))
        .send()
        .await
        .unwrap();
    assert_eq!(secure.status(), StatusCode::OK);
    let headers = secure.headers().clone();
    let body = secure.text().await.unwrap();
    assert!(body.contains("version"), "not the app's /version: {body}");
    for (name, expected) in [
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            headers.get(name).map(|v| v.to_str().unwrap()),
            Some(expected),
            "{name}"
        );
    }
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        headers.get("server").is_none_or(|s| s == "nginx"),
        "server_tokens must hide the version"
    );

    // Errors from the app carry the headers too (`always`).
    let missing = client
        .get(format!("https://127.0.0.1:{}/no-such-page", stack.https))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().contains_key("strict-transport-security"));

    let access_log = std::fs::read_to_string(stack.dir.path().join("logs/access.log")).unwrap();
    let line = access_log
        .lines()
        .find(|l| l.contains("GET /version HTTP"))
        .expect("the /version request is logged");
    assert!(
        line.contains(" rt=0.") && line.contains(" urt=0."),
        "no timing in: {line}"
    );
}

#[tokio::test]
async fn metrics_are_refused_to_clients_outside_the_allow_list() {
    let client = client();
    let refused = start(&["10.0.0.0/8", "192.168.0.0/16"]);
    let response = client
        .get(format!("https://127.0.0.1:{}/metrics", refused.https))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let other = client
        .get(format!("https://127.0.0.1:{}/version", refused.https))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "only /metrics is restricted"
    );

    let allowed = start(&["127.0.0.1"]);
    let response = client
        .get(format!("https://127.0.0.1:{}/metrics", allowed.https))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("app_build_info"),
        "not the app's metrics: {body}"
    );
}

async fn burst(client: &reqwest::Client, url: &str, count: usize) -> (usize, usize, usize) {
    let statuses: Vec<StatusCode> = stream::iter(0..count)
        .map(|_| async move { client.get(url).send().await.unwrap().status() })
        .buffer_unordered(32)
        .collect()
        .await;
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    (ok, limited, count - ok - limited)
}

#[tokio::test]
async fn rate_limits_answer_429_past_the_budget() {
    let stack = start(&["127.0.0.1"]);
    let client = client();

    let (ok, limited, other) = burst(
        &client,
        &format!("https://127.0.0.1:{}/version", stack.https),
        300,
    )
    .await;
    assert_eq!(other, 0, "only 200 or 429 expected");
    // Budget: a burst of 50 plus 100/s while the burst lasts.
    assert!(ok >= 51, "the burst allowance was not served: {ok} ok");
    assert!(
        limited > 0,
        "300 requests at once were never limited ({ok} ok)"
    );

    // /auth/ has its own, far smaller budget (5/s, burst 10). The app has no
    // such route: the requests that get through answer 404.
    let (_, limited, passed) = burst(
        &client,
        &format!("https://127.0.0.1:{}/auth/login", stack.https),
        40,
    )
    .await;
    assert!(
        (1..=20).contains(&passed),
        "{passed} of 40 auth requests passed"
    );
    assert_eq!(limited, 40 - passed);

    // Probes are never limited, even right after the API budget is spent.
    let (ok, limited, _) = burst(
        &client,
        &format!("https://127.0.0.1:{}/health", stack.https),
        200,
    )
    .await;
    assert_eq!((ok, limited), (200, 0));
}
