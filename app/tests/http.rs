//! The app under real HTTP: every endpoint, status codes and JSON shapes.
mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::App;

#[tokio::test]
async fn every_endpoint_answers_with_its_documented_shape() {
    let app = App::start(&[]);
    let client = reqwest::Client::new();

    let health = client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );

    let ready = support::wait_until(&app.url("/ready"), 200).await;
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    let detailed: Value = client
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["status"], "ok");
    assert_eq!(detailed["version"], env!("CARGO_PKG_VERSION"));
    assert!(detailed["revision"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(detailed["uptime_seconds"].is_u64());
    assert_eq!(
        detailed["checks"],
        serde_json::json!({}),
        "no dependency configured, none checked"
    );

    let version: Value = client
        .get(app.url("/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["revision"], detailed["revision"]);

    let missing = client.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = App::start(&[]);
    let client = reqwest::Client::new();
    let generated = client.get(app.url("/health")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echoed = client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
}

fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text")
        .samples
}

fn counter(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_this_tests_requests() {
    let app = App::start(&[]);
    let client = reqwest::Client::new();
    for _ in 0..7 {
        assert_eq!(
            client
                .get(app.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    for _ in 0..3 {
        client.get(app.url("/missing")).send().await.unwrap();
    }
    let response = client.get(app.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let samples = samples(&response.text().await.unwrap());

    let health = [("method", "GET"), ("route", "/health"), ("status", "200")];
    assert_eq!(counter(&samples, "http_requests_total", &health), 7.0);
    // Unknown paths share one series, whatever the path was.
    assert_eq!(
        counter(
            &samples,
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        3.0
    );

    let histogram_count = samples
        .iter()
        .find(|s| {
            s.metric == "http_request_duration_seconds" && s.labels.get("route") == Some("/health")
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .expect("a latency histogram for /health");
    assert_eq!(histogram_count, 7.0);

    let build: BTreeMap<_, _> = samples
        .iter()
        .find(|s| s.metric == "app_build_info")
        .map(|s| {
            s.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .expect("app_build_info");
    assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        samples
            .iter()
            .any(|s| s.metric == "process_resident_memory_bytes"),
        "process metrics exported"
    );
}

#[test]
fn bad_port_exits_non_zero_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .env_clear()
        .env("PORT", "abc")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PORT=abc: not a port number"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn healthcheck_subcommand_exits_by_the_probe_result() {
    let app = App::start(&[]);
    let probe = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_app"))
            .args(["healthcheck", "--url", &app.url(""), "--path", path])
            .status()
            .unwrap()
            .success()
    };
    assert!(probe("/health"));
    assert!(!probe("/no-such-path"), "404 is unhealthy");
    drop(app);
    let dead = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}", support::free_port()),
        ])
        .output()
        .unwrap();
    assert!(!dead.status.success());
    assert!(String::from_utf8_lossy(&dead.stderr).contains("connecting to 127.0.0.1"));
}

#[test]
fn serves_the_same_routes_on_a_unix_socket_for_its_owner_and_group_only() {
    use std::{
        io::{Read, Write},
        os::unix::fs::PermissionsExt,
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("app.sock");
    let _app = App::start(&[("LISTEN_SOCKET", socket.to_str().unwrap())]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o660,
        "other users of the host must not reach the app around the balancer"
    );
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(env!("CARGO_PKG_VERSION")));
}

/// A client that trickles its request headers a byte at a time (slowloris)
/// is cut off after the header read timeout (10 s), and the app keeps
/// answering everyone else meanwhile.
#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = App::start(&[]);
    support::wait_until(&app.url("/health"), 200).await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                read = slow.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408 or similar before the close
                },
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if slow.write_all(b"X").await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let others = async {
        let answer = reqwest::get(app.url("/health")).await.unwrap();
        assert_eq!(answer.status(), 200, "others are served meanwhile");
    };
    let ((), ()) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(20), closed)
                .await
                .expect("the trickling connection was still open after 20s");
        },
        others
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "cut off after {took:?}"
    );
}
