//! scan on real images: a synthetic RustSec advisory against a crate the
//! image really carries, policy violations in images built for the test,
//! and SARIF output checked against the SARIF 2.1.0 schema.
mod support;

use std::path::Path;

use serde_json::Value;
use xtask::{image, scan};

/// A RustSec database with one advisory (or none) against a crate in our lockfile.
fn advisory_db(dir: &Path, with_advisory: bool) {
    let crate_dir = dir.join("crates").join("tokio");
    std::fs::create_dir_all(&crate_dir).unwrap();
    if with_advisory {
        let advisory = r#"```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "tokio"
date = "2099-01-01"
cvss = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"

[versions]
patched = [">= 999.0.0"]
```

# Synthetic advisory made by the test suite
"#;
        std::fs::write(crate_dir.join("RUSTSEC-2099-0001.md"), advisory).unwrap();
    }
}

fn scan_cli(image: &str, db: &Path, fail_on: &str, extra: &[&str]) -> (bool, Value, String) {
    let mut args = vec![
        "scan",
        image,
        "--advisory-db",
        db.to_str().unwrap(),
        "--fail-on",
        fail_on,
        "--json",
    ];
    args.extend(extra);
    let out = support::xtask(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("scan --json printed no JSON ({e}); stderr: {stderr}"));
    (out.status.success(), report, stderr)
}

fn ids(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_known_advisory_against_the_images_lockfile_fails_at_its_severity() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let db = tempfile::tempdir().unwrap();
    advisory_db(db.path(), true);

    let (ok, report, _) = scan_cli(&built.tags[0], db.path(), "high", &[]);
    assert!(!ok, "a high advisory must fail --fail-on high: {report}");
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "RUSTSEC-2099-0001")
        .expect("the advisory is reported");
    assert_eq!(finding["severity"], "high");
    assert!(
        finding["location"]
            .as_str()
            .unwrap()
            .starts_with("tokio@1."),
        "{finding}"
    );

    let (ok, _, _) = scan_cli(&built.tags[0], db.path(), "critical", &[]);
    assert!(ok, "a high finding passes --fail-on critical");

    let empty = tempfile::tempdir().unwrap();
    advisory_db(empty.path(), false);
    let (ok, report, stderr) = scan_cli(&built.tags[0], empty.path(), "low", &[]);
    assert!(
        ok,
        "the app image is clean under a database without the advisory: {report} {stderr}"
    );
    assert!(ids(&report).is_empty(), "{report}");
}

#[tokio::test]
async fn a_missing_advisory_database_is_reported_not_passed() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let nowhere = tempfile::tempdir().unwrap();
    // An explicit path that is not a database is an error naming the flag.
    let out = support::xtask(&[
        "scan",
        &built.tags[0],
        "--advisory-db",
        nowhere.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--advisory-db"));
    // No database at the default location is a finding of its own.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["scan", &built.tags[0], "--json", "--fail-on", "medium"])
        .env("CARGO_HOME", nowhere.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&report), ["rustsec/no-database"]);
    assert!(
        !out.status.success(),
        "at --fail-on medium, not checking is a failure"
    );
}

/// Builds a variant of the app image with extra Dockerfile lines (no pull: FROM our own image).
async fn variant(docker: &bollard::Docker, base: &str, name: &str, lines: &str) -> String {
    let reference = format!("xtask-test-variant:{name}");
    let tar = image::context::tar(&format!("FROM {base}\n{lines}\n"), &[]).unwrap();
    image::build_context(docker, tar, std::slice::from_ref(&reference), true)
        .await
        .unwrap();
    reference
}

#[tokio::test]
async fn secrets_and_root_are_flagged_without_printing_the_secret() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let db = tempfile::tempdir().unwrap();
    advisory_db(db.path(), false);

    let secret = variant(
        &docker,
        &built.tags[0],
        "secret-env",
        "ENV DB_PASSWORD=hunter2-do-not-leak",
    )
    .await;
    let out = support::xtask(&[
        "scan",
        &secret,
        "--advisory-db",
        db.path().to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("policy/secret-in-env") && text.contains("DB_PASSWORD"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2-do-not-leak"),
        "the secret value was printed: {text}"
    );

    let root = variant(&docker, &built.tags[0], "root", "USER root").await;
    let options = scan::ScanOptions {
        advisory_db: Some(db.path().into()),
        max_size_bytes: 25_000_000,
    };
    let report = scan::scan(&docker, &root, &options).await.unwrap();
    let found: Vec<&str> = report.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(found, ["policy/runs-as-root"]);
    assert!(report.fails(scan::Severity::High));
}

#[tokio::test]
async fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let db = tempfile::tempdir().unwrap();
    advisory_db(db.path(), true);
    let root = variant(&docker, &built.tags[0], "root-sarif", "USER root").await;
    let out_dir = tempfile::tempdir().unwrap();
    let sarif_path = out_dir.path().join("scan.sarif");
    let (ok, _, _) = scan_cli(
        &root,
        db.path(),
        "high",
        &["--sarif", sarif_path.to_str().unwrap()],
    );
    assert!(!ok);

    let sarif: Value =
        serde_json::from_str(&std::fs::read_to_string(&sarif_path).unwrap()).unwrap();
    let schema: Value =
        serde_json::from_str(include_str!("fixtures/sarif-schema-2.1.0.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "SARIF does not validate: {errors:#?}");
    let mut broken = sarif.clone();
    broken["version"] = "2.0.0".into();
    assert!(
        !validator.is_valid(&broken),
        "the validator must reject a wrong version, or it checks nothing"
    );
    assert_eq!(sarif["version"], "2.1.0");
    let rule_ids: Vec<&str> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert!(
        rule_ids.contains(&"RUSTSEC-2099-0001") && rule_ids.contains(&"policy/runs-as-root"),
        "{rule_ids:?}"
    );
}
