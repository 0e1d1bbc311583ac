//! Known vulnerabilities in the image's dependencies: the RustSec database
//! matched against the Cargo.lock the image carries.
use std::{path::Path, str::FromStr};

use anyhow::{Context, Result};

use super::{database, Finding, Severity};

/// The findings, a line saying what was checked, and which database it was.
pub fn check(
    lockfile_text: &str,
    db_path: Option<&Path>,
) -> Result<(Vec<Finding>, String, Option<database::Provenance>)> {
    let lockfile = rustsec::Lockfile::from_str(lockfile_text)
        .context("parsing the Cargo.lock carried by the image")?;
    let chosen = db_path
        .map(Path::to_path_buf)
        .or_else(database::default_location);
    let (db, path) = match &chosen {
        Some(path) if database::is_database(path) => (
            rustsec::Database::open(path)
                .with_context(|| format!("opening the advisory database at {}", path.display()))?,
            path,
        ),
        Some(path) if db_path.is_some() => anyhow::bail!(
            "--advisory-db {}: not a RustSec advisory database (no crates/ folder inside); fetch one there with `cargo xtask scan --update-db --advisory-db {}`",
            path.display(),
            path.display()
        ),
        _ => {
            let looked = chosen.map_or("no CARGO_HOME or HOME".into(), |p| p.display().to_string());
            let finding = Finding {
                id: "rustsec/no-database".into(),
                severity: Severity::Medium,
                title: "no RustSec advisory database: dependencies were NOT checked for known vulnerabilities".into(),
                detail: format!("looked in {looked}; run `cargo xtask scan --update-db` to fetch it there, or pass --advisory-db PATH"),
                source: "rustsec".into(),
                location: "Cargo.lock".into(),
            };
            return Ok((vec![finding], "RustSec: no database".into(), None));
        }
    };
    let provenance = database::provenance(path, db.iter().count());
    let vulnerabilities = db.vulnerabilities(&lockfile);
    let mut findings: Vec<Finding> = vulnerabilities
        .into_iter()
        .map(|v| {
            let severity =
                v.advisory
                    .cvss
                    .as_ref()
                    .map_or(Severity::High, |c| match c.severity() {
                        cvss::Severity::None => Severity::Info,
                        cvss::Severity::Low => Severity::Low,
                        cvss::Severity::Medium => Severity::Medium,
                        cvss::Severity::High => Severity::High,
                        cvss::Severity::Critical => Severity::Critical,
                    });
            let patched: Vec<String> = v.versions.patched().iter().map(|r| r.to_string()).collect();
            Finding {
                id: v.advisory.id.to_string(),
                severity,
                title: v.advisory.title.clone(),
                detail: if patched.is_empty() {
                    "no patched version yet".to_owned()
                } else {
                    format!("patched in {}", patched.join(", "))
                },
                source: "rustsec".into(),
                location: format!("{}@{}", v.package.name, v.package.version),
            }
        })
        .collect();
    if let Some(age) = provenance
        .age_days
        .filter(|d| *d > database::STALE_AFTER_DAYS)
    {
        findings.push(Finding {
            id: "rustsec/stale-database".into(),
            severity: Severity::Info,
            title: format!("the advisory database is {age} days old: advisories published since were not checked"),
            detail: "run `cargo xtask scan --update-db` where the network reaches GitHub".into(),
            source: "rustsec".into(),
            location: provenance.path.clone(),
        });
    }
    let checked = format!(
        "RustSec: {} advisories against {} packages (database {})",
        provenance.advisories,
        lockfile.packages.len(),
        provenance.describe()
    );
    Ok((findings, checked, Some(provenance)))
}
