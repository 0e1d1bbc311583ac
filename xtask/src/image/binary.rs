//! The app as one static binary, so the image can be FROM scratch: no base
//! image to pull, no libc to patch, nothing in the image but the service.
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
};

use anyhow::{bail, Context, Result};

use super::revision::Revision;
use crate::{progress::Step, workspace};

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn path(target_dir: &std::path::Path) -> PathBuf {
    target_dir.join(TARGET).join("release").join("app")
}

/// `cargo build --release` of the app, statically linked. Output streams to
/// the progress step; on failure the last lines are in the error.
/// `target_dir` is the workspace's unless a benchmark wants a cold one.
pub fn build_static(
    revision: &Revision,
    target_dir: Option<&std::path::Path>,
    quiet: bool,
) -> Result<PathBuf> {
    let target_dir = target_dir
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(workspace::target_dir);
    let step = Step::start("cargo build (static app)", quiet);
    let reader = duct::cmd!(
        "cargo",
        "build",
        "--release",
        "--locked",
        "--package",
        "app",
        "--target",
        TARGET
    )
    .dir(workspace::root())
    // Only the target crates get crt-static; build scripts stay dynamic because --target is explicit.
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .env("APP_GIT_REVISION", revision.full())
    .env("CARGO_TARGET_DIR", &target_dir)
    .stderr_to_stdout()
    .unchecked()
    .reader()
    .context("starting cargo build for the app")?;
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(&reader).lines() {
        let line = line.context("reading cargo output")?;
        step.line(&line);
        tail.push(line);
        if tail.len() > 30 {
            tail.remove(0);
        }
    }
    let output = reader
        .try_wait()
        .context("waiting for cargo")?
        .map(|o| o.status);
    if !output.is_some_and(|s| s.success()) {
        step.finish("FAILED");
        bail!(
            "building the static app binary failed:\n{}",
            tail.join("\n")
        );
    }
    step.finish("done");
    let binary = path(&target_dir);
    if !binary.is_file() {
        bail!("cargo reported success but {} is missing", binary.display());
    }
    Ok(binary)
}
