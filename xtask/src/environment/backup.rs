//! `[backup]`: where `cargo xtask backup` keeps an environment's database
//! backups, how many, and which secret holds the database URL. Checked
//! strictly, like the rest of the file; the URL itself never appears in the
//! file, an error or a log.
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{resolve_secret, workspace, Environment};
use crate::s3::BucketConfig;

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
    /// An S3-compatible bucket every backup is also copied to (off-site).
    #[serde(default)]
    pub s3: Option<S3Config>,
}

/// `[backup.s3]`: keys are `<prefix><environment>/<id>.dump|json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// `https://host[:port]` of an S3-compatible service; default AWS's `https://s3.<region>.amazonaws.com`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Put before `<environment>/`: "" or ending in "/".
    #[serde(default)]
    pub prefix: String,
    /// `endpoint/bucket/key` addressing; default: true with an `endpoint`, false for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// "env:VARIABLE" or "file:/path", like every secret in this file.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary (STS) credentials.
    #[serde(default)]
    pub session_token: Option<String>,
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
    /// The bucket (credentials resolved) and this environment's key prefix.
    pub offsite: Option<(BucketConfig, String)>,
}

impl std::fmt::Debug for BackupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSettings")
            .field("dir", &self.dir)
            .field("keep", &self.keep)
            .field("database_url", &"…")
            .field("offsite", &self.offsite)
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
        self.check_reference(
            "backup.database_url",
            &b.database_url,
            "the postgres:// URL",
        )?;
        if let Some(s3) = &b.s3 {
            self.validate_s3(s3)?;
        }
        Ok(())
    }

    /// `env:VARIABLE` or `file:/path`; anything else is most likely the
    /// secret itself, so it is never echoed.
    pub(super) fn check_reference(&self, field: &str, reference: &str, holds: &str) -> Result<()> {
        if let Some(variable) = reference.strip_prefix("env:") {
            let ok = !variable.is_empty()
                && variable
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                bail!(self.field_error(
                    field,
                    format!("{reference:?}"),
                    "env:VARIABLE needs a variable name of letters, digits and _"
                ));
            }
        } else if let Some(path) = reference.strip_prefix("file:") {
            if !path.starts_with('/') {
                bail!(self.field_error(
                    field,
                    format!("{reference:?}"),
                    "file:/path needs an absolute path"
                ));
            }
        } else {
            bail!(self.field_error(
                field,
                "…",
                &format!("must be \"env:VARIABLE\" or \"file:/path\" naming where {holds} is; a secret never goes in this file")
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
        let offsite = match &b.s3 {
            Some(s3) => Some(self.resolve_s3(s3)?),
            None => None,
        };
        Ok(BackupSettings {
            dir: dir.join(&self.name),
            keep: b.keep,
            database_url,
            offsite,
        })
    }
}
