//! `[backup]`: where `cargo xtask backup` keeps an environment's database
//! backups, how many, and which secret holds the database URL. Checked
//! strictly, like the rest of the file; the URL itself never appears in the
//! file, an error or a log.
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{resolve_secret, workspace, Environment};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// The folder backups go to (relative: to the workspace root); each
    /// environment writes to its own subfolder, named after it.
    pub dir: PathBuf,
    /// Backups kept per environment; older ones are removed after each `backup create`.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// "env:VARIABLE" or "file:/path" holding the postgres:// URL (a secret: it carries the password).
    pub database_url: String,
}

fn default_keep() -> usize {
    7
}

/// `[backup]`, checked and with its secret resolved.
#[derive(Clone)]
pub struct BackupSettings {
    /// The environment's own folder: `<dir>/<environment>`.
    pub dir: PathBuf,
    pub keep: usize,
    /// The resolved URL. Never printed: `Debug` hides it.
    pub database_url: String,
}

impl std::fmt::Debug for BackupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSettings")
            .field("dir", &self.dir)
            .field("keep", &self.keep)
            .field("database_url", &"…")
            .finish()
    }
}

impl Environment {
    pub(super) fn validate_backup(&self) -> Result<()> {
        let Some(b) = &self.file.backup else {
            return Ok(());
        };
        if b.dir.as_os_str().is_empty() {
            bail!(self.field_error(
                "backup.dir",
                "\"\"",
                "must name a folder (relative paths are from the workspace root)"
            ));
        }
        if !(1..=1000).contains(&b.keep) {
            bail!(self.field_error("backup.keep", b.keep, "must be between 1 and 1000"));
        }
        let reference = &b.database_url;
        if let Some(variable) = reference.strip_prefix("env:") {
            let ok = !variable.is_empty()
                && variable
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                bail!(self.field_error(
                    "backup.database_url",
                    format!("{reference:?}"),
                    "env:VARIABLE needs a variable name of letters, digits and _"
                ));
            }
        } else if let Some(path) = reference.strip_prefix("file:") {
            if !path.starts_with('/') {
                bail!(self.field_error(
                    "backup.database_url",
                    format!("{reference:?}"),
                    "file:/path needs an absolute path"
                ));
            }
        } else {
            // Never echoed: it is most likely the URL itself, password included.
            bail!(self.field_error(
                "backup.database_url",
                "…",
                "must be \"env:VARIABLE\" or \"file:/path\" naming where the postgres:// URL is; the URL holds a password and never goes in this file"
            ));
        }
        Ok(())
    }

    /// The `[backup]` settings, the database URL resolved on this machine.
    pub fn backup(&self) -> Result<BackupSettings> {
        let Some(b) = &self.file.backup else {
            bail!(
                "{}: no [backup] table: add one, e.g.\n[backup]\ndir = \"/var/backups/xtask\"\nkeep = 7\ndatabase_url = \"env:DATABASE_URL\"\n(see docs/DATA.md)",
                self.path.display()
            );
        };
        let database_url = resolve_secret("backup.database_url", &b.database_url)?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            bail!(
                "{}: backup.database_url = {}: the value is not a postgres:// URL",
                self.path.display(),
                b.database_url
            );
        }
        let dir = if b.dir.is_absolute() {
            b.dir.clone()
        } else {
            workspace::root().join(&b.dir)
        };
        Ok(BackupSettings {
            dir: dir.join(&self.name),
            keep: b.keep,
            database_url,
        })
    }
}
