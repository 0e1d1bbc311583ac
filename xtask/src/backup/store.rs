//! The backup folder of one environment: `<id>.dump` (pg_dump's custom
//! format) beside `<id>.json` (its manifest). A backup exists once its
//! manifest does: both are written as `.partial` and renamed, the manifest
//! last, so a crash never leaves something that looks complete.
use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::pg::Tables;

pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub environment: String,
    pub created_at: String,
    /// The release active in the environment when the backup was taken, if known.
    pub release: Option<String>,
    /// The app's schema version (`schema_migrations`), if the database has one.
    pub schema_version: Option<i64>,
    /// The database's name (never its URL).
    pub database: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// The dump's file name, beside this manifest.
    pub file: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Per table, in the same snapshot as the dump: row count and checksum.
    pub tables: Tables,
    pub duration_seconds: f64,
    /// Why it was taken, when not by `backup create` (e.g. the safety backup before a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One complete backup: its manifest and where its files are.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    pub dump: PathBuf,
    pub manifest_path: PathBuf,
}

/// The sha256 and size of a file, read in blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, size))
}

/// A new id: the UTC time to the millisecond, so names sort by age.
pub fn new_id(dir: &Path) -> String {
    loop {
        let id = chrono::Utc::now()
            .format("%Y%m%dT%H%M%S%.3fZ")
            .to_string()
            .replace('.', "");
        if !dir.join(format!("{id}.dump")).exists() && !dir.join(format!("{id}.json")).exists() {
            return id;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

pub fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest).expect("serialisable manifest");
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_manifest(&text, &path.display().to_string())
}

/// A manifest's text, from a file or an object named by `source`.
pub fn parse_manifest(text: &str, source: &str) -> Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_str(text).with_context(|| format!("{source} is not a backup manifest"))?;
    if manifest.format != MANIFEST_FORMAT {
        bail!(
            "{source}: manifest format {} is not the one this xtask reads ({MANIFEST_FORMAT})",
            manifest.format
        );
    }
    Ok(manifest)
}

/// Every complete backup in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<Entry>> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut entries = vec![];
    for item in read.flatten() {
        let path = item.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let manifest = read_manifest(&path)?;
        entries.push(Entry {
            dump: dir.join(&manifest.file),
            manifest,
            manifest_path: path,
        });
    }
    entries.sort_by(|a, b| b.manifest.id.cmp(&a.manifest.id));
    Ok(entries)
}

/// `latest`, an id, or the path of a `.dump` (or `.json`) with its manifest beside it.
pub fn find(dir: &Path, selector: &str) -> Result<Entry> {
    if selector == "latest" {
        return list(dir)?.into_iter().next().with_context(|| {
            format!(
                "no backups in {} yet: run `cargo xtask backup create`",
                dir.display()
            )
        });
    }
    let as_path = Path::new(selector);
    if selector.contains('/')
        || as_path
            .extension()
            .is_some_and(|e| e == "dump" || e == "json")
    {
        let manifest_path = as_path.with_extension("json");
        if !manifest_path.is_file() {
            bail!(
                "{}: no manifest beside the dump: a backup without its manifest cannot be checked, so it is not restored",
                manifest_path.display()
            );
        }
        let manifest = read_manifest(&manifest_path)?;
        let folder = manifest_path.parent().unwrap_or(Path::new("."));
        return Ok(Entry {
            dump: folder.join(&manifest.file),
            manifest,
            manifest_path,
        });
    }
    list(dir)?
        .into_iter()
        .find(|e| e.manifest.id == selector)
        .with_context(|| {
            format!(
                "no backup `{selector}` in {}: `cargo xtask backup list` shows the ids",
                dir.display()
            )
        })
}

/// The file is the one the manifest describes: present, same size, same sha256.
pub fn check_integrity(entry: &Entry) -> Result<()> {
    let m = &entry.manifest;
    let meta = std::fs::metadata(&entry.dump).with_context(|| {
        format!(
            "backup {}: its dump {} is missing",
            m.id,
            entry.dump.display()
        )
    })?;
    if meta.len() != m.size_bytes {
        bail!(
            "backup {}: {} is {} bytes, the manifest says {}: the file is truncated or corrupt",
            m.id,
            entry.dump.display(),
            meta.len(),
            m.size_bytes
        );
    }
    let (sha256, _) = sha256_file(&entry.dump)?;
    if sha256 != m.sha256 {
        bail!(
            "backup {}: the sha256 of {} is {sha256}, the manifest says {}: the file is corrupt",
            m.id,
            entry.dump.display(),
            m.sha256
        );
    }
    Ok(())
}

/// Removes all but the newest `keep` backups; returns the ids removed.
pub fn retain(dir: &Path, keep: usize) -> Result<Vec<String>> {
    let mut removed = vec![];
    for old in list(dir)?.into_iter().skip(keep) {
        // The manifest first: a dump without one is no longer a backup.
        std::fs::remove_file(&old.manifest_path)
            .with_context(|| format!("removing {}", old.manifest_path.display()))?;
        let _ = std::fs::remove_file(&old.dump);
        removed.push(old.manifest.id);
    }
    Ok(removed)
}

/// The folder's lock: one backup command at a time per environment. Also
/// the moment to clear what a killed run left (`.partial` files, a dump
/// whose manifest never came).
pub struct DirLock {
    _lock: nix::fcntl::Flock<File>,
}

pub fn lock(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, e)| {
            anyhow::anyhow!(
                "{}: another backup command for this environment is running ({e}); wait for it",
                path.display()
            )
        },
    )?;
    let named: Vec<String> = list(dir)?.into_iter().map(|e| e.manifest.file).collect();
    for item in std::fs::read_dir(dir)?.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let orphan = name.ends_with(".dump") && !named.contains(&name);
        if name.ends_with(".partial") || orphan {
            let _ = std::fs::remove_file(item.path());
        }
    }
    Ok(DirLock { _lock: lock })
}
