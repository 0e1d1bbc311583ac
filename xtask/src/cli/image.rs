//! The image commands' arguments and their glue: parse flags, call the
//! concept modules (image, scan, registry), report for people or machines.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use bollard::Docker;
use clap::Args;
use serde_json::json;

use crate::{
    engine, image, registry, report,
    scan::{self, Severity},
};

#[derive(Args)]
pub struct BuildArgs {
    /// Scan the image after building; fail at --fail-on
    #[arg(long)]
    pub scan: bool,
    /// Push every tag of the image after building (and scanning)
    #[arg(long)]
    pub push: bool,
    /// An extra tag besides the commit and version tags
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Image repository (default: [workspace.metadata.xtask] image in Cargo.toml)
    #[arg(long)]
    pub repo: Option<String>,
    #[command(flatten)]
    pub scan_options: ScanFlags,
    /// Also write the image's CycloneDX SBOM (the one it carries) to FILE
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// Registry for --push (default: XTASK_REGISTRY, else the engine's registry)
    #[arg(long)]
    pub registry: Option<String>,
    /// Print one JSON object at the end instead of the table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct ScanFlags {
    /// Fail when any finding is at or above this severity
    #[arg(long, value_enum, default_value = "high")]
    pub fail_on: Severity,
    /// A local RustSec advisory database (default: $CARGO_HOME/advisory-db, where cargo-audit keeps it)
    #[arg(long, value_name = "PATH")]
    pub advisory_db: Option<PathBuf>,
    /// Clone or update the advisory database first (git, bounded by XTASK_ADVISORY_DB_TIMEOUT, default 60s)
    #[arg(long)]
    pub update_db: bool,
    /// Image size budget in MB
    #[arg(long, default_value_t = scan::DEFAULT_MAX_SIZE_MB)]
    pub max_size_mb: u64,
    /// Also write the findings as SARIF 2.1.0 to FILE
    #[arg(long, value_name = "FILE")]
    pub sarif: Option<PathBuf>,
}

