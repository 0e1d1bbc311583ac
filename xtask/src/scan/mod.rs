//! `cargo xtask scan`: what is in an image that should not ship. Known
//! vulnerable dependencies (RustSec, against the exact Cargo.lock the image
//! carries), image policy (non-root, healthcheck, size, no secrets, no
//! setuid), and trivy/grype findings when either is installed.
pub mod advisories;
pub mod database;
pub mod external;
pub mod layers;
pub mod policy;
pub mod sarif;

use std::path::PathBuf;

use anyhow::{Context, Result};
use bollard::Docker;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Maps scanner words (trivy's CRITICAL, grype's Negligible, ...) to ours.
    pub fn from_word(word: &str) -> Severity {
        match word.to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" => Severity::Low,
            _ => Severity::Info,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable rule id: an advisory id, or `policy/<rule>`.
    pub id: String,
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    /// rustsec, policy, trivy or grype.
    pub source: String,
    /// Package `name@version`, file path in the image, or config field.
    pub location: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub image: String,
    pub image_id: String,
    pub findings: Vec<Finding>,
    /// What was checked, so "no findings" is never confused with "not looked".
    pub checked: Vec<String>,
    /// The advisory database the dependencies were checked against (None: not checked).
    pub advisory_db: Option<database::Provenance>,
}

impl ScanReport {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    pub fn fails(&self, fail_on: Severity) -> bool {
        self.worst().is_some_and(|w| w >= fail_on)
    }
}

pub struct ScanOptions {
    pub advisory_db: Option<PathBuf>,
    pub max_size_bytes: i64,
}

pub const DEFAULT_MAX_SIZE_MB: u64 = 25;

pub async fn scan(docker: &Docker, image: &str, options: &ScanOptions) -> Result<ScanReport> {
    let inspect = docker.inspect_image(image).await.with_context(|| {
        format!(
            "inspecting {image}: build it first (`cargo xtask build`) or name an image that exists"
        )
    })?;
    let contents = layers::read(docker, image).await?;
    let mut findings = policy::check_config(&inspect, options.max_size_bytes);
    findings.extend(policy::check_files(&contents.files));
    let mut checked = vec![
        "image policy".to_owned(),
        format!(
            "{} files in {} layers",
            contents.files.len(),
            contents.layer_count
        ),
    ];
    let mut advisory_db = None;
    match &contents.lockfile {
        Some(lockfile) => {
            let (found, what, db) = advisories::check(lockfile, options.advisory_db.as_deref())?;
            findings.extend(found);
            checked.push(what);
            advisory_db = db;
        }
        None => findings.push(Finding {
            id: "policy/no-lockfile".into(),
            severity: Severity::Medium,
            title: "the image carries no Cargo.lock: dependencies cannot be checked".into(),
            detail: format!(
                "expected /{}; images from `cargo xtask build` carry it",
                crate::image::context::LOCKFILE_IN_IMAGE
            ),
            source: "policy".into(),
            location: format!("/{}", crate::image::context::LOCKFILE_IN_IMAGE),
        }),
    }
    for outcome in external::run_available(image).await {
        match outcome {
            Ok((tool, found)) => {
                checked.push(format!("{tool}: {} findings", found.len()));
                findings.extend(found);
            }
            Err(e) => findings.push(Finding {
                id: "scanner/failed".into(),
                severity: Severity::Medium,
                title: "an installed scanner failed".into(),
                detail: format!("{e:#}"),
                source: "scan".into(),
                location: image.to_owned(),
            }),
        }
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    Ok(ScanReport {
        image: image.to_owned(),
        image_id: inspect.id.unwrap_or_default(),
        findings,
        checked,
        advisory_db,
    })
}
