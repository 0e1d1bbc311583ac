//! Off-site copies in an S3-compatible bucket (`[backup.s3]`): every backup
//! in the folder is also `<prefix><environment>/<id>.dump` and `.json`
//! there. The same rule as the folder: the dump goes first, the manifest
//! last, so an object set with a manifest is complete; retention removes the
//! manifest first. A fresh runner (an empty folder) finds the bucket's
//! backups and downloads the one it restores, checked against its manifest
//! like any local file.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::store::{self, DirLock, Entry, Manifest};
use crate::s3::Bucket;

#[derive(Debug, Clone)]
pub struct Offsite {
    pub bucket: Bucket,
    /// `<prefix><environment>/`
    pub prefix: String,
}

/// What one `create` did in the bucket.
#[derive(Debug, Clone, Serialize)]
pub struct Synced {
    pub location: String,
    /// Backups copied up: the new one, and any an earlier failed copy missed.
    pub uploaded: Vec<String>,
    /// Backups removed from the bucket by retention.
    pub removed: Vec<String>,
}

impl Offsite {
    /// `s3://bucket/prefix/environment/`
    pub fn describe(&self) -> String {
        self.bucket.describe(&self.prefix)
    }

    fn key(&self, file: &str) -> String {
        format!("{}{file}", self.prefix)
    }

    /// The ids of the complete backups in the bucket, newest first.
    pub async fn ids(&self) -> Result<Vec<String>> {
        let keys = self.bucket.list(&self.prefix).await?;
        let mut ids: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&self.prefix))
            .filter(|name| !name.contains('/'))
            .filter_map(|name| name.strip_suffix(".json"))
            .map(str::to_owned)
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        let key = self.key(&format!("{id}.json"));
        let bytes = self
            .bucket
            .get_bytes(&key)
            .await?
            .with_context(|| format!("{} is gone", self.bucket.describe(&key)))?;
        let text = String::from_utf8_lossy(&bytes);
        store::parse_manifest(&text, &self.bucket.describe(&key))
    }

    /// The dump, then its manifest.
    async fn upload(&self, entry: &Entry) -> Result<()> {
        let m = &entry.manifest;
        store::check_integrity(entry)
            .with_context(|| format!("not copying backup {} off-site", m.id))?;
        self.bucket
            .put_file(&self.key(&m.file), &entry.dump, &m.sha256, m.size_bytes)
            .await?;
        let manifest_sha = crate::s3::sigv4::sha256_hex(&std::fs::read(&entry.manifest_path)?);
        let size = std::fs::metadata(&entry.manifest_path)?.len();
        self.bucket
            .put_file(
                &self.key(&format!("{}.json", m.id)),
                &entry.manifest_path,
                &manifest_sha,
                size,
            )
            .await
    }

    /// The manifest first: without it the dump is no longer a backup.
    async fn remove(&self, id: &str) -> Result<()> {
        let manifest = self.manifest(id).await.ok();
        self.bucket.delete(&self.key(&format!("{id}.json"))).await?;
        let file = manifest.map_or(format!("{id}.dump"), |m| m.file);
        self.bucket.delete(&self.key(&file)).await
    }

    /// Copies up every backup in `dir` the bucket lacks, then keeps the
    /// newest `keep` in the bucket. Under the folder's lock.
    pub async fn sync(&self, dir: &Path, keep: usize, _lock: &DirLock) -> Result<Synced> {
        let mut remote = self.ids().await?;
        let mut uploaded = vec![];
        for entry in store::list(dir)? {
            if !remote.contains(&entry.manifest.id) {
                self.upload(&entry).await?;
                uploaded.push(entry.manifest.id.clone());
                remote.push(entry.manifest.id);
            }
        }
        remote.sort_by(|a, b| b.cmp(a));
        let mut removed = vec![];
        for id in remote.iter().skip(keep) {
            self.remove(id).await?;
            removed.push(id.clone());
        }
        Ok(Synced {
            location: self.describe(),
            uploaded,
            removed,
        })
    }

    /// Brings backup `id` into `dir` and checks it against its manifest: a
    /// corrupt or cut-short object is refused, and nothing is left.
    pub async fn download(&self, id: &str, dir: &Path, _lock: &DirLock) -> Result<Entry> {
        let manifest = self.manifest(id).await?;
        if manifest.id != id || manifest.file.contains('/') {
            bail!(
                "{}: the manifest names backup {} and file {}, not {id}: refusing it",
                self.bucket.describe(&self.key(&format!("{id}.json"))),
                manifest.id,
                manifest.file
            );
        }
        let partial = dir.join(format!("{}.partial", manifest.file));
        let key = self.key(&manifest.file);
        let fetched = self.bucket.get_to_file(&key, &partial).await;
        let entry = Entry {
            dump: partial.clone(),
            manifest: manifest.clone(),
            manifest_path: dir.join(format!("{id}.json")),
        };
        let checked = match fetched {
            Ok(Some(_)) => store::check_integrity(&entry),
            Ok(None) => Err(anyhow::anyhow!("{} is missing", self.bucket.describe(&key))),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "refusing backup {id} from {}: nothing was restored",
                self.describe()
            )));
        }
        let dump = dir.join(&manifest.file);
        std::fs::rename(&partial, &dump)
            .with_context(|| format!("renaming into {}", dump.display()))?;
        let manifest_partial = dir.join(format!("{id}.json.partial"));
        store::write_manifest(&manifest_partial, &manifest)?;
        std::fs::rename(&manifest_partial, &entry.manifest_path)
            .context("renaming the manifest into place")?;
        Ok(Entry { dump, ..entry })
    }
}
