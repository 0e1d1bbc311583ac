//! Schema-aware rollbacks. Every image built here carries the schema its
//! migrations go up to (`xtask.schema`) and which of them an older release
//! tolerates (`xtask.schema.additive`: migrations marked `-- xtask: additive`
//! in their first lines, e.g. a new nullable column or an index). A release
//! records both. A rollback to a release that needs an older schema than
//! the active one runs only when every migration in between is additive,
//! or with `--migrate-down` (the active release's image reverts them first,
//! under the lock, before any traffic moves), or with `--restore BACKUP`.
use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::release::Release;

pub const VERSION_LABEL: &str = "xtask.schema";
pub const ADDITIVE_LABEL: &str = "xtask.schema.additive";
const ADDITIVE_MARK: &str = "-- xtask: additive";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The newest migration the release's image applies.
    pub version: i64,
    /// Its migrations an older release works beside.
    #[serde(default)]
    pub additive: Vec<i64>,
}

/// The image labels for the migrations in `dir` (`NNNN_name.up.sql`).
pub fn labels_for(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut version = 0;
    let mut additive = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(number) = name
            .strip_suffix(".up.sql")
            .and_then(|n| n.split('_').next())
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        version = version.max(number);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if text.lines().take(5).any(|l| l.trim() == ADDITIVE_MARK) {
            additive.push(number);
        }
    }
    additive.sort();
    Ok(BTreeMap::from([
        (VERSION_LABEL.to_owned(), version.to_string()),
        (
            ADDITIVE_LABEL.to_owned(),
            additive
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]))
}

/// What an image's labels say of its schema (None: built without them).
pub fn from_labels(labels: &std::collections::HashMap<String, String>) -> Option<Schema> {
    let version = labels.get(VERSION_LABEL)?.parse().ok()?;
    let additive = labels
        .get(ADDITIVE_LABEL)
        .map(|a| a.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_default();
    Some(Schema { version, additive })
}

/// How a rollback from `active` to `to` meets the database.
#[derive(Debug, PartialEq, Eq)]
pub enum Move {
    /// Same schema, a newer one, or one of the two unknown.
    Free,
    /// Older, and every migration in between is additive.
    Tolerated,
    /// Older: these migrations (of the active image) must be reverted first.
    NeedsDown { to: i64, versions: Vec<i64> },
}

pub fn rollback_move(active: Option<&Schema>, to: Option<&Schema>) -> Move {
    let (Some(active), Some(to)) = (active, to) else {
        return Move::Free;
    };
    if to.version >= active.version {
        return Move::Free;
    }
    let between: Vec<i64> = (to.version + 1..=active.version).collect();
    match between.iter().all(|v| active.additive.contains(v)) {
        true => Move::Tolerated,
        false => Move::NeedsDown {
            to: to.version,
            versions: between
                .into_iter()
                .filter(|v| !active.additive.contains(v))
                .collect(),
        },
    }
}

/// What a rollback does about the schema before it moves anything.
#[derive(Debug, Clone)]
pub enum Before {
    Nothing,
    /// `migrate down --to N`, in this (the active) release's image.
    MigrateDown {
        active: Box<Release>,
        to: i64,
    },
    /// `backup restore` of this backup.
    Restore(String),
}

/// Decides before anything is recorded: a rollback that needs an older
/// schema is refused, naming the fix, unless the user chose one.
pub fn before_rollback(
    active: Option<&Release>,
    release: &Release,
    migrate_down: bool,
    restore: Option<&str>,
) -> Result<Before> {
    let Some(active) = active.filter(|_| release.restores.is_some()) else {
        return Ok(Before::Nothing);
    };
    match (rollback_move(active.schema.as_ref(), release.schema.as_ref()), migrate_down, restore) {
        (Move::NeedsDown { to, .. }, true, _) => Ok(Before::MigrateDown {
            active: Box::new(active.clone()),
            to,
        }),
        (Move::NeedsDown { .. }, false, Some(backup)) => Ok(Before::Restore(backup.to_owned())),
        (Move::NeedsDown { to, versions }, false, None) => anyhow::bail!(
            "{} needs schema {to}, and the database is at {} ({}'s); {} not marked additive, so {} may fail against it. \
             Pass --migrate-down (reverts them with {}'s own migrations first, under the lock, before traffic moves) \
             or --restore BACKUP (see `cargo xtask backup list`); nothing was changed",
            release.restores.as_deref().unwrap_or(&release.id),
            active.schema.as_ref().map_or(0, |s| s.version),
            active.id,
            match versions.len() {
                1 => format!("migration {} is", versions[0]),
                _ => format!("migrations {versions:?} are"),
            },
            release.restores.as_deref().unwrap_or(&release.id),
            active.id,
        ),
        _ => Ok(Before::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(version: i64, additive: &[i64]) -> Schema {
        Schema {
            version,
            additive: additive.to_vec(),
        }
    }

    #[test]
    fn an_older_schema_is_free_only_across_additive_migrations() {
        let active = schema(4, &[3]);
        assert_eq!(
            rollback_move(Some(&active), Some(&schema(4, &[]))),
            Move::Free
        );
        assert_eq!(
            rollback_move(Some(&active), Some(&schema(2, &[]))),
            Move::NeedsDown {
                to: 2,
                versions: vec![4]
            }
        );
        assert_eq!(
            rollback_move(Some(&schema(4, &[3, 4])), Some(&schema(2, &[]))),
            Move::Tolerated
        );
        assert_eq!(rollback_move(None, Some(&schema(1, &[]))), Move::Free);
        assert_eq!(rollback_move(Some(&active), None), Move::Free);
    }

    #[test]
    fn labels_come_from_the_migration_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0001_a.up.sql"), "CREATE TABLE a (id int);").unwrap();
        std::fs::write(dir.path().join("0001_a.down.sql"), "DROP TABLE a;").unwrap();
        std::fs::write(
            dir.path().join("0002_b.up.sql"),
            "-- an index\n-- xtask: additive\nCREATE INDEX b ON a (id);",
        )
        .unwrap();
        let labels = labels_for(dir.path()).unwrap();
        assert_eq!(labels[VERSION_LABEL], "2");
        assert_eq!(labels[ADDITIVE_LABEL], "2");
        let parsed = from_labels(&labels.into_iter().collect()).unwrap();
        assert_eq!(parsed, schema(2, &[2]));
    }
}
