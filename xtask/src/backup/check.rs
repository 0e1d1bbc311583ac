//! `backup verify` and `backup restore`: the file checked against its
//! manifest before anything is dropped, then counts and checksums compared
//! with the manifest's after the restore.
use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{create::dump, locate, pg, store, Backups, Entry, Manifest};

/// One check `verify` or `restore` made.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Checked {
    pub id: String,
    pub file: PathBuf,
    pub passed: bool,
    pub checks: Vec<Check>,
    pub seconds: f64,
    /// `restore`: the backup of the database as it was just before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<String>,
}

/// The file against its manifest and `pg_restore --list`: what has to pass
/// before the file is restored anywhere.
async fn check_file(b: &Backups, entry: &Entry, checks: &mut Vec<Check>) -> Result<()> {
    store::check_integrity(entry)?;
    checks.push(Check {
        name: "sha256".into(),
        ok: true,
        detail: format!(
            "{} bytes, sha256 {}",
            entry.manifest.size_bytes, entry.manifest.sha256
        ),
    });
    let pg_restore = pg::tool("pg_restore")?;
    let listing = b
        .conn
        .run(
            &pg_restore,
            &["--list", entry.dump.to_str().context("a UTF-8 path")?],
        )
        .await
        .with_context(|| {
            format!(
                "backup {}: pg_restore cannot read its table of contents",
                entry.manifest.id
            )
        })?;
    checks.push(Check {
        name: "pg_restore --list".into(),
        ok: true,
        detail: format!(
            "{} entries",
            listing
                .lines()
                .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                .count()
        ),
    });
    Ok(())
}

/// Counts and checksums now against the manifest's, one check per table.
fn compare(
    manifest: &Manifest,
    found: &pg::Tables,
    schema_version: Option<i64>,
    checks: &mut Vec<Check>,
) {
    for (table, want) in &manifest.tables {
        let (ok, detail) = match found.get(table) {
            None => (
                false,
                format!("missing (the backup has {} rows)", want.rows),
            ),
            Some(got) if got == want => (true, format!("{} rows, {}", got.rows, got.checksum)),
            Some(got) => (
                false,
                format!(
                    "{} rows, {} (the backup has {} rows, {})",
                    got.rows, got.checksum, want.rows, want.checksum
                ),
            ),
        };
        checks.push(Check {
            name: format!("table {table}"),
            ok,
            detail,
        });
    }
    for table in found.keys().filter(|t| !manifest.tables.contains_key(*t)) {
        checks.push(Check {
            name: format!("table {table}"),
            ok: false,
            detail: "not in the backup".into(),
        });
    }
    checks.push(Check {
        name: "schema version".into(),
        ok: schema_version == manifest.schema_version,
        detail: format!(
            "{} (the backup: {})",
            show(schema_version),
            show(manifest.schema_version)
        ),
    });
}

fn show(version: Option<i64>) -> String {
    version.map_or("none".into(), |v| v.to_string())
}

/// Restores `selector` into a scratch database on the same server and
/// compares it with the manifest. A failed check is a report with `passed:
/// false`; an `Err` is a check that could not run.
pub async fn verify(b: &Backups, selector: &str) -> Result<Checked> {
    let started = Instant::now();
    let entry = {
        let lock = store::lock(&b.dir)?;
        locate(b, selector, &lock).await?
    };
    let mut checks = vec![];
    if let Err(e) = check_file(b, &entry, &mut checks).await {
        checks.push(Check {
            name: "file".into(),
            ok: false,
            detail: format!("{e:#}"),
        });
        return Ok(report(&entry, checks, started));
    }
    let scratch = format!(
        "xtask_verify_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let admin = b.conn.client().await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {scratch} TEMPLATE template0"))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "creating the scratch database {scratch} on {} (verify needs CREATEDB there): {}",
                b.conn.describe(),
                pg::describe(&e)
            )
        })?;
    let result = restore_and_compare(b, &entry, &scratch, &mut checks).await;
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .await
    {
        eprintln!(
            "warning: dropping the scratch database {scratch}: {}",
            pg::describe(&e)
        );
    }
    if let Err(e) = result {
        checks.push(Check {
            name: "restore into a scratch database".into(),
            ok: false,
            detail: format!("{e:#}"),
        });
    }
    Ok(report(&entry, checks, started))
}

