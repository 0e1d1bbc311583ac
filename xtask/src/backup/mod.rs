//! `cargo xtask backup create|list|verify|restore`: PostgreSQL backups that
//! lose nothing and are checked before they are trusted.
//!
//! - `create`: in one read-only snapshot transaction, count and checksum
//!   every table, then `pg_dump -Fc --snapshot` that same snapshot: the
//!   manifest describes exactly what the dump holds, however busy the
//!   database is. Then sha256, the manifest, retention.
//! - `verify`: the file against its manifest (size, sha256, `pg_restore
//!   --list`), then a restore into a scratch database whose counts and
//!   checksums must equal the manifest's.
//! - `restore`: the same file checks first, refusing before anything is
//!   dropped; then `pg_restore --clean --if-exists --single-transaction`
//!   (all or nothing), and the counts and checksums compared afterwards.
//! - With `[backup.s3]`, every backup is also copied to a bucket
//!   (`offsite`), and `verify`/`restore` fetch one the folder lacks.
//!
//! The database URL is a secret: tools get PG* variables and a 0600
//! password file (`pg::Conn::command`), never argv; messages name
//! `user@host:port/db` only.
mod check;
mod create;
pub mod offsite;
pub mod pg;
pub mod store;

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

pub use check::{restore, verify, Check, Checked};
pub use create::{create, Created};
pub use offsite::{Offsite, Synced};
pub use store::{Entry, Manifest};

use crate::environment::Environment;

/// One environment's backups: its folder, its retention, its database.
#[derive(Debug, Clone)]
pub struct Backups {
    pub environment: String,
    pub dir: PathBuf,
    pub keep: usize,
    pub conn: pg::Conn,
    /// `[backup.s3]`: where every backup is also copied.
    pub offsite: Option<Offsite>,
}

impl Backups {
    pub fn for_env(env: &Environment) -> Result<Backups> {
        let settings = env.backup()?;
        let conn = pg::Conn::from_url(&settings.database_url)
            .with_context(|| format!("{}: backup.database_url", env.path.display()))?;
        let offsite = match settings.offsite {
            Some((config, prefix)) => Some(Offsite {
                bucket: crate::s3::Bucket::new(config)?,
                prefix,
            }),
            None => None,
        };
        Ok(Backups {
            environment: env.name.clone(),
            dir: settings.dir,
            keep: settings.keep,
            conn,
            offsite,
        })
    }
}

pub fn list(b: &Backups) -> Result<Vec<Entry>> {
    store::list(&b.dir)
}

/// One backup and where it is.
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub manifest: Manifest,
    /// In backup.dir, with its dump.
    pub local: bool,
    /// In the bucket.
    pub offsite: bool,
}

/// The folder's backups and the bucket's, newest first.
pub async fn list_everywhere(b: &Backups) -> Result<Vec<Listed>> {
    let mut listed: Vec<Listed> = store::list(&b.dir)?
        .into_iter()
        .map(|e| Listed {
            local: e.dump.is_file(),
            manifest: e.manifest,
            offsite: false,
        })
        .collect();
    if let Some(offsite) = &b.offsite {
        for id in offsite
            .ids()
            .await
            .with_context(|| format!("listing {}", offsite.describe()))?
        {
            match listed.iter_mut().find(|l| l.manifest.id == id) {
                Some(known) => known.offsite = true,
                None => listed.push(Listed {
                    manifest: offsite.manifest(&id).await?,
                    local: false,
                    offsite: true,
                }),
            }
        }
    }
    listed.sort_by(|x, y| y.manifest.id.cmp(&x.manifest.id));
    Ok(listed)
}

/// `selector` in the folder, or in the bucket (then downloaded and checked):
/// `latest` is the newest of both.
async fn locate(b: &Backups, selector: &str, lock: &store::DirLock) -> Result<Entry> {
    let by_path =
        selector.contains('/') || selector.ends_with(".dump") || selector.ends_with(".json");
    let Some(offsite) = b.offsite.as_ref().filter(|_| !by_path) else {
        return store::find(&b.dir, selector);
    };
    let local = store::list(&b.dir)?;
    if let Some(entry) = local.iter().find(|e| e.manifest.id == selector) {
        return Ok(entry.clone());
    }
    let remote = offsite.ids().await.with_context(|| {
        format!(
            "listing {} to find backup `{selector}` (name a backup id in {} to use a local one)",
            offsite.describe(),
            b.dir.display()
        )
    })?;
    let wanted = if selector == "latest" {
        let newest_local = local.first().map(|e| e.manifest.id.clone());
        match (newest_local, remote.first().cloned()) {
            (Some(l), Some(r)) if l >= r => return Ok(local[0].clone()),
            (Some(_), None) => return Ok(local[0].clone()),
            (_, Some(r)) => r,
            (None, None) => anyhow::bail!(
                "no backups in {} or {} yet: run `cargo xtask backup create`",
                b.dir.display(),
                offsite.describe()
            ),
        }
    } else if remote.iter().any(|r| r == selector) {
        selector.to_owned()
    } else {
        anyhow::bail!(
            "no backup `{selector}` in {} or {}: `cargo xtask backup list` shows the ids",
            b.dir.display(),
            offsite.describe()
        );
    };
    offsite.download(&wanted, &b.dir, lock).await
}
