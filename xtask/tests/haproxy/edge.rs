//! What the public edge does, as nginx did it: redirect, TLS, security
//! headers on every answer, request ids, per-client 429 and /metrics
//! kept from clients outside the allow list.
use futures_util::{stream, StreamExt};
use reqwest::StatusCode;
use xtask::haproxy::{engine, AdminState};

use super::{assert_security_headers, client, spec, Stack};

#[tokio::test]
async fn http_redirects_to_https_which_answers_with_security_headers_and_request_ids() {
    let stack = Stack::start("edge", |_, _| {}).await;
    let (_app, address) = stack.app(&[]).await;
    stack
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Ready)])
        .await
        .unwrap();
    let client = client();

    let plain = client
        .get(format!("http://127.0.0.1:{}/version?x=1", stack.http))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        plain.headers()["location"],
        format!("https://127.0.0.1:{}/version?x=1", stack.https).as_str()
    );

    let secure = client
        .get(stack.url("/version"))
        .header("x-request-id", "chosen-by-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(secure.status(), StatusCode::OK);
    let headers = secure.headers().clone();
    assert!(secure.text().await.unwrap().contains("version"));
    assert_security_headers(&headers);
    // HAProxy replaces the client's id with its own, which the app echoes.
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(id != "chosen-by-the-client" && id.len() == 36, "{id}");

    // Errors carry the headers too: the app's 404 and HAProxy's own 503.
    let missing = client.get(stack.url("/no-such-page")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_security_headers(missing.headers());
    stack
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Maint)])
        .await
        .unwrap();
    let none = client.get(stack.url("/version")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_security_headers(none.headers());

    let logs = logs_containing(&stack.balancer, &format!("rid={id}")).await;
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("rid={id}")))
        .unwrap_or_else(|| panic!("the request is not logged:\n{logs}"));
    // Which slot served it, and the timers (TR/Tw/Tc/Tr/Ta).
    assert!(
        line.contains(" app/s1 ") && line.contains(" 200 "),
        "{line}"
    );
}

async fn statuses(client: &reqwest::Client, url: &str, count: usize) -> Vec<StatusCode> {
    stream::iter(0..count)
        .map(|_| async move { client.get(url).send().await.unwrap().status() })
        .buffer_unordered(32)
        .collect()
        .await
}

#[tokio::test]
async fn a_client_past_its_rate_gets_429_but_probes_never_do() {
    let stack = Stack::start("rate", |s, _| s.api_rate = 20).await;
    let (_app, address) = stack.app(&[]).await;
    stack
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Ready)])
        .await
        .unwrap();
    let client = client();
    let answers = statuses(&client, &stack.url("/version"), 200).await;
    let ok = answers.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(ok + limited, 200, "only 200 or 429 expected: {answers:?}");
    assert!(ok >= 20, "the budget was not served: {ok} ok");
    assert!(limited > 0, "200 requests at once were never limited");

    // Right after the budget is spent, probes still pass.
    let probes = statuses(&client, &stack.url("/health"), 100).await;
    assert!(probes.iter().all(|s| *s == StatusCode::OK), "{probes:?}");
}

#[tokio::test]
async fn metrics_are_refused_outside_the_allow_list_and_served_inside_it() {
    // Through a published port, clients on this host reach HAProxy from the
    // network's gateway (docker-proxy), never from 127.0.0.1: an allow list
    // of 127.0.0.1 keeps them out, the gateway's address lets them in.
    let denied = Stack::start("metrics-deny", |s, _| {
        s.metrics_allow = vec!["127.0.0.1".into()]
    })
    .await;
    let gateway = engine::network_gateway(&denied.docker, &denied.network)
        .await
        .unwrap();
    let (_app, address) = denied.app(&[]).await;
    denied
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Ready)])
        .await
        .unwrap();
    let client = client();
    let refused = client.get(denied.url("/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let other = client.get(denied.url("/version")).send().await.unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "only /metrics is restricted"
    );
    let logs = logs_containing(&denied.balancer, &format!("{gateway}:")).await;
    assert!(
        logs.contains(&format!("{gateway}:")),
        "requests did not come from the gateway {gateway}:\n{logs}"
    );

    let allowed = Stack::start("metrics-allow", |s, gateway| {
        s.metrics_allow = vec![format!("{gateway}/32")]
    })
    .await;
    let (_app2, address) = allowed.app(&[]).await;
    allowed
        .balancer
        .set_servers(&[spec(1, address, 1, AdminState::Ready)])
        .await
        .unwrap();
    let served = client.get(allowed.url("/metrics")).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let body = served.text().await.unwrap();
    assert!(body.contains("app_build_info"), "not the app's metrics");
}

/// The balancer's last log lines once `needle` is among them (HAProxy writes
/// a request's line when the request ends, a moment after the client has its answer).
async fn logs_containing(balancer: &xtask::haproxy::HaproxyBalancer, needle: &str) -> String {
    let mut logs = String::new();
    for _ in 0..40 {
        logs = balancer.logs(50).await;
        if logs.contains(needle) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    logs
}
