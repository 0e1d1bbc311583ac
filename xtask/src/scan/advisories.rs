//! Known vulnerabilities in the image's dependencies: the RustSec database
//! matched against the Cargo.lock the image carries.
use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context, Result};

use super::{Finding, Severity};

/// Where cargo-audit keeps its copy: `$CARGO_HOME/advisory-db`.
pub fn default_location() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("advisory-db"))
}

/// Returns the findings and a line saying what was checked.
pub fn check(lockfile_text: &str, db_path: Option<&Path>) -> Result<(Vec<Finding>, String)> {
    let lockfile = rustsec::Lockfile::from_str(lockfile_text)
        .context("parsing the Cargo.lock carried by the image")?;
    let chosen = db_path.map(Path::to_path_buf).or_else(default_location);
    let db = match &chosen {
        Some(path) if path.join("crates").is_dir() => rustsec::Database::open(path)
            .with_context(|| format!("opening the advisory database at {}", path.display()))?,
        Some(path) if db_path.is_some() => anyhow::bail!(
            "--advisory-db {}: not a RustSec advisory database (no crates/ folder inside)",
            path.display()
        ),
        _ => {
            let looked = chosen.map_or("no CARGO_HOME or HOME".into(), |p| p.display().to_string());
            let finding = Finding {
                id: "rustsec/no-database".into(),
                severity: Severity::Medium,
                title: "no RustSec advisory database: dependencies were NOT checked for known vulnerabilities".into(),
                detail: format!("looked in {looked}; clone github.com/rustsec/advisory-db there or pass --advisory-db PATH"),
                source: "rustsec".into(),
                location: "Cargo.lock".into(),
            };
            return Ok((vec![finding], "RustSec: no database".into()));
        }
    };
    let vulnerabilities = db.vulnerabilities(&lockfile);
    let findings = vulnerabilities
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
    Ok((
        findings,
        format!(
            "RustSec: {} advisories against {} packages",
            db.iter().count(),
            lockfile.packages.len()
        ),
    ))
}
