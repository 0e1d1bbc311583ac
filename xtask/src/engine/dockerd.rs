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

/// A bridge of our own: a second dockerd on the default `docker0` would fight
/// the first over it (and a `--bridge=none` one deletes it), so every private
/// engine gets its own bridge and /24, chosen from the checkout's path.
pub fn bridge_name(dir: &Path) -> String {
    format!("xtb{:06x}", path_hash(dir) & 0xff_ffff)
}

fn path_hash(dir: &Path) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    hasher.finish()
}

fn ensure_bridge(name: &str, dir: &Path) -> Result<()> {
    let links = duct::cmd!("ip", "-o", "link", "show")
        .read()
        .context("listing network links (`ip link`)")?;
    if links
        .lines()
        .any(|l| l.split(':').nth(1).map(str::trim) == Some(name))
    {
        return Ok(());
    }
    let addresses = duct::cmd!("ip", "-4", "-o", "addr", "show")
        .read()
        .context("listing addresses (`ip addr`)")?;
    let start = (path_hash(dir) % 200) as u16;
    let subnet = (0..200u16)
        .map(|i| 16 + (start + i) % 200)
        .map(|third| format!("172.30.{third}."))
        .find(|prefix| !addresses.contains(prefix.as_str()))
        .context("no free 172.30.x.0/24 subnet for the engine's bridge")?;
    duct::cmd!("ip", "link", "add", "name", name, "type", "bridge")
        .run()
        .with_context(|| format!("creating bridge {name}"))?;
    duct::cmd!("ip", "addr", "add", format!("{subnet}1/24"), "dev", name)
        .run()
        .with_context(|| format!("addressing bridge {name}"))?;
    duct::cmd!("ip", "link", "set", name, "up")
        .run()
        .with_context(|| format!("bringing bridge {name} up"))?;
    Ok(())
}

pub fn remove_bridge(dir: &Path) {
    let _ = duct::cmd!("ip", "link", "del", bridge_name(dir))
        .stderr_null()
        .unchecked()
        .run();
}

pub async fn start(dir: &Path) -> Result<(String, ManagedProcess)> {
    if !nix::unistd::geteuid().is_root() {
        bail!("no Docker engine answers and a private one needs root: start Docker (or set DOCKER_HOST) and try again");
    }
    setup::ensure(setup::ENGINE)?;
    let bridge = bridge_name(dir);
    ensure_bridge(&bridge, dir)?;
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
            "--bridge",
            &bridge,
            // Leave the host's firewall alone: published ports on 127.0.0.1
            // go through docker-proxy, which needs no NAT rules.
            "--iptables=false",
            "--ip-masq=false",
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
        if !daemon::is_alive(process.pid) {
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
