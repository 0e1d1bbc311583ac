//! `app migrate up|down|status` and the items API against a real PostgreSQL.
mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{App, Postgres};

/// Runs `app migrate ARGS` as the image would: the binary alone, DATABASE_URL set.
fn migrate(pg: &Postgres, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_app"))
        .env_clear()
        .env("DATABASE_URL", pg.url())
        .arg("migrate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(pg: &Postgres) -> Value {
    let (_, out, err) = migrate(pg, &["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"))
}

fn psql(pg: &Postgres, sql: &str) -> String {
    let out = Command::new("psql")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .args(["-d", "postgres", "-Atc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn up_status_down_and_up_again_are_recorded_and_idempotent() {
    let pg = Postgres::start();
    let before = status(&pg);
    assert_eq!(
        (before["current"].as_i64(), before["latest"].as_i64()),
        (Some(0), Some(3)),
        "{before}"
    );
    assert_eq!(before["pending"], json!([1, 2, 3]));
    assert_eq!(
        migrate(&pg, &["status"]).0,
        1,
        "pending migrations: status exits 1"
    );

    let (code, out, err) = migrate(&pg, &["up"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("applied [1, 2, 3]: schema at version 3"),
        "{out}"
    );
    let after = status(&pg);
    assert_eq!(after["current"], 3);
    assert_eq!(after["pending"], json!([]));
    assert_eq!(after["applied"][1]["name"], "items_created_at_index");
    assert_eq!(migrate(&pg, &["status"]).0, 0);
    assert_eq!(
        psql(
            &pg,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_created_at'"
        ),
        "1"
    );

    // Idempotent: nothing to apply, nothing changed.
    let (code, out, _) = migrate(&pg, &["up"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to apply"), "{out}");
    assert_eq!(psql(&pg, "SELECT count(*) FROM schema_migrations"), "3");

    // Down reverts one step at a time, its record with it.
    let (code, out, err) = migrate(&pg, &["down"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reverted [3]: schema at version 2"), "{out}");
    assert_eq!(
        psql(
            &pg,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'"
        ),
        "0"
    );
    let (code, out, err) = migrate(&pg, &["down"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reverted [2]: schema at version 1"), "{out}");
    assert_eq!(
        psql(
            &pg,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_created_at'"
        ),
        "0"
    );
    assert_eq!(status(&pg)["pending"], json!([2, 3]));
    let (code, out, _) = migrate(&pg, &["down", "--to", "0"]);
    assert_eq!(code, 0);
    assert!(out.contains("reverted [1]: schema at version 0"), "{out}");
    assert_eq!(psql(&pg, "SELECT to_regclass('items') IS NULL"), "t");

    // And up again, partly, then fully.
    assert_eq!(migrate(&pg, &["up", "--to", "1"]).0, 0);
    assert_eq!(status(&pg)["current"], 1);
    assert_eq!(migrate(&pg, &["up"]).0, 0);
    assert_eq!(status(&pg)["current"], 3);
}

#[test]
fn a_version_applied_by_a_newer_release_is_reported_and_not_reverted_blindly() {
    let pg = Postgres::start();
    let (code, out, err) = migrate(&pg, &["up"]);
    assert_eq!(code, 0, "{out}{err}");
    psql(
        &pg,
        "INSERT INTO schema_migrations (version, name) VALUES (99, 'from_the_future')",
    );
    let s = status(&pg);
    assert_eq!(
        (s["current"].as_i64(), s["unknown"].clone()),
        (Some(99), json!([99]))
    );
    let (code, _, err) = migrate(&pg, &["down"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("version 99 (from_the_future), which this binary does not carry"),
        "{err}"
    );
    assert_eq!(
        psql(&pg, "SELECT count(*) FROM schema_migrations"),
        "4",
        "nothing reverted"
    );
}

#[test]
fn migrate_without_a_database_url_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_app"))
        .env_clear()
        .args(["migrate", "up"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("DATABASE_URL (or DATABASE_URL_FILE) is not set"));
}

#[tokio::test]
async fn items_round_trip_and_answer_503_without_a_schema_or_database() {
    let pg = Postgres::start();
    let app = App::start(&[("DATABASE_URL", &pg.url())]);
    support::wait_until(&app.url("/ready"), 200).await;
    let client = reqwest::Client::new();

    // Not migrated yet: 503 naming the fix.
    let r = client
        .post(app.url("/items"))
        .json(&json!({"name": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("app migrate up"),
        "{body}"
    );

    assert_eq!(migrate(&pg, &["up"]).0, 0);
    let mut ids = vec![];
    for name in ["first", "second", "third"] {
        let r = client
            .post(app.url("/items"))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["name"], name);
        assert_eq!(location, format!("/items/{}", body["id"]));
        ids.push(body["id"].as_i64().unwrap());
    }
    let one: Value = client
        .get(app.url(&format!("/items/{}", ids[1])))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["name"], "second");
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'), "{one}");
    let listed: Value = client
        .get(app.url("/items?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["third", "second"], "newest first, limited");

    let code = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        code(client.get(app.url("/items/999999")).send().await.unwrap()),
        404
    );
    assert_eq!(
        code(client.get(app.url("/items/abc")).send().await.unwrap()),
        400
    );
    assert_eq!(
        code(client.get(app.url("/items?limit=0")).send().await.unwrap()),
        400
    );
    assert_eq!(
        code(
            client
                .post(app.url("/items"))
                .json(&json!({"name": ""}))
                .send()
                .await
                .unwrap()
        ),
        422
    );
    assert_eq!(
        code(
            client
                .post(app.url("/items"))
                .body("nope")
                .send()
                .await
                .unwrap()
        ),
        400
    );
    assert_eq!(psql(&pg, "SELECT count(*) FROM items"), "3");

    // Without DATABASE_URL the app still serves; /items says why it cannot.
    let bare = App::start(&[]);
    support::wait_until(&bare.url("/ready"), 200).await;
    let r = client.get(bare.url("/items")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("set DATABASE_URL"),
        "{body}"
    );
}