async fn restore_and_compare(
    b: &Backups,
    entry: &Entry,
    scratch: &str,
    checks: &mut Vec<Check>,
) -> Result<()> {
    let target = b.conn.with_dbname(scratch);
    let t = Instant::now();
    target
        .run(
            &pg::tool("pg_restore")?,
            &[
                "--no-password",
                "--exit-on-error",
                "--single-transaction",
                "--no-owner",
                "--no-privileges",
                "--dbname",
                scratch,
                entry.dump.to_str().context("a UTF-8 path")?,
            ],
        )
        .await?;
    checks.push(Check {
        name: "restore into a scratch database".into(),
        ok: true,
        detail: format!("{scratch}, {:.2}s", t.elapsed().as_secs_f64()),
    });
    let client = target.client().await?;
    let found = pg::table_stats(&client).await?;
    let version = pg::schema_version(&client).await?;
    compare(&entry.manifest, &found, version, checks);
    Ok(())
}

fn report(entry: &Entry, checks: Vec<Check>, started: Instant) -> Checked {
    Checked {
        id: entry.manifest.id.clone(),
        file: entry.dump.clone(),
        passed: !checks.is_empty() && checks.iter().all(|c| c.ok),
        checks,
        seconds: started.elapsed().as_secs_f64(),
        safety_backup: None,
    }
}

/// Restores `selector` over the environment's database. Refuses, with
/// nothing changed, a file that fails its checks; then restores all or
/// nothing, and reports how the database compares with the manifest
/// (a difference means something wrote during or after the restore).
///
/// With `safety_backup`, the database as it is now is backed up first (a
/// backup like any other, noted as such, outside retention until the next
/// `create`): a restore of the wrong backup can itself be undone.
pub async fn restore(b: &Backups, selector: &str, safety_backup: bool) -> Result<Checked> {
    let started = Instant::now();
    let lock = store::lock(&b.dir)?;
    let entry = locate(b, selector, &lock).await?;
    let mut checks = vec![];
    check_file(b, &entry, &mut checks)
        .await
        .map_err(|e| anyhow::anyhow!("refusing to restore: {e:#}; the database was not touched"))?;
    let safety = if safety_backup {
        let note = format!("safety backup taken before restoring {}", entry.manifest.id);
        let (manifest, _) = dump(b, None, Some(note)).await.map_err(|e| {
            anyhow::anyhow!(
                "refusing to restore: the safety backup of the database as it is failed: {e:#}; the database was not touched (--no-safety-backup restores without one)"
            )
        })?;
        checks.push(Check {
            name: "safety backup".into(),
            ok: true,
            detail: format!("{} (the database before this restore)", manifest.id),
        });
        Some(manifest.id)
    } else {
        None
    };
    let t = Instant::now();
    b.conn
        .run(
            &pg::tool("pg_restore")?,
            &[
                "--no-password",
                "--exit-on-error",
                "--single-transaction",
                "--clean",
                "--if-exists",
                "--dbname",
                b.conn.dbname(),
                entry.dump.to_str().context("a UTF-8 path")?,
            ],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "restoring {} into {} failed and was rolled back (one transaction): {e:#}",
                entry.manifest.id,
                b.conn.describe()
            )
        })?;
    checks.push(Check {
        name: "pg_restore --clean --single-transaction".into(),
        ok: true,
        detail: format!(
            "into {}, {:.2}s",
            b.conn.describe(),
            t.elapsed().as_secs_f64()
        ),
    });
    let client = b.conn.client().await?;
    let found = pg::table_stats(&client).await?;
    let version = pg::schema_version(&client).await?;
    compare(&entry.manifest, &found, version, &mut checks);
    Ok(Checked {
        safety_backup: safety,
        ..report(&entry, checks, started)
    })
}
