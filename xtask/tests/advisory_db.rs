//! scan against the real RustSec snapshot CI uses (`../shared/advisory-db`):
//! a lockfile pinning a crate version with a real critical advisory fails,
//! the app's own image passes; and `scan --update-db` clones and updates a
//! database with git, and gives up on a silent server within its bound.
mod support;

use std::{path::PathBuf, time::Instant};

use serde_json::Value;
use xtask::{image, scan, workspace};

fn snapshot() -> PathBuf {
    let db = workspace::root().join(xtask::ci::ADVISORY_DB);
    assert!(
        scan::database::is_database(&db),
        "{}: the RustSec snapshot tests and CI scan against is missing",
        db.display()
    );
    db
}

fn scan_json(image: &str, extra: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["scan", image, "--json"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), report, stderr)
}

/// The app image with its embedded Cargo.lock replaced by `lockfile`.
async fn with_lockfile(docker: &bollard::Docker, base: &str, name: &str, lockfile: &str) -> String {
    let reference = format!("xtask-test-variant:{name}");
    let dockerfile = format!(
        "FROM {base}\nCOPY Cargo.lock /{}\n",
        image::context::LOCKFILE_IN_IMAGE
    );
    let files = [image::context::File {
        path: "Cargo.lock".into(),
        contents: lockfile.as_bytes().to_vec(),
        mode: 0o644,
    }];
    let tar = image::context::tar(&dockerfile, &files).unwrap();
    image::build_context(docker, tar, std::slice::from_ref(&reference), true)
        .await
        .unwrap();
    reference
}

#[tokio::test]
async fn a_real_critical_advisory_fails_and_the_app_image_passes() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let db = snapshot();
    let db_arg = db.to_str().unwrap();

    let (ok, report, stderr) = scan_json(
        &built.tags[0],
        &["--advisory-db", db_arg, "--fail-on", "high"],
        &[],
    );
    assert!(
        ok,
        "the app image must pass the real database: {report} {stderr}"
    );
    let worst: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .collect();
    assert!(worst.is_empty(), "{worst:?}");
    // The snapshot's SNAPSHOT file (or a checkout's HEAD, on GitHub's runners) is what the report names.
    let used = &report["advisory_db"];
    let expected = scan::database::provenance(&db, 0);
    assert_eq!(used["kind"], expected.kind);
    assert_eq!(used["commit"].as_str(), expected.commit.as_deref());
    assert_eq!(used["date"].as_str(), expected.date.as_deref());
    assert!(
        used["commit"].as_str().is_some_and(|c| c.len() == 40),
        "{used}"
    );
    assert!(used["advisories"].as_u64().unwrap() > 1000, "{used}");

    // smallvec 1.6.0: RUSTSEC-2021-0003, buffer overflow in insert_many, CVSS 9.8.
    let contents = scan::layers::read(&docker, &built.tags[0]).await.unwrap();
    let lockfile = contents.lockfile.unwrap();
    let pinned = "name = \"smallvec\"\nversion = \"";
    let at = lockfile
        .find(pinned)
        .expect("the app's lockfile has smallvec: pick another crate")
        + pinned.len();
    let end = at + lockfile[at..].find('"').unwrap();
    let vulnerable = format!("{}1.6.0{}", &lockfile[..at], &lockfile[end..]);
    let image = with_lockfile(&docker, &built.tags[0], "smallvec-1.6.0", &vulnerable).await;
    let (ok, report, _) = scan_json(&image, &["--advisory-db", db_arg, "--fail-on", "high"], &[]);
    assert!(
        !ok,
        "a critical advisory must fail --fail-on high: {report}"
    );
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "RUSTSEC-2021-0003")
        .unwrap_or_else(|| panic!("RUSTSEC-2021-0003 not reported: {report}"));
    assert_eq!(finding["severity"], "critical");
    assert_eq!(finding["location"], "smallvec@1.6.0");
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A synthetic critical advisory against every version of `package` below 999.
fn advisory(dir: &std::path::Path, package: &str, id: &str) {
    let text = format!("```toml\n[advisory]\nid = \"{id}\"\npackage = \"{package}\"\ndate = \"2099-01-01\"\ncvss = \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\"\n\n[versions]\npatched = [\">= 999.0.0\"]\n```\n\n# Synthetic advisory made by the test suite\n");
    let folder = dir.join("crates").join(package);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(format!("{id}.md")), text).unwrap();
}

/// A git repository holding a tiny advisory database (nothing the app uses).
fn source_repo(dir: &std::path::Path) {
    advisory(dir, "not-in-the-image", "RUSTSEC-2099-0003");
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
}

#[tokio::test]
async fn update_db_clones_then_fast_forwards_and_gives_up_on_a_silent_server() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    source_repo(&source);
    let url = format!("file://{}", source.display());
    let db = work.path().join("cache/advisory-db");
    let db_arg = db.to_str().unwrap();
    let args = [
        "--advisory-db",
        db_arg,
        "--update-db",
        "--fail-on",
        "critical",
    ];
    let env = [(scan::database::URL_ENV, url.as_str())];

    let (ok, report, stderr) = scan_json(&built.tags[0], &args, &env);
    assert!(ok, "{report} {stderr}");
    assert_eq!(report["advisory_db"]["kind"], "git");
    assert_eq!(
        report["advisory_db"]["commit"],
        git(&source, &["rev-parse", "HEAD"])
    );

    // A new advisory upstream reaches the next scan.
    advisory(&source, "tokio", "RUSTSEC-2099-0002");
    git(&source, &["add", "."]);
    git(&source, &["commit", "--quiet", "-m", "second"]);
    let (ok, report, _) = scan_json(&built.tags[0], &args, &env);
    assert!(
        !ok,
        "the new critical advisory fails --fail-on critical: {report}"
    );
    assert_eq!(
        report["advisory_db"]["commit"],
        git(&source, &["rev-parse", "HEAD"])
    );

    // A server that accepts and never answers: an error naming the fix, within the bound.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/advisory-db.git", silent.local_addr().unwrap());
    let fresh = work.path().join("other/advisory-db");
    let started = Instant::now();
    let (ok, _, stderr) = scan_json(
        &built.tags[0],
        &["--advisory-db", fresh.to_str().unwrap(), "--update-db"],
        &[
            (scan::database::URL_ENV, url.as_str()),
            (scan::database::TIMEOUT_ENV, "3"),
        ],
    );
    let took = started.elapsed();
    assert!(!ok);
    assert!(
        stderr.contains("no answer within 3s") && stderr.contains("--advisory-db PATH"),
        "{stderr}"
    );
    assert!(took.as_secs() < 30, "the bound did not hold: {took:?}");
    assert!(
        !fresh.exists(),
        "a failed clone leaves no half database behind"
    );
}
