//! The lab's daemons: started from `plan`'s commands, waited for, and
//! stopped by pid. A pid is trusted only while its command line still names
//! the lab's folder, so a recycled pid is never signalled.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::plan::Cmd;
use crate::{daemon, engine::ManagedProcess};

/// Runs one command; a failure names the command and its stderr.
pub fn run(cmd: &Cmd) -> Result<()> {
    let output = duct::cmd(&cmd.program, &cmd.args)
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running `{}`", cmd.display()))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Starts `cmd` in the background (own process group, output to `log`);
/// `marker` is what its command line keeps naming (a socket or config path).
pub fn spawn(cmd: &Cmd, log: &Path, marker: &str) -> Result<ManagedProcess> {
    let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
    let pid = daemon::spawn(&cmd.program, &args, log)
        .with_context(|| format!("starting `{}`", cmd.display()))?;
    Ok(ManagedProcess {
        pid,
        marker: marker.to_owned(),
        log: log.to_owned(),
    })
}

/// Polls `ready` until it says yes; fails early, with the log's tail, when
/// the process died, and stops it when it does not get ready in time.
pub async fn wait_ready<F, Fut>(
    what: &str,
    process: &ManagedProcess,
    limit: Duration,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if ready().await {
            return Ok(());
        }
        if !daemon::is_alive(process.pid) {
            bail!(
                "{what} exited during start-up (log {}):\n{}",
                process.log.display(),
                daemon::log_tail(&process.log, 15)
            );
        }
        if Instant::now() > deadline {
            stop(process, Duration::from_secs(5));
            bail!(
                "{what} was not ready within {limit:?} (log {}):\n{}",
                process.log.display(),
                daemon::log_tail(&process.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn tcp_open(address: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// SIGTERM, up to `grace`, then SIGKILL; only while the pid is still ours.
pub fn stop(process: &ManagedProcess, grace: Duration) {
    if let Err(e) = daemon::stop(process.pid, &process.marker, grace) {
        eprintln!("warning: stopping pid {}: {e:#}", process.pid);
    }
}

/// Every process whose command line names `dir` (dockerd, its containerd
/// and shims, docker-proxy, sshd, the registry): what is left of a lab
/// whose state file was lost or whose daemons were killed uncleanly.
pub fn naming(dir: &Path) -> Vec<u32> {
    // With the slash: `target/lab/` must not match `target/lab-test/`.
    let marker = format!("{}/", dir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && daemon::is_ours(*pid, &marker))
        .collect()
}

/// SIGKILL every process that still names `dir`, then wait until none does.
pub fn kill_naming(dir: &Path, limit: Duration) -> Result<Vec<u32>> {
    let found = naming(dir);
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + limit;
    loop {
        let left = naming(dir);
        if left.is_empty() {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!(
                "processes naming {} survive SIGKILL: {left:?}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Mount points under `dir` (overlay layers, netns files of a dockerd that
/// was killed), deepest first, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found.dedup();
    found
}

/// Processes in a cgroup the lab named (`/<prefix>-h<i>/...`, see
/// `--cgroup-parent`): containers whose dockerd and shim are gone.
pub fn in_lab_cgroups(prefix: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .any(|path| {
                    path.trim_start_matches('/')
                        .split('/')
                        .next()
                        .is_some_and(|top| super::plan::is_lab_name(prefix, top))
                })
        })
        .collect()
}

/// SIGKILL every process in the lab's cgroups.
pub fn kill_in_lab_cgroups(prefix: &str) -> Vec<u32> {
    let found = in_lab_cgroups(prefix);
    for pid in &found {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    found
}

/// Removes the lab's cgroup folders in every hierarchy, deepest first
/// (cgroupfs folders are removed with rmdir once empty of processes).
pub fn remove_lab_cgroups(prefix: &str) -> Result<Vec<String>> {
    fn remove_tree(dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
        std::fs::remove_dir(dir)
    }
    let mut removed = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Ok(removed);
    };
    let mut roots: Vec<std::path::PathBuf> = vec!["/sys/fs/cgroup".into()];
    roots.extend(
        hierarchies
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    );
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if super::plan::is_lab_name(prefix, &name) && entry.path().is_dir() {
                let path = entry.path();
                // A process may take a moment to leave its cgroup after SIGKILL.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match remove_tree(&path) {
                        Ok(()) => break,
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100))
                        }
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("removing cgroup {}", path.display()))
                        }
                    }
                }
                removed.push(format!("cgroup {}", path.display()));
            }
        }
    }
    Ok(removed)
}
