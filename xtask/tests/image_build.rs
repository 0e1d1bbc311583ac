//! The engine and the image pipeline on a real engine: the image built from
//! this tree runs, answers `/health`, is small, non-root and labelled.
mod support;

use std::{collections::BTreeSet, str::FromStr, time::Duration};

use support::Container;
use xtask::{image, workspace};

#[tokio::test]
async fn built_image_runs_answers_health_and_meets_the_image_rules() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;

    let revision = image::revision::current().unwrap();
    assert_eq!(built.tags[0], format!("xtask-test-app:{}", revision.tag()));
    assert_eq!(
        built.tags[1],
        format!("xtask-test-app:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        built.size_bytes < 10_000_000,
        "image is {} bytes, over 10 MB",
        built.size_bytes
    );
    assert_eq!(
        built.labels["org.opencontainers.image.revision"],
        revision.full()
    );
    for label in ["version", "created", "source", "title"] {
        assert!(
            built
                .labels
                .contains_key(&format!("org.opencontainers.image.{label}")),
            "missing OCI label {label}"
        );
    }

    let inspect = docker.inspect_image(&built.tags[0]).await.unwrap();
    let config = inspect.config.unwrap();
    assert_eq!(
        config.user.as_deref(),
        Some("65532:65532"),
        "runs as non-root"
    );
    let healthcheck = config.healthcheck.and_then(|h| h.test).unwrap();
    assert_eq!(
        healthcheck,
        ["CMD", "/app", "healthcheck", "--path", "/ready"]
    );

    let container = Container::run(&docker, &built.tags[0], &[]).await;
    let health = container.wait_for("/health", Duration::from_secs(20)).await;
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );
    let version: serde_json::Value = reqwest::get(container.url("/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        version["revision"],
        revision.full(),
        "the binary knows its commit"
    );
}

#[tokio::test]
async fn the_image_probes_itself_with_no_shell() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let container = Container::run(&docker, &built.tags[0], &[]).await;
    container.wait_for("/ready", Duration::from_secs(20)).await;
    // The HEALTHCHECK runs `/app healthcheck` inside the container; wait for the engine's verdict.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = docker
            .inspect_container(&container.id, None)
            .await
            .unwrap()
            .state
            .unwrap();
        let health = state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .unwrap_or_default();
        if health == "healthy" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "container health is {health:?} after 30s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn bad_tags_are_refused_before_any_work() {
    let out = support::xtask(&["build", "--tag", "latest"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tag latest"));
    let out = support::xtask(&["build", "--tag", "bad/tag"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tag bad/tag"));
}

/// The CycloneDX 1.5 schema and the two it references, under the URIs its `$ref`s resolve to.
fn cyclonedx_validator() -> jsonschema::Validator {
    let load = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    let schema = load(include_str!("fixtures/bom-1.5.SNAPSHOT.schema.json"));
    let resource = |text: &str| jsonschema::Resource::from_contents(load(text)).unwrap();
    jsonschema::options()
        .with_resource(
            "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json",
            resource(include_str!("fixtures/spdx.SNAPSHOT.schema.json")),
        )
        .with_resource(
            "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json",
            resource(include_str!("fixtures/jsf-0.82.SNAPSHOT.schema.json")),
        )
        .build(&schema)
        .unwrap()
}

fn lock_packages(text: &str) -> BTreeSet<String> {
    let lockfile = rustsec::Lockfile::from_str(text).unwrap();
    lockfile
        .packages
        .iter()
        .map(|p| format!("{}@{}", p.name.as_str(), p.version))
        .collect()
}

#[tokio::test]
async fn the_image_carries_a_valid_sbom_of_exactly_its_lockfile_and_binary() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let contents = xtask::scan::layers::read(&docker, &built.tags[0])
        .await
        .unwrap();
    let sbom_text = contents
        .files
        .iter()
        .find(|f| f.path == image::context::SBOM_IN_IMAGE)
        .and_then(|f| f.text.clone())
        .expect("the image carries its SBOM");
    assert_eq!(
        built.labels[image::context::SBOM_DIGEST_LABEL],
        image::sbom::sha256_hex(sbom_text.as_bytes()),
        "the label names the SBOM the image carries"
    );
    let sbom: serde_json::Value = serde_json::from_str(&sbom_text).unwrap();

    let validator = cyclonedx_validator();
    let errors: Vec<String> = validator
        .iter_errors(&sbom)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "SBOM does not validate: {errors:#?}");
    let mut broken = sbom.clone();
    broken["components"][0]["type"] = "not-a-type".into();
    assert!(
        !validator.is_valid(&broken),
        "the validator must reject a wrong component type, or it checks nothing"
    );

    // Same packages as the lockfile the image carries (which scan checks).
    let lock = lock_packages(contents.lockfile.as_deref().unwrap());
    let root = &sbom["metadata"]["component"];
    let mut listed: BTreeSet<String> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}@{}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect();
    listed.insert(format!(
        "{}@{}",
        root["name"].as_str().unwrap(),
        root["version"].as_str().unwrap()
    ));
    assert_eq!(listed, lock);
    assert!(
        lock.len() > 50 && lock.iter().any(|p| p.starts_with("tokio@")),
        "{lock:?}"
    );
    assert!(
        !lock
            .iter()
            .any(|p| p.starts_with("bollard@") || p.starts_with("xtask@")),
        "xtask's packages are not in the app binary, so not in the image's lockfile"
    );
    let binary = std::fs::read(image::binary::path(&workspace::target_dir())).unwrap();
    assert_eq!(
        root["hashes"][0]["content"],
        image::sbom::sha256_hex(&binary)
    );

    // An independent implementation reads it the same way.
    let venv = xtask::venv::SBOM_CHECK.ensure().unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &sbom_text).unwrap();
    let out = std::process::Command::new(venv.join("bin/python"))
        .arg(workspace::root().join("xtask/tests/sbom_check.py"))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cyclonedx-python-lib rejects the SBOM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut python: BTreeSet<String> = read["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    python.insert(read["root"].as_str().unwrap().to_owned());
    assert_eq!(python, lock);
    assert_eq!(read["root_sha256"][0], root["hashes"][0]["content"]);
}

#[test]
fn build_sbom_writes_the_sbom_the_image_carries() {
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("app.cdx.json");
    let out = support::xtask(&[
        "build",
        "--repo",
        // Its own repository: retagging the shared test image would race the other tests.
        "xtask-test-sbom",
        "--sbom",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = std::fs::read(&file).unwrap();
    assert_eq!(
        report["image"]["labels"][image::context::SBOM_DIGEST_LABEL],
        image::sbom::sha256_hex(&written)
    );
}
