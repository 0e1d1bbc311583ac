//! `cargo xtask backup create|list|verify|restore -e ENV`: the commands
//! over `crate::backup`, with `[backup]` from the environment file.
use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Result};
use clap::Subcommand;

use super::releases::{self, EnvArg};
use crate::{
    backup::{self, Backups, Checked},
    deploy::records::HistoryStore,
    environment::Environment,
    report,
};

#[derive(Subcommand)]
pub enum BackupAction {
    /// pg_dump -Fc of the environment's database, with a manifest (counts, checksums, sha256); keeps backup.keep
    Create {
        #[command(flatten)]
        env: EnvArg,
        /// The release to record (default: the environment's active release, when its target answers)
        #[arg(long)]
        release: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The environment's backups, newest first
    List {
        #[command(flatten)]
        env: EnvArg,
        #[arg(long)]
        json: bool,
    },
    /// Check a backup: sha256, pg_restore --list, restore into a scratch database, counts and checksums
    Verify {
        #[command(flatten)]
        env: EnvArg,
        /// A backup id, `latest`, or the path of a .dump with its manifest beside it
        #[arg(default_value = "latest")]
        backup: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace the environment's database with a backup, after checking the file (nothing is dropped if it fails)
    Restore {
        #[command(flatten)]
        env: EnvArg,
        /// A backup id, `latest`, or the path of a .dump with its manifest beside it
        backup: String,
        /// Confirm: the database's current contents are replaced
        #[arg(long)]
        yes: bool,
        /// Skip the backup of the database as it is, taken first by default (for a database too broken to dump)
        #[arg(long)]
        no_safety_backup: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(action: BackupAction) -> Result<ExitCode> {
    match action {
        BackupAction::Create { env, release, json } => {
            let environment = releases::load_env(&env)?;
            let backups = Backups::for_env(&environment)?;
            let release = match release {
                Some(release) => Some(release),
                None => active_release(&environment, &env).await,
            };
            let created = backup::create(&backups, release).await?;
            if json {
                report::print_json(&created);
            } else {
                let m = &created.manifest;
                let mut table = report::Table::new(
                    &format!(
                        "backup {} of {} ({})",
                        m.id,
                        m.environment,
                        backups.conn.describe()
                    ),
                    &["", ""],
                );
                table.row(vec!["file".into(), created.path.display().to_string()]);
                table.row(vec!["size".into(), size(m.size_bytes)]);
                table.row(vec!["sha256".into(), m.sha256.clone()]);
                table.row(vec!["schema version".into(), opt(m.schema_version)]);
                table.row(vec![
                    "release".into(),
                    m.release.clone().unwrap_or_else(|| "unknown".into()),
                ]);
                for (name, t) in &m.tables {
                    table.row(vec![
                        name.clone(),
                        format!("{} rows, {}", t.rows, t.checksum),
                    ]);
                }
                table.row(vec!["took".into(), format!("{:.2}s", m.duration_seconds)]);
                table.row(vec![
                    "retention".into(),
                    match created.removed.as_slice() {
                        [] => format!("keep {}: nothing removed", backups.keep),
                        removed => format!("keep {}: removed {}", backups.keep, removed.join(", ")),
                    },
                ]);
                if let Some(synced) = &created.offsite {
                    let mut done = format!("copied {}", synced.uploaded.join(", "));
                    if !synced.removed.is_empty() {
                        done += &format!("; removed {}", synced.removed.join(", "));
                    }
                    table.row(vec![synced.location.clone(), done]);
                }
                table.emit();
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupAction::List { env, json } => {
            let environment = releases::load_env(&env)?;
            let backups = Backups::for_env(&environment)?;
            let listed = backup::list_everywhere(&backups).await?;
            if json {
                report::print_json(&listed);
                return Ok(ExitCode::SUCCESS);
            }
            let mut places = backups.dir.display().to_string();
            if let Some(offsite) = &backups.offsite {
                places += &format!(" and {}", offsite.describe());
            }
            let mut table = report::Table::new(
                &format!(
                    "backups of {} in {places} (keep {})",
                    environment.name, backups.keep
                ),
                &[
                    "id", "where", "created", "size", "schema", "release", "rows", "note",
                ],
            );
            for l in &listed {
                let m = &l.manifest;
                let rows: i64 = m.tables.values().map(|t| t.rows).sum();
                let place = match (l.local, l.offsite) {
                    (true, true) => "folder, s3",
                    (true, false) => "folder",
                    (false, true) => "s3",
                    (false, false) => "dump missing",
                };
                table.row(vec![
                    m.id.clone(),
                    place.into(),
                    m.created_at.clone(),
                    size(m.size_bytes),
                    opt(m.schema_version),
                    m.release.clone().unwrap_or_else(|| "-".into()),
                    format!("{rows} in {} tables", m.tables.len()),
                    m.note.clone().unwrap_or_default(),
                ]);
            }
            table.emit();
            Ok(ExitCode::SUCCESS)
        }
        BackupAction::Verify { env, backup, json } => {
            let environment = releases::load_env(&env)?;
            let backups = Backups::for_env(&environment)?;
            let checked = backup::verify(&backups, &backup).await?;
            Ok(print_checked(&checked, "verify", json))
        }
        BackupAction::Restore {
            env,
            backup,
            yes,
            no_safety_backup,
            json,
        } => {
            let environment = releases::load_env(&env)?;
            let backups = Backups::for_env(&environment)?;
            if !yes {
                bail!(
                    "restore replaces the contents of {} ({}) with backup {backup}: stop the app's writers first (docs/runbooks/restore-database.md), then pass --yes",
                    environment.name,
                    backups.conn.describe()
                );
            }
            let checked = backup::restore(&backups, &backup, !no_safety_backup).await?;
            if !checked.passed && !json {
                eprintln!("restored, but the database differs from the backup: something wrote during or after the restore, or a table the backup does not have exists (restore drops only what the backup holds)");
            }
            Ok(print_checked(&checked, "restore", json))
        }
    }
}

fn print_checked(checked: &Checked, what: &str, json: bool) -> ExitCode {
    if json {
        report::print_json(checked);
    } else {
        let verdict = if checked.passed { "passed" } else { "FAILED" };
        let mut table = report::Table::new(
            &format!("{what} {}: {verdict} ({:.2}s)", checked.id, checked.seconds),
            &["check", "", "detail"],
        );
        for c in &checked.checks {
            let mark = if c.ok { "ok" } else { "FAIL" };
            table.row(vec![c.name.clone(), mark.into(), c.detail.clone()]);
        }
        table.emit();
    }
    if checked.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The environment's active release, when its target answers within 5 s.
async fn active_release(env: &Environment, arg: &EnvArg) -> Option<String> {
    let lookup = async {
        let target = releases::connect(env, arg).await?;
        let history = target.read_history().await?;
        Ok::<_, anyhow::Error>(history.active().map(|r| r.id.clone()))
    };
    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
        Ok(Ok(release)) => release,
        Ok(Err(e)) => {
            eprintln!("release unknown (the target did not answer: {e:#}); --release names it");
            None
        }
        Err(_) => {
            eprintln!("release unknown (the target did not answer within 5s); --release names it");
            None
        }
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

fn opt(version: Option<i64>) -> String {
    version.map_or("-".into(), |v| v.to_string())
}
