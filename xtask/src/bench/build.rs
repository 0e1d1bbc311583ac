//! Image build and push figures, with plain `cargo build --release` of the
//! same crate in the same run as the baseline.
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::ratio;
use crate::{engine, image, registry, report, workspace};

fn plain_cargo_build(target_dir: &std::path::Path) -> Result<f64> {
    let started = Instant::now();
    let status = duct::cmd!(
        "cargo",
        "build",
        "--release",
        "--locked",
        "--package",
        "app",
        "--quiet"
    )
    .dir(workspace::root())
    .env("CARGO_TARGET_DIR", target_dir)
    .env_remove("RUSTFLAGS")
    .unchecked()
    .run()
    .context("running the plain cargo build")?
    .status;
    if !status.success() {
        bail!("plain cargo build failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

pub async fn run(json: bool) -> Result<()> {
    let started = engine::start().await?;
    let docker = engine::connect(&started.state.docker_host).await?;
    let dir = workspace::target_dir().join("bench");
    let (plain_dir, image_dir) = (dir.join("plain"), dir.join("image"));
    for d in [&plain_dir, &image_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
    eprintln!("cold builds compile everything from scratch: this takes minutes");
    let plain_cold = plain_cargo_build(&plain_dir)?;
    let plain_warm = plain_cargo_build(&plain_dir)?;

    let request = |no_cache| image::BuildRequest {
        repo: "xtask-bench".into(),
        quiet: true,
        target_dir: Some(image_dir.clone()),
        no_cache,
        ..Default::default()
    };
    let t = Instant::now();
    let built = image::build(&docker, &request(true)).await?;
    let image_cold = t.elapsed().as_secs_f64();
    let t = Instant::now();
    image::build(&docker, &request(false)).await?;
    let image_warm = t.elapsed().as_secs_f64();

    let registry_address = started.state.registry.address.clone();
    let credentials = registry::credentials_for(&registry_address, Some(&started.state))?;
    // A repository name never pushed before, so the first push uploads every layer.
    let fresh = format!("xtask-bench-{}:{}", chrono::Utc::now().timestamp(), "bench");
    image::tag(&docker, &built.tags[0], &fresh).await?;
    let first_push = registry::push(
        &docker,
        &fresh,
        &registry_address,
        credentials.as_ref(),
        true,
    )
    .await?;
    let repeat_push = registry::push(
        &docker,
        &fresh,
        &registry_address,
        credentials.as_ref(),
        true,
    )
    .await?;
    for d in [&plain_dir, &image_dir] {
        let _ = std::fs::remove_dir_all(d);
    }

    let figures = json!({
        "image_size_bytes": built.size_bytes,
        "plain_cargo_build_cold_seconds": plain_cold,
        "plain_cargo_build_warm_seconds": plain_warm,
        "image_build_cold_seconds": image_cold,
        "image_build_warm_seconds": image_warm,
        "cold_ratio": image_cold / plain_cold,
        "warm_ratio": image_warm / plain_warm,
        "push_first_seconds": first_push.seconds,
        "push_repeat_seconds": repeat_push.seconds,
        "pushed_digest": first_push.digest,
    });
    if json {
        report::print_json(&figures);
    } else {
        let mut table =
            report::Table::new("bench build", &["measure", "value", "vs plain cargo build"]);
        table.row(vec![
            "image size".into(),
            format!("{:.2} MB", built.size_bytes as f64 / 1e6),
            "-".into(),
        ]);
        table.row(vec![
            "plain cargo build --release, cold".into(),
            format!("{plain_cold:.1}s"),
            "1.00x".into(),
        ]);
        table.row(vec![
            "image build (static cargo + engine), cold".into(),
            format!("{image_cold:.1}s"),
            ratio(image_cold, plain_cold),
        ]);
        table.row(vec![
            "plain cargo build --release, warm".into(),
            format!("{plain_warm:.2}s"),
            "1.00x".into(),
        ]);
        table.row(vec![
            "image build, warm".into(),
            format!("{image_warm:.2}s"),
            ratio(image_warm, plain_warm),
        ]);
        table.row(vec![
            "push, first (all layers)".into(),
            format!("{:.2}s", first_push.seconds),
            "-".into(),
        ]);
        table.row(vec![
            "push, again (layers exist)".into(),
            format!("{:.2}s", repeat_push.seconds),
            "-".into(),
        ]);
        table.emit();
    }
    Ok(())
}
