//! push against the real htpasswd registry the engine runs on 127.0.0.1.
mod support;

use std::time::{Duration, Instant};

use xtask::engine;

/// The registry's own word on a tag's digest, asked over the registry API.
async fn manifest_digest(
    registry: &str,
    credentials: &engine::RegistryCredentials,
    repo: &str,
    tag: &str,
) -> String {
    let response = reqwest::Client::new()
        .head(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .basic_auth(&credentials.username, Some(&credentials.password))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "manifest of {repo}:{tag}");
    response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn push_with_the_right_credentials_reports_the_registrys_digest() {
    let (docker, state) = support::docker().await;
    let state = state.expect("push tests need the registry of `cargo xtask engine start`");
    let built = support::built_image(&docker).await;
    let out = support::xtask(&[
        "push",
        &built.tags[0],
        "--registry",
        &state.registry.address,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tag = built.tags[0].rsplit(':').next().unwrap();
    assert_eq!(
        pushed["reference"],
        format!("{}/xtask-test-app:{tag}", state.registry.address)
    );
    let credentials = state.registry_credentials().unwrap();
    let digest =
        manifest_digest(&state.registry.address, &credentials, "xtask-test-app", tag).await;
    assert_eq!(pushed["digest"], digest);
}

#[tokio::test]
async fn a_wrong_password_fails_clearly_and_is_never_printed() {
    let (docker, state) = support::docker().await;
    let state = state.expect("push tests need the registry of `cargo xtask engine start`");
    let built = support::built_image(&docker).await;
    let wrong = "wrong-password-4c1d9e";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "push",
            &built.tags[0],
            "--registry",
            &state.registry.address,
        ])
        .env("REGISTRY_USERNAME", "xtask")
        .env("REGISTRY_PASSWORD", wrong)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("unauthorized"), "{text}");
    assert!(
        text.contains("REGISTRY_USERNAME/REGISTRY_PASSWORD"),
        "says where the credentials came from: {text}"
    );
    assert!(!text.contains(wrong), "the password was printed: {text}");
}

#[tokio::test]
async fn a_registry_that_is_down_fails_fast_with_a_clear_message() {
    let (docker, _) = support::docker().await;
    let built = support::built_image(&docker).await;
    let nowhere = format!("127.0.0.1:{}", support::free_port());
    let started = Instant::now();
    let out = support::xtask(&["push", &built.tags[0], "--registry", &nowhere]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("registry {nowhere} is not reachable")),
        "{stderr}"
    );
    // Generous: the point is no engine-side retry loop (which takes tens of seconds).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn half_given_credentials_name_the_missing_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["push", "anything:1", "--registry", "127.0.0.1:1"])
        .env("REGISTRY_USERNAME", "someone")
        .env_remove("REGISTRY_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("REGISTRY_PASSWORD is not"), "{stderr}");
}
