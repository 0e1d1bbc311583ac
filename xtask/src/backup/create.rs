//! `backup create`: a dump and its manifest taken from one snapshot, then
//! retention, then the off-site copy.
use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{pg, store, Backups, Manifest, Synced};

#[derive(Debug, Serialize)]
pub struct Created {
    pub manifest: Manifest,
    pub path: PathBuf,
    /// Older backups removed by retention.
    pub removed: Vec<String>,
    /// What was copied to and removed from the bucket, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<Synced>,
}

/// Takes a backup; `release` is recorded in the manifest. With `[backup.s3]`
/// the command succeeds only once the bucket has it too.
pub async fn create(b: &Backups, release: Option<String>) -> Result<Created> {
    let lock = store::lock(&b.dir)?;
    let (manifest, path) = dump(b, release, None).await?;
    let removed = store::retain(&b.dir, b.keep)?;
    let offsite = match &b.offsite {
        Some(offsite) => Some(offsite.sync(&b.dir, b.keep, &lock).await.map_err(|e| {
            anyhow::anyhow!(
                "backup {} is in {}, but copying it to {} failed: {e:#}; the next `backup create` copies it again",
                manifest.id,
                b.dir.display(),
                offsite.describe()
            )
        })?),
        None => None,
    };
    Ok(Created {
        manifest,
        path,
        removed,
        offsite,
    })
}

/// The backup itself, under the folder's lock the caller holds; no retention.
pub(super) async fn dump(
    b: &Backups,
    release: Option<String>,
    note: Option<String>,
) -> Result<(Manifest, PathBuf)> {
    let started = Instant::now();
    let pg_dump = pg::tool("pg_dump")?;
    let id = store::new_id(&b.dir);
    let file = format!("{id}.dump");
    let partial = b.dir.join(format!("{file}.partial"));

    let mut client = b.conn.client().await?;
    let server_version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(|e| anyhow::anyhow!("reading the server version: {}", pg::describe(&e)))?
        .get(0);
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the snapshot: {}", pg::describe(&e)))?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| anyhow::anyhow!("exporting the snapshot: {}", pg::describe(&e)))?
        .get(0);
    let tables = pg::table_stats(&tx).await?;
    let schema_version = pg::schema_version(&tx).await?;
    let dumped = b
        .conn
        .run(
            &pg_dump,
            &[
                "--format=custom",
                "--no-password",
                &format!("--snapshot={snapshot}"),
                "--file",
                partial
                    .to_str()
                    .context("a backup folder with a UTF-8 path")?,
            ],
        )
        .await;
    // The snapshot lives as long as this transaction: end it only now.
    let _ = tx.rollback().await;
    if let Err(e) = dumped {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context(format!("backing up {}", b.conn.describe())));
    }
    let pg_dump_version = b
        .conn
        .run(&pg_dump, &["--version"])
        .await?
        .trim()
        .to_owned();
    let (sha256, size_bytes) = store::sha256_file(&partial)?;
    let manifest = Manifest {
        format: store::MANIFEST_FORMAT,
        id: id.clone(),
        environment: b.environment.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        release,
        schema_version,
        database: b.conn.dbname().to_owned(),
        server_version,
        pg_dump_version,
        file: file.clone(),
        size_bytes,
        sha256,
        tables,
        duration_seconds: started.elapsed().as_secs_f64(),
        note,
    };
    let manifest_partial = b.dir.join(format!("{id}.json.partial"));
    store::write_manifest(&manifest_partial, &manifest)?;
    let path = b.dir.join(&file);
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    std::fs::rename(&manifest_partial, b.dir.join(format!("{id}.json")))
        .context("renaming the manifest into place")?;
    Ok((manifest, path))
}
