//! The engine's registry killed while `cargo xtask push` uploads to it.
use std::time::{Duration, Instant};

use xtask::{engine, image};

/// Expected: the push of an image with a 48 MB layer, its registry
/// SIGKILLed as soon as an upload has begun, exits 1 within seconds (not
/// after the engine's five retries over about 50 s) with an error naming
/// the registry and saying it stopped answering mid-push; nothing is
/// tagged there. `cargo xtask engine start` then starts the registry alone
/// again (same address, credentials and storage; the engine is not
/// restarted), and the same push run again succeeds with the digest the
/// registry itself reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_mid_push_fails_clearly_and_a_retry_after_restart_succeeds() {
    let _serial = crate::support::SERIAL.lock().await;
    let (docker, state) = crate::support::docker().await;
    let state = state.expect("the registry of `cargo xtask engine start`");
    let base = crate::support::built_image(&docker).await.tags[0].clone();
    let mut blob = vec![0u8; 48 << 20];
    getrandom::fill(&mut blob).unwrap();
    let tag = format!(
        "{:x}",
        blob[0] as u32 * 65536 + blob[1] as u32 * 256 + blob[2] as u32
    );
    let reference = format!("xtask-test-big:{tag}");
    let tar = image::context::tar(
        &format!("FROM {base}\nCOPY blob /blob\n"),
        &[image::context::File {
            path: "blob".into(),
            contents: blob,
            mode: 0o644,
        }],
    )
    .unwrap();
    image::build_context(&docker, tar, std::slice::from_ref(&reference), true)
        .await
        .unwrap();

    let address = state.registry.address.clone();
    let uploads = engine::engine_dir()
        .join("registry/data/docker/registry/v2/repositories/xtask-test-big/_uploads");
    // Each upload is a folder named by its uuid; aborted ones stay behind.
    let entries = |dir: &std::path::Path| -> std::collections::BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    };
    let before = entries(&uploads);
    let push = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["push", &reference, "--registry", &address, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while entries(&uploads).is_subset(&before) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(state.registry.process.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| push.wait_with_output()).unwrap();
    let failed_after = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&address) && stderr.contains("stopped answering mid-push"),
        "{stderr}"
    );

    let restarting = Instant::now();
    let out = crate::support::xtask(&["engine", "start"]);
    let restart_took = restarting.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = engine::load_state().unwrap().unwrap();
    assert_eq!(after.registry.address, address, "same address");
    assert_ne!(after.registry.process.pid, state.registry.process.pid);
    assert_eq!(
        after.dockerd.as_ref().map(|d| d.pid),
        state.dockerd.as_ref().map(|d| d.pid),
        "the engine itself was not restarted"
    );

    let retried = Instant::now();
    let out = crate::support::xtask(&["push", &reference, "--registry", &address, "--json"]);
    let retry_took = retried.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let credentials = after.registry_credentials().unwrap();
    let manifest = reqwest::Client::new()
        .head(format!(
            "http://{address}/v2/xtask-test-big/manifests/{tag}"
        ))
        .basic_auth(&credentials.username, Some(&credentials.password))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        pushed["digest"].as_str(),
        manifest.headers()["docker-content-digest"].to_str().ok()
    );
    for r in [reference.clone(), format!("{address}/xtask-test-big:{tag}")] {
        let _ = docker
            .remove_image(
                &r,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }

    let t = "registry_killed_mid_push";
    crate::figure(
        t,
        "kill to push exit 1",
        format!("{:.2}s", failed_after.as_secs_f64()),
    );
    crate::figure(
        t,
        "engine start (registry alone)",
        format!("{:.2}s", restart_took.as_secs_f64()),
    );
    crate::figure(
        t,
        "retried push (48 MB layer)",
        format!("{:.2}s", retry_took.as_secs_f64()),
    );
}
