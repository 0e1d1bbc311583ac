//! Graceful shutdown: readiness drops at SIGTERM, in-flight work finishes,
//! the process exits 0 once the drain window and in-flight requests are done.
mod support;

use std::time::{Duration, Instant};

use support::App;

#[tokio::test]
async fn sigterm_drains_then_exits_zero_without_dropping_in_flight_requests() {
    let mut app = App::start(&[("DRAIN_SECONDS", "1.5"), ("APP_DEBUG_ROUTES", "1")]);
    support::wait_until(&app.url("/ready"), 200).await;
    let client = reqwest::Client::new();

    // A slow request, in flight across the signal and past the drain window.
    let slow = tokio::spawn(client.get(app.url("/debug/sleep/2500")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    app.terminate();

    // Readiness turns 503 at once, liveness stays 200 while draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["reason"],
        "draining"
    );
    assert_eq!(
        client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "new requests still served while draining"
    );

    let slow = slow
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(slow.status(), 200);

    let status = tokio::task::spawn_blocking(move || {
        let status = app.child.wait().unwrap();
        (status, app)
    })
    .await
    .unwrap()
    .0;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "clean exit after drain");
    // Exit waits for the drain window (1.5 s) and the slow request (~2.3 s left), not longer.
    assert!(
        took >= Duration::from_millis(1500),
        "exited before the drain window: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
}
