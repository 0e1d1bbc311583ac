//! Where the RustSec advisory database comes from and how old it is. The
//! scan finds it where cargo-audit keeps it (`$CARGO_HOME/advisory-db`) or
//! at `--advisory-db`, and `--update-db` clones or fast-forwards it with the
//! git CLI, bounded in time: a machine without a route to GitHub gets a clear
//! error after the bound, never a hang.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// The database cargo-audit (and we) fetch.
pub const DEFAULT_URL: &str = "https://github.com/rustsec/advisory-db.git";
/// Overrides [`DEFAULT_URL`]: a mirror, or a local repository in tests.
pub const URL_ENV: &str = "XTASK_ADVISORY_DB_URL";
/// Seconds `--update-db` may take before it is stopped (default 60).
pub const TIMEOUT_ENV: &str = "XTASK_ADVISORY_DB_TIMEOUT";
/// Older than this, the report says so: advisories published since are missed.
pub const STALE_AFTER_DAYS: i64 = 30;

/// Where cargo-audit keeps its copy: `$CARGO_HOME/advisory-db`.
pub fn default_location() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("advisory-db"))
}

/// A folder is a database when it has the `crates/` tree of advisories.
pub fn is_database(path: &Path) -> bool {
    path.join("crates").is_dir()
}

/// Which copy of the database a scan used, so a report can be trusted or questioned.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub path: String,
    /// `git` (a checkout: its HEAD), `snapshot` (a SNAPSHOT file names the
    /// commit) or `folder` (neither: commit and date unknown).
    pub kind: &'static str,
    pub commit: Option<String>,
    /// YYYY-MM-DD of that commit.
    pub date: Option<String>,
    pub age_days: Option<i64>,
    pub advisories: usize,
}

impl Provenance {
    /// `commit bf5c0d2 of 2026-08-21 (snapshot, 93 days old)`.
    pub fn describe(&self) -> String {
        let commit = self
            .commit
            .as_deref()
            .map_or("unknown commit".to_owned(), |c| {
                format!("commit {}", &c[..c.len().min(12)])
            });
        let date = self.date.as_deref().unwrap_or("an unknown date");
        let age = self
            .age_days
            .map_or(String::new(), |d| format!(", {d} days old"));
        format!("{commit} of {date} ({}{age})", self.kind)
    }
}

/// Reads commit and date from a git checkout's HEAD or a snapshot's SNAPSHOT file.
pub fn provenance(path: &Path, advisories: usize) -> Provenance {
    let (kind, commit, date) = if path.join(".git").exists() {
        let head = git(path, &["log", "-1", "--format=%H %cs"]).ok();
        let mut words = head.as_deref().unwrap_or("").split_whitespace();
        let commit = words.next().map(str::to_owned);
        ("git", commit, words.next().map(str::to_owned))
    } else if let Ok(text) = std::fs::read_to_string(path.join("SNAPSHOT")) {
        let (commit, date) = parse_snapshot(&text);
        ("snapshot", commit, date)
    } else {
        ("folder", None, None)
    };
    let age_days = date.as_deref().and_then(|d| {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .map(|d| (chrono::Utc::now().date_naive() - d).num_days())
    });
    Provenance {
        path: path.display().to_string(),
        kind,
        commit,
        date,
        age_days,
        advisories,
    }
}

/// `snapshot of github.com/rustsec/advisory-db at commit <sha> (<YYYY-MM-DD>), ...`
fn parse_snapshot(text: &str) -> (Option<String>, Option<String>) {
    let commit = text
        .split_whitespace()
        .skip_while(|w| *w != "commit")
        .nth(1)
        .filter(|w| w.len() >= 7 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned);
    let date = text.split('(').skip(1).find_map(|rest| {
        let candidate = rest.get(..10)?;
        chrono::NaiveDate::parse_from_str(candidate, "%Y-%m-%d")
            .ok()
            .map(|_| candidate.to_owned())
    });
    (commit, date)
}

/// `scan --update-db`: clones the database into `path` when it is missing,
/// fast-forwards it to the remote's newest commit when it is a git checkout.
/// A snapshot folder is refused: updating would have to replace it.
pub fn update(path: &Path) -> Result<()> {
    let url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let timeout = timeout()?;
    if which::which("git").is_err() {
        bail!("--update-db needs git: install it (`apt-get install git`), or pass --advisory-db PATH to a copy of {DEFAULT_URL}");
    }
    if path.join(".git").exists() {
        run_bounded(
            path,
            &["fetch", "--depth", "1", &url, "HEAD"],
            &url,
            timeout,
        )?;
        git(path, &["reset", "--hard", "--quiet", "FETCH_HEAD"])
            .with_context(|| format!("{}: moving to the fetched commit", path.display()))?;
        return Ok(());
    }
    if path.exists() && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "--update-db: {} exists but is not a git checkout (a snapshot?); updating would replace it. Remove it, or pass --advisory-db to an empty or missing folder",
            path.display()
        );
    }
    // Clone beside the final place and rename: an interrupted clone never
    // looks like a database.
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating {} for the advisory database", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".advisory-db-clone")
        .tempdir_in(parent)
        .with_context(|| format!("creating a clone folder in {}", parent.display()))?;
    let into = staging.path().join("db");
    run_bounded(
        parent,
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            &url,
            &into.to_string_lossy(),
        ],
        &url,
        timeout,
    )?;
    if path.exists() {
        std::fs::remove_dir(path)
            .with_context(|| format!("removing the empty folder {}", path.display()))?;
    }
    std::fs::rename(&into, path).with_context(|| {
        format!(
            "moving the fresh clone from {} to {}",
            into.display(),
            path.display()
        )
    })
}

fn timeout() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(Duration::from_secs(60)),
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .with_context(|| format!("{TIMEOUT_ENV}={v}: expected a whole number of seconds")),
    }
}

/// Runs git and stops it at `timeout`; the error says the network may not reach the URL.
fn run_bounded(dir: &Path, args: &[&str], url: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let handle = duct::cmd("git", args)
        .dir(dir)
        // Never wait on a password prompt; give up on a stalled transfer.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
        .env("GIT_HTTP_LOW_SPEED_TIME", timeout.as_secs().to_string())
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .context("starting git to fetch the advisory database")?;
    let fix = format!("the network may not reach {url}: copy the database from a machine that can (it is a plain folder) and pass --advisory-db PATH, or set {URL_ENV} to a mirror");
    let Some(output) = handle.wait_timeout(timeout)? else {
        handle.kill().ok();
        bail!(
            "fetching the advisory database: no answer within {}s; {fix}",
            timeout.as_secs()
        );
    };
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        bail!(
            "fetching the advisory database failed after {:.1}s (`git {}`: {}); {fix}",
            started.elapsed().as_secs_f64(),
            args.join(" "),
            said.trim()
        );
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = duct::cmd("git", args)
        .dir(dir)
        .stderr_capture()
        .stdout_capture()
        .run()
        .with_context(|| format!("{}: git {}", dir.display(), args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_file_names_commit_and_date() {
        let (commit, date) = parse_snapshot("snapshot of github.com/rustsec/advisory-db at commit bf5c0d245a92671908518d7e765914d437954ed6 (2026-08-21), CC0-1.0; see its LICENSE.txt\n");
        assert_eq!(
            commit.as_deref(),
            Some("bf5c0d245a92671908518d7e765914d437954ed6")
        );
        assert_eq!(date.as_deref(), Some("2026-08-21"));
        assert_eq!(parse_snapshot("something else"), (None, None));
    }
}
