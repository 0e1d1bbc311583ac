//! `cargo xtask ci`: exactly what CI runs. Formatting, lints (with the
//! pinned Python linters), a real engine, a scan of the app image against the
//! shared RustSec snapshot, every test; the engine it started is stopped
//! again whatever happened.
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{engine, image, lint, report, scan, setup, workspace};

/// The RustSec snapshot CI scans against: `shared/` beside the checkout
/// (CI runs in a fresh clone with it there), so results do not depend on
/// whether the network reaches GitHub that day.
pub const ADVISORY_DB: &str = "../shared/advisory-db";

struct Outcome {
    step: &'static str,
    seconds: f64,
    ok: bool,
}

pub async fn run() -> Result<()> {
    let mut outcomes = Vec::new();
    let result = run_steps(&mut outcomes).await;
    let mut table = report::Table::new("cargo xtask ci", &["step", "result", "time"]);
    for o in &outcomes {
        table.row(vec![
            o.step.into(),
            if o.ok { "ok" } else { "FAILED" }.into(),
            format!("{:.1}s", o.seconds),
        ]);
    }
    table.emit();
    if let Err(e) = &result {
        report::error(&format!("cargo xtask ci failed: {e:#}"));
    }
    result
}

async fn run_steps(outcomes: &mut Vec<Outcome>) -> Result<()> {
    step(outcomes, "fmt", || cargo(&["fmt", "--all", "--check"]))?;
    step(outcomes, "clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step(outcomes, "lint", lint::ci_step)?;
    step(outcomes, "test services", || {
        setup::ensure(setup::TEST_SERVICES)
    })?;

    let started = Instant::now();
    let engine = {
        let _group = report::group("engine start");
        match engine::start().await {
            // The Docker target's deploys find the balancer image, never build it.
            Ok(started) => crate::haproxy::image::ensure_on(&started.state.docker_host, false)
                .await
                .map(|_| started),
            Err(e) => Err(e),
        }
    };
    let engine = record(outcomes, "engine start", started, engine)?;
    eprintln!(
        "engine: {} (registry {})",
        engine.state.docker_host, engine.state.registry.address
    );

    let started = Instant::now();
    let scanned = {
        let _group = report::group("scan");
        scan_app(&engine.state.docker_host).await
    };
    let tests = match record(outcomes, "scan", started, scanned) {
        Ok(()) => step(outcomes, "test", || {
            // Every test binary runs even after one fails: a CI run shows
            // every failure at once, not the first of them.
            cargo(&["test", "--workspace", "--all-targets", "--no-fail-fast"])
        }),
        Err(e) => Err(e),
    };
    // The swarm tests made the engine a single-node swarm: leave it, as `engine stop` would.
    if let Err(e) = engine::leave_swarm_if_ours().await {
        eprintln!("warning: {e:#}");
    }
    if engine.started_now {
        let started = Instant::now();
        let stopped = {
            let _group = report::group("engine stop");
            engine::stop().map(|_| ())
        };
        // A test failure is the headline; a failed stop is still reported.
        if let Err(e) = record(outcomes, "engine stop", started, stopped) {
            if tests.is_ok() {
                return Err(e);
            }
            eprintln!("also: {e:#}");
        }
    }
    tests
}

/// Builds the app image (tests reuse the compiled binary) and scans it
/// against the shared advisory snapshot; any finding at high or above fails CI.
async fn scan_app(docker_host: &str) -> Result<()> {
    let db = workspace::root().join(ADVISORY_DB);
    if !scan::database::is_database(&db) {
        bail!(
            "{}: CI scans the app image against this RustSec snapshot (shared/ beside the checkout), and it is missing; put a copy of github.com/rustsec/advisory-db there",
            db.display()
        );
    }
    let docker = engine::connect(docker_host).await?;
    let built = image::build(
        &docker,
        &image::BuildRequest {
            repo: image::default_repo()?,
            quiet: true,
            ..Default::default()
        },
    )
    .await?;
    let image = &built.tags[0];
    let options = scan::ScanOptions {
        advisory_db: Some(db),
        max_size_bytes: (scan::DEFAULT_MAX_SIZE_MB * 1_000_000) as i64,
    };
    let report = scan::scan(&docker, image, &options).await?;
    for f in &report.findings {
        eprintln!(
            "{} {} {} {}",
            f.severity.as_str(),
            f.id,
            f.location,
            f.title
        );
    }
    eprintln!("scan of {image}: {}", report.checked.join("; "));
    if report.fails(scan::Severity::High) {
        bail!("scan of {image}: findings at or above high (listed above)");
    }
    Ok(())
}

fn step(
    outcomes: &mut Vec<Outcome>,
    name: &'static str,
    run: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let result = {
        let _group = report::group(name);
        run()
    };
    record(outcomes, name, started, result)
}

fn record<T>(
    outcomes: &mut Vec<Outcome>,
    step: &'static str,
    started: Instant,
    result: Result<T>,
) -> Result<T> {
    outcomes.push(Outcome {
        step,
        seconds: started.elapsed().as_secs_f64(),
        ok: result.is_ok(),
    });
    result.with_context(|| format!("step `{step}`"))
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = duct::cmd("cargo", args)
        .dir(workspace::root())
        .unchecked()
        .run()
        .with_context(|| format!("running cargo {}", args.join(" ")))?
        .status;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
