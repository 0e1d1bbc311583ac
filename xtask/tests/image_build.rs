//! The engine and the image pipeline on a real engine: the image built from
//! this tree runs, answers `/health`, is small, non-root and labelled.
mod support;

use std::time::Duration;

use support::Container;
use xtask::image;

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
