//! Background processes this workspace starts and must later stop by pid,
//! and only those: a pid is trusted only while its command line still
//! names the marker (socket, config file) it was started with.
use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// Starts `program` in its own process group so it outlives this command and
/// a Ctrl-C in the terminal does not reach it; output goes to `log`.
pub fn spawn(program: &str, args: &[&str], log: &Path) -> Result<u32> {
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    Ok(child.id())
}

/// Is a process we spawned a moment ago still alive? No marker check: some
/// programs (nginx) rewrite their command line while starting, and a child
/// we have not reaped yet cannot have been replaced by another process.
pub fn is_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// Is `pid` alive and still the process we started (its argv contains `marker`)?
pub fn is_ours(pid: u32, marker: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if is_zombie(pid) {
        return false;
    }
    String::from_utf8_lossy(&cmdline).contains(marker)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Does nothing when the pid is no longer ours.
pub fn stop(pid: u32, marker: &str, grace: Duration) -> Result<()> {
    if !is_ours(pid, marker) {
        return Ok(());
    }
    let target = Pid::from_raw(pid as i32);
    kill(target, Signal::SIGTERM).with_context(|| format!("sending SIGTERM to pid {pid}"))?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_ours(pid, marker) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("pid {pid} did not stop within {grace:?} of SIGTERM; sending SIGKILL");
    let _ = kill(target, Signal::SIGKILL);
    Ok(())
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
