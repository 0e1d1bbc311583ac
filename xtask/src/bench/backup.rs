//! `cargo xtask bench backup`: `backup create` and `backup restore` of the
//! app's schema with N rows (default 100k), against plain `pg_dump -Fc` and
//! `pg_restore --clean --if-exists --single-transaction` of the same
//! database in the same run; `verify` for the record. A throwaway cluster
//! (the test suites' helper) on 127.0.0.1.
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::ratio;
use crate::{
    backup::{self, pg, Backups},
    report, workspace,
};

#[path = "../../../app/tests/support/postgres.rs"]
mod postgres;

const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(rows: u64, json: bool) -> Result<()> {
    let cluster = tokio::task::spawn_blocking(postgres::Postgres::start).await?;
    let conn = pg::Conn::from_url(&cluster.url())?;
    let client = conn.client().await?;
    client
        .batch_execute(concat!(
            "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());",
            include_str!("../../../app/migrations/0001_create_items.up.sql"),
            include_str!("../../../app/migrations/0002_items_created_at_index.up.sql"),
            "INSERT INTO schema_migrations (version, name) VALUES (1, 'create_items'), (2, 'items_created_at_index');"
        ))
        .await
        .map_err(|e| anyhow::anyhow!("creating the schema: {}", pg::describe(&e)))?;
    client
        .execute(
            "INSERT INTO items (name) SELECT 'item number ' || g FROM generate_series(1, $1::bigint) g",
            &[&(rows as i64)],
        )
        .await
        .map_err(|e| anyhow::anyhow!("inserting rows: {}", pg::describe(&e)))?;
    client.batch_execute("VACUUM ANALYZE items").await?;

    let dir = workspace::target_dir().join("bench/backup");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let plain_file = dir.join("plain.dump");
    let plain_path = plain_file.to_str().context("a UTF-8 target path")?;
    let b = Backups {
        environment: "bench".into(),
        dir: dir.join("ours"),
        keep: 2,
        conn: conn.clone(),
        offsite: None,
    };
    let (pg_dump, pg_restore) = (pg::tool("pg_dump")?, pg::tool("pg_restore")?);
    let time = Instant::now;
    let (mut plain_dump, mut ours_create, mut plain_restore, mut ours_restore, mut ours_verify) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut size = (0u64, 0u64);
    eprintln!("{ROUNDS} rounds with {rows} rows: plain pg_dump, backup create, plain pg_restore, backup restore, backup verify");
    for _ in 0..ROUNDS {
        let t = time();
        conn.run(
            &pg_dump,
            &["--format=custom", "--no-password", "--file", plain_path],
        )
        .await?;
        plain_dump.push(t.elapsed().as_secs_f64());

        let t = time();
        let created = backup::create(&b, None).await?;
        ours_create.push(t.elapsed().as_secs_f64());
        size = (
            std::fs::metadata(&plain_file)?.len(),
            created.manifest.size_bytes,
        );

        let t = time();
        conn.run(
            &pg_restore,
            &[
                "--no-password",
                "--exit-on-error",
                "--single-transaction",
                "--clean",
                "--if-exists",
                "--dbname",
                conn.dbname(),
                plain_path,
            ],
        )
        .await?;
        plain_restore.push(t.elapsed().as_secs_f64());

        let t = time();
        let restored = backup::restore(&b, &created.manifest.id, false).await?;
        ours_restore.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            restored.passed,
            "the restore did not match its manifest: {restored:?}"
        );

        let t = time();
        let verified = backup::verify(&b, &created.manifest.id).await?;
        ours_verify.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(verified.passed, "verify failed: {verified:?}");
    }
    drop(client);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);

    let (pd, oc, pr, or, ov) = (
        median(plain_dump),
        median(ours_create),
        median(plain_restore),
        median(ours_restore),
        median(ours_verify),
    );
    let figures = json!({
        "rows": rows,
        "rounds": ROUNDS,
        "plain_pg_dump_seconds": pd,
        "backup_create_seconds": oc,
        "create_ratio": oc / pd,
        "plain_pg_restore_seconds": pr,
        "backup_restore_seconds": or,
        "restore_ratio": or / pr,
        "backup_verify_seconds": ov,
        "plain_dump_bytes": size.0,
        "backup_dump_bytes": size.1,
    });
    if json {
        report::print_json(&figures);
    } else {
        let mut table = report::Table::new(
            &format!("bench backup: {rows} rows, median of {ROUNDS}"),
            &["measure", "seconds", "vs plain"],
        );
        table.row(vec![
            "plain pg_dump -Fc".into(),
            format!("{pd:.2}"),
            "1.00x".into(),
        ]);
        table.row(vec![
            "backup create (snapshot, counts, checksums, dump, sha256, manifest)".into(),
            format!("{oc:.2}"),
            ratio(oc, pd),
        ]);
        table.row(vec![
            "plain pg_restore --clean --single-transaction".into(),
            format!("{pr:.2}"),
            "1.00x".into(),
        ]);
        table.row(vec![
            "backup restore (sha256, --list, restore, counts and checksums; --no-safety-backup)"
                .into(),
            format!("{or:.2}"),
            ratio(or, pr),
        ]);
        table.row(vec![
            "backup verify (scratch database)".into(),
            format!("{ov:.2}"),
            "-".into(),
        ]);
        table.row(vec![
            "dump size (plain / ours)".into(),
            format!("{:.2} / {:.2} MB", size.0 as f64 / 1e6, size.1 as f64 / 1e6),
            "-".into(),
        ]);
        table.emit();
    }
    Ok(())
}
