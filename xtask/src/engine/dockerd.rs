//! A project-private dockerd: its own socket, data-root and exec-root, so it
//! never touches (or is touched by) another engine on the machine.
use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{answers, ManagedProcess};
use crate::{daemon, setup};

/// Unix socket paths are limited to 108 bytes; deep checkouts get a short one under /run.
fn socket_path(dir: &Path) -> Result<PathBuf> {
    let preferred = dir.join("docker.sock");
    if preferred.as_os_str().len() < 100 {
        return Ok(preferred);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    let short = PathBuf::from(format!("/run/xtask-engine-{:x}", hasher.finish()));
    std::fs::create_dir_all(&short).with_context(|| format!("creating {}", short.display()))?;
    Ok(short.join("docker.sock"))
}

pub async fn start(dir: &Path) -> Result<(String, ManagedProcess)> {
    if !nix::unistd::geteuid().is_root() {
        bail!("no Docker engine answers and a private one needs root: start Docker (or set DOCKER_HOST) and try again");
    }
    setup::ensure(setup::ENGINE)?;
    let socket = socket_path(dir)?;
    let _ = std::fs::remove_file(&socket);
    let host = format!("unix://{}", socket.display());
    let log = dir.join("dockerd.log");
    let (data, exec, pidfile) = (dir.join("data"), dir.join("exec"), dir.join("dockerd.pid"));
    let pid = daemon::spawn(
        "dockerd",
        &[
            "--host",
            &host,
            "--data-root",
            &data.to_string_lossy(),
            "--exec-root",
            &exec.to_string_lossy(),
            "--pidfile",
            &pidfile.to_string_lossy(),
        ],
        &log,
    )?;
    let process = ManagedProcess {
        pid,
        marker: host.clone(),
        log: log.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if answers(&host).await {
            return Ok((host, process));
        }
        if !process.is_running() {
            bail!(
                "dockerd exited during start-up (log: {}):\n{}",
                log.display(),
                daemon::log_tail(&log, 15)
            );
        }
        if Instant::now() > deadline {
            daemon::stop(pid, &host, Duration::from_secs(10))?;
            bail!(
                "dockerd did not answer on {host} within 60s (log: {}):\n{}",
                log.display(),
                daemon::log_tail(&log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
