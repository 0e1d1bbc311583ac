//! `/ready` and `/health/detailed` against a real PostgreSQL and a real Redis,
//! both up and down.
mod support;

use serde_json::Value;
use support::{App, Postgres, Redis};

async fn get(app: &App, path: &str) -> (u16, Value) {
    let r = reqwest::get(app.url(path)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn readiness_follows_the_database_and_detail_reports_each_dependency() {
    let mut postgres = Postgres::start();
    let mut redis = Redis::start();
    let app = App::start(&[
        ("DATABASE_URL", &postgres.url()),
        ("REDIS_URL", &redis.url()),
    ]);

    support::wait_until(&app.url("/ready"), 200).await;
    let (code, detail) = get(&app, "/health/detailed").await;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["status"], "ok");
    for dep in ["postgres", "redis"] {
        assert_eq!(detail["checks"][dep]["status"], "up", "{detail}");
        assert!(detail["checks"][dep]["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(detail["checks"]["postgres"]["required"], true);
    assert_eq!(detail["checks"]["redis"]["required"], false);

    // Redis is a cache: down means degraded, still ready.
    redis.stop();
    let (code, detail) = get(&app, "/health/detailed").await;
    assert_eq!(
        (code, detail["status"].as_str()),
        (200, Some("degraded")),
        "{detail}"
    );
    assert_eq!(detail["checks"]["redis"]["status"], "down");
    assert!(detail["checks"]["redis"]["error"].is_string());
    assert_eq!(get(&app, "/ready").await.0, 200);

    // PostgreSQL is required: down means not ready and detail answers 503.
    postgres.stop();
    let (code, detail) = get(&app, "/health/detailed").await;
    assert_eq!(
        (code, detail["status"].as_str()),
        (503, Some("down")),
        "{detail}"
    );
    assert_eq!(detail["checks"]["postgres"]["status"], "down");
    let (code, ready) = get(&app, "/ready").await;
    assert_eq!(
        (code, ready["reason"].as_str()),
        (503, Some("dependency down")),
        "{ready}"
    );
}

#[tokio::test]
async fn never_ready_while_the_required_database_is_unreachable() {
    let unreachable = format!(
        "postgres://app:secret-pw@127.0.0.1:{}/x",
        support::free_port()
    );
    let app = App::start(&[("DATABASE_URL", &unreachable)]);
    for _ in 0..5 {
        let (code, body) = get(&app, "/ready").await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (503, Some("starting")),
            "{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(get(&app, "/health").await.0, 200, "alive though not ready");
    let (code, detail) = get(&app, "/health/detailed").await;
    assert_eq!(code, 503);
    assert!(
        !detail.to_string().contains("secret-pw"),
        "the password leaked: {detail}"
    );
}

/// Readiness probes come every 100 ms from each balancer: they share one
/// PostgreSQL connection rather than open a session each, and after a
/// database restart the next probe connects again.
#[tokio::test]
async fn readiness_probes_share_one_database_connection() {
    let mut postgres = Postgres::start();
    let mut app = App::start(&[("DATABASE_URL", &postgres.url())]);
    // The storm below logs a line per request: the app's stdout is read, or
    // it would block on a full pipe.
    let mut logs = app.child.stdout.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut logs, &mut std::io::sink()));
    support::wait_until(&app.url("/ready"), 200).await;
    let backends = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&"app-readiness"],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<_, i32>(0))
            .collect::<Vec<i32>>()
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        assert_eq!(get(&app, "/ready").await.0, 200);
        assert_eq!(get(&app, "/health/detailed").await.0, 200);
        seen.push(backends(postgres.url()).await);
    }
    assert!(
        seen.iter().all(|pids| pids.len() == 1 && *pids == seen[0]),
        "one kept connection, the same one each time: {seen:?}"
    );

    // A storm: 300 /ready at once, each on its own connection to the app.
    // They queue for the one kept connection instead of opening 300.
    let storm: Vec<_> = (0..300)
        .map(|_| {
            let url = app.url("/ready");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                client
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .ok()
            })
        })
        .collect();
    let during = backends(postgres.url()).await;
    let mut answers = std::collections::BTreeMap::new();
    for request in storm {
        *answers.entry(request.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        answers,
        std::collections::BTreeMap::from([(Some(200), 300)]),
        "every /ready of the storm answered 200"
    );
    assert_eq!(during, seen[0], "still the one connection during the storm");
    assert_eq!(backends(postgres.url()).await, seen[0], "and after it");

    postgres.restart();
    support::wait_until(&app.url("/ready"), 200).await;
    assert_eq!(backends(postgres.url()).await.len(), 1);
}

/// The same for Redis: checks share one kept connection, named
/// `app-readiness`, instead of connecting for every probe.
#[tokio::test]
async fn health_checks_share_one_redis_connection() {
    let redis = Redis::start();
    let app = App::start(&[("REDIS_URL", &redis.url())]);
    support::wait_until(&app.url("/ready"), 200).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        assert_eq!(get(&app, "/health/detailed").await.0, 200);
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let ids: Vec<String> = list
            .lines()
            .filter(|l| l.contains("name=app-readiness"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        seen.push(ids);
    }
    assert!(
        seen.iter().all(|ids| ids.len() == 1 && *ids == seen[0]),
        "one kept connection, the same one each time: {seen:?}"
    );
}