#[derive(Args)]
pub struct ScanArgs {
    /// Image to scan (default: the image built from the current tree)
    pub image: Option<String>,
    #[command(flatten)]
    pub flags: ScanFlags,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PushArgs {
    /// Image to push (default: the image built from the current tree)
    pub image: Option<String>,
    /// Registry host[:port] (default: XTASK_REGISTRY, else the engine's registry)
    #[arg(long)]
    pub registry: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `<repo>:<commit tag>`: what `cargo xtask build` made from this tree.
pub fn current_image(repo: Option<String>) -> Result<String> {
    let repo = match repo {
        Some(repo) => repo,
        None => image::default_repo()?,
    };
    Ok(format!("{repo}:{}", image::revision::current()?.tag()))
}

async fn require_image(docker: &Docker, reference: &str) -> Result<()> {
    docker
        .inspect_image(reference)
        .await
        .map(|_| ())
        .with_context(|| format!("no image {reference} in the engine: run `cargo xtask build` first, or name an existing image"))
}

pub async fn build(args: BuildArgs) -> Result<ExitCode> {
    let (docker, engine) = engine::require().await?;
    let repo = match args.repo {
        Some(repo) => repo,
        None => image::default_repo()?,
    };
    let built = image::build(
        &docker,
        &image::BuildRequest {
            repo,
            extra_tags: args.tags,
            quiet: args.json,
            sbom_out: args.sbom.clone(),
            ..Default::default()
        },
    )
    .await?;
    let mut out = json!({ "image": built });
    if !args.json {
        let mut table = report::Table::new("image", &["field", "value"]);
        table.row(vec!["id".into(), built.id.clone()]);
        table.row(vec!["tags".into(), built.tags.join(", ")]);
        table.row(vec![
            "size".into(),
            format!("{:.1} MB", built.size_bytes as f64 / 1e6),
        ]);
        let revision = built
            .labels
            .get("org.opencontainers.image.revision")
            .cloned()
            .unwrap_or_default();
        table.row(vec!["revision".into(), revision]);
        let sbom = format!(
            "/{} (sha256 {}){}",
            image::context::SBOM_IN_IMAGE,
            built
                .labels
                .get(image::context::SBOM_DIGEST_LABEL)
                .map_or("?", String::as_str),
            args.sbom
                .as_ref()
                .map_or(String::new(), |p| format!(", copy in {}", p.display()))
        );
        table.row(vec!["sbom".into(), sbom]);
        table.emit();
    }
    if args.scan {
        let (report, failed) =
            scan_and_report(&docker, &built.tags[0], &args.scan_options, args.json).await?;
        out["scan"] = json!(report);
        if failed {
            if args.json {
                report::print_json(&out);
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    if args.push {
        let registry = registry::choose(args.registry, engine.as_ref())?;
        let credentials = registry::credentials_for(&registry, engine.as_ref())?;
        let mut pushed = Vec::new();
        for tag in &built.tags {
            pushed.push(
                registry::push(&docker, tag, &registry, credentials.as_ref(), args.json).await?,
            );
        }
        if !args.json {
            print_pushed(&pushed);
        }
        out["pushed"] = json!(pushed);
    }
    if args.json {
        report::print_json(&out);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn scan(args: ScanArgs) -> Result<ExitCode> {
    let (docker, _) = engine::require().await?;
    let image = match args.image {
        Some(image) => image,
        None => current_image(None)?,
    };
    require_image(&docker, &image).await?;
    let (report, failed) = scan_and_report(&docker, &image, &args.flags, args.json).await?;
    if args.json {
        report::print_json(&report);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Scans, prints the table (unless JSON), writes SARIF; true when the scan fails the gate.
async fn scan_and_report(
    docker: &Docker,
    image: &str,
    flags: &ScanFlags,
    quiet: bool,
) -> Result<(scan::ScanReport, bool)> {
    if flags.update_db {
        let path = flags
            .advisory_db
            .clone()
            .or_else(scan::database::default_location)
            .context("--update-db: no CARGO_HOME or HOME to keep the database in; pass --advisory-db PATH")?;
        let step = crate::progress::Step::start("advisory database update", quiet);
        let updated = scan::database::update(&path);
        step.finish(if updated.is_ok() { "done" } else { "FAILED" });
        updated?;
    }
    let options = scan::ScanOptions {
        advisory_db: flags.advisory_db.clone(),
        max_size_bytes: (flags.max_size_mb as i64) * 1_000_000,
    };
    let report = scan::scan(docker, image, &options).await?;
    if let Some(path) = &flags.sarif {
        let text = serde_json::to_string_pretty(&scan::sarif::render(&report))?;
        std::fs::write(path, text)
            .with_context(|| format!("writing SARIF to {}", path.display()))?;
    }
    let failed = report.fails(flags.fail_on);
    if !quiet {
        let mut table = report::Table::new(
            &format!("scan of {image}"),
            &["severity", "id", "where", "finding"],
        );
        for f in &report.findings {
            table.row(vec![
                f.severity.as_str().into(),
                f.id.clone(),
                f.location.clone(),
                f.title.clone(),
            ]);
        }
        table.emit();
        match &report.advisory_db {
            Some(db) => eprintln!("advisory database: {} at {}", db.describe(), db.path),
            None => eprintln!("advisory database: none, dependencies NOT checked"),
        }
        eprintln!("checked: {}", report.checked.join("; "));
    }
    if failed {
        let count = report
            .findings
            .iter()
            .filter(|f| f.severity >= flags.fail_on)
            .count();
        let message = format!(
            "scan of {image}: {count} finding(s) at or above {}",
            flags.fail_on.as_str()
        );
        report::error(&message);
        eprintln!("error: {message}");
    }
    Ok((report, failed))
}

pub async fn push(args: PushArgs) -> Result<ExitCode> {
    let (docker, engine) = engine::require().await?;
    let image = match args.image {
        Some(image) => image,
        None => current_image(None)?,
    };
    let registry = registry::choose(args.registry, engine.as_ref())?;
    let credentials = registry::credentials_for(&registry, engine.as_ref())?;
    require_image(&docker, &image).await?;
    let pushed =
        registry::push(&docker, &image, &registry, credentials.as_ref(), args.json).await?;
    if args.json {
        report::print_json(&pushed);
    } else {
        print_pushed(std::slice::from_ref(&pushed));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_pushed(pushed: &[registry::Pushed]) {
    let mut table = report::Table::new("pushed", &["reference", "digest", "time"]);
    for p in pushed {
        table.row(vec![
            p.reference.clone(),
            p.digest.clone(),
            format!("{:.1}s", p.seconds),
        ]);
    }
    table.emit();
}
