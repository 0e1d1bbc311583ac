//! `lab down`: removes what `up` made, first by the recorded pids, then by
//! name (every process naming the lab folder, every namespace and link with
//! the lab's prefix, the registry's certs.d entry), so it also cleans up
//! after an `up` that failed half-way or lost its state file. Idempotent:
//! nothing found is nothing to do. Ends by checking that nothing is left.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{net, plan::Cmd, processes, Lab};
use crate::{daemon, engine::ManagedProcess};

#[derive(Debug, Default, Serialize)]
pub struct Removed {
    pub items: Vec<String>,
}

pub async fn down(prefix: &str, dir: &Path) -> Result<Removed> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab needs root to remove its namespaces, bridge and daemons");
    }
    let _lock = super::machine_lock()?;
    down_locked(prefix, dir).await
}

/// `down` for a caller that holds the machine lock (`up`).
pub(crate) async fn down_locked(prefix: &str, dir: &Path) -> Result<Removed> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mut removed = Removed::default();
    // A state file that does not parse still leaves the by-name sweep.
    let lab = Lab::load_from(&dir).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; removing the lab by name only");
        None
    });
    // Containers first: lab containers are disposable, and dockerd would
    // otherwise give each one its stop timeout (10 s) while shutting down.
    for pid in processes::kill_in_lab_cgroups(prefix) {
        removed
            .items
            .push(format!("container process {pid} (SIGKILL)"));
    }
    if let Some(lab) = &lab {
        stop_recorded(lab, &mut removed);
    }
    for pid in processes::kill_naming(&dir, Duration::from_secs(10))? {
        removed.items.push(format!("process {pid} (SIGKILL)"));
    }
    for pid in processes::kill_in_lab_cgroups(prefix) {
        removed
            .items
            .push(format!("container process {pid} (SIGKILL)"));
    }
    removed.items.extend(processes::remove_lab_cgroups(prefix)?);
    for mount in processes::mounts_under(&dir) {
        processes::run(&Cmd::new("umount", &["--lazy", &mount]))?;
        removed.items.push(format!("mount {mount}"));
    }
    let bridge_address = lab
        .as_ref()
        .map(|l| l.bridge_address)
        .or_else(|| net::bridge_address(prefix));
    // While the bridge still holds the address: no other lab can have it.
    if let Some(address) = bridge_address {
        remove_certs_d(address, &mut removed)?;
    }
    removed
        .items
        .extend(net::remove_all(prefix).context("removing the lab's namespaces and links")?);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        removed.items.push(format!("folder {}", dir.display()));
    }
    verify_gone(prefix, &dir)?;
    Ok(removed)
}

/// SIGTERM to every recorded daemon at once (dockerd stops its containers
/// and containerd first), then SIGKILL to any still there after the grace.
fn stop_recorded(lab: &Lab, removed: &mut Removed) {
    let mut recorded: Vec<(String, &ManagedProcess)> = Vec::new();
    for host in &lab.hosts {
        if let Some(p) = &host.sshd {
            recorded.push((format!("sshd of {}", host.name), p));
        }
        if let Some(p) = &host.dockerd {
            recorded.push((format!("dockerd of {}", host.name), p));
        }
    }
    if let Some(registry) = &lab.registry {
        recorded.push(("registry".into(), &registry.process));
    }
    let running: Vec<_> = recorded
        .into_iter()
        .filter(|(_, p)| p.is_running())
        .collect();
    for (_, p) in &running {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    // Bounded: whatever is still up after this is SIGKILLed, and what that
    // leaves (containers, mounts) the by-name sweep removes.
    let deadline = Instant::now() + Duration::from_secs(8);
    while running.iter().any(|(_, p)| p.is_running()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (what, p) in &running {
        // daemon::stop signals only while the pid is still ours.
        let _ = daemon::stop(p.pid, &p.marker, Duration::from_secs(2));
        removed.items.push(format!("{what} (pid {})", p.pid));
    }
}

/// The CA the registry put in /etc/docker/certs.d, recorded or not yet
/// recorded (any `<bridge address>:<port>` entry is this lab's).
fn remove_certs_d(bridge_address: std::net::Ipv4Addr, removed: &mut Removed) -> Result<()> {
    let root = Path::new("/etc/docker/certs.d");
    let ours = format!("{bridge_address}:");
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&ours) {
            let path = entry.path();
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
            removed.items.push(format!("{}", path.display()));
        }
    }
    // certs.d itself only when that leaves it empty (remove_dir refuses otherwise).
    let _ = std::fs::remove_dir(root);
    Ok(())
}

fn verify_gone(prefix: &str, dir: &Path) -> Result<()> {
    // A SIGKILLed process lingers until its parent reaps it: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let processes = loop {
        let mut left = processes::naming(dir);
        left.extend(processes::in_lab_cgroups(prefix));
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let processes: Vec<String> = processes
        .iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid} {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect();
    let (netns, links) = (net::lab_namespaces(prefix)?, net::lab_links(prefix)?);
    if !processes.is_empty() || !netns.is_empty() || !links.is_empty() || dir.exists() {
        bail!(
            "lab down left things behind: processes {processes:?}, namespaces {netns:?}, links {links:?}, folder present: {}",
            dir.exists()
        );
    }
    Ok(())
}
