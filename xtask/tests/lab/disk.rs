//! Disk full (issue #14, docs/RELIABILITY.md): a lab host's engine whose
//! data-root fills up in the middle of a fleet deploy, and the registry's
//! storage full during a push. The disks are the fault lab's own 256 MB
//! tmpfs mounts (see `faults.rs`), filled to the last byte by a file the
//! test removes to free the space again.
use std::time::{Duration, Instant};

use super::{
    env::LabEnv,
    faults::{containers_of, on_fault_lab, outcome, until_new_instance, Filler},
    fleet::prepared,
    support,
};

/// Expected, with h2's data-root filled once h1 runs the new release's
/// instances (a rolling deploy over SSH, host by host, so h2's turn comes
/// after the disk is full), under keep-alive load on both hosts' URLs:
/// - the deploy exits 1; what it prints names host h2's address and
///   "no space left on device";
/// - r1 serves on both hosts throughout: **0 failed requests** on either URL;
/// - the release is recorded **failed** (the lock and history are on h1),
///   the lock is free, nothing is in progress;
/// - nothing is orphaned: no container of the failed release, running or
///   not, on either host; each host runs r1's 2 instances;
/// - once the space is freed, the next deploy succeeds on both hosts with
///   no manual step, and the history keeps every release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_engine_disk_mid_deploy_fails_it_naming_the_host_and_the_next_deploy_succeeds() {
    on_fault_lab(|lab, (v1, v2)| async move {
        let hosts: Vec<String> = lab.hosts.iter().map(|h| h.ssh_docker_host()).collect();
        let env = LabEnv::fleet(lab, "disk", "rolling", &hosts);
        prepared(&env);
        let (ok, first, stderr) = env.json(&["deploy", "--image", &v1]);
        assert!(ok, "{first}\n{stderr}");
        let r1 = first["release"]["id"].as_str().unwrap().to_owned();
        let loads = env.load().await;

        let full = &lab.hosts[1];
        let child = env.spawn(&["deploy", "--image", &v2, "--json"]);
        until_new_instance(&env, &lab.hosts[0], &r1).await;
        let filled = Instant::now();
        let filler = Filler::fill(&full.dir.join("data"));
        let out = tokio::task::block_in_place(|| child.wait_with_output().unwrap());
        let failed_after = filled.elapsed();
        let (report, text) = outcome(&out);
        assert!(!out.status.success(), "the deploy fails: {text}");
        assert!(
            text.contains(&format!("host {}", full.address))
                && text.contains("no space left on device"),
            "names the host and the full disk: {text}"
        );
        assert_eq!(report["release"]["outcome"], "failed", "{text}");
        eprintln!("FIGURE disk full mid-deploy, reason: {}", report["release"]["reason"]);
        let r2 = report["release"]["id"].as_str().unwrap().to_owned();
        for host in &lab.hosts {
            let seen = containers_of(host, &env.scope()).await;
            assert!(!seen.contains_key(&r2), "{}: {r2} left: {seen:?}", host.name);
            assert_eq!(
                seen.get(&r1).map(Vec::as_slice),
                Some(&["running".to_owned(), "running".to_owned()][..]),
                "{}: {seen:?}",
                host.name
            );
        }
        let (_, status, _) = env.json(&["status"]);
        assert!(status["lock"].is_null(), "lock free: {status}");

        let freed = Instant::now();
        filler.free();
        let (ok, again, stderr) = env.json(&["deploy", "--image", &v2]);
        assert!(ok, "the deploy once space is freed: {again}\n{stderr}");
        let recovered = freed.elapsed();
        let r3 = again["release"]["id"].as_str().unwrap().to_owned();
        env.assert_only(&r3, "after the deploy with space freed")
            .await;
        for (url, load) in env.urls().iter().zip(loads) {
            let report = load.stop().await;
            eprintln!("FIGURE disk full mid-deploy, load on {url}: {report:?}");
            assert!(report.ok > 100, "{url}: {report:?}");
            assert_eq!(report.failed, 0, "{url}: {report:?}");
        }
        let (_, history, _) = env.json(&["history"]);
        let outcomes: Vec<(String, String)> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().into(), r["outcome"].as_str().unwrap().into()))
            .collect();
        assert!(outcomes.contains(&(r2.clone(), "failed".into())), "{outcomes:?}");
        assert!(outcomes.contains(&(r3, "active".into())), "{outcomes:?}");
        eprintln!(
            "FIGURE disk full mid-deploy: filled to deploy exit 1 {failed_after:.1?}; freed to next deploy done {recovered:.1?}"
        );
        env.destroy().await;
    })
    .await;
}

/// Expected, with the lab registry's storage full, `cargo xtask push` of an
/// image with a layer the registry lacks:
/// - the push exits 1 with an error naming the image, the registry and the
///   fact that the registry could not store it (not a bare HTTP status);
/// - no half-recorded image: the registry has no manifest under that tag;
/// - once the space is freed, the same push succeeds, and the registry
///   serves the manifest under the digest the push printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_full_registry_fails_clearly_records_nothing_and_works_once_freed() {
    on_fault_lab(|lab, _| async move {
        let registry = lab.registry.as_ref().unwrap();
        let (machine, _) = support::docker().await;
        // A layer of its own, so the push has a blob to upload (4 MB, random).
        let mut layer = vec![0u8; 4 << 20];
        rand_fill(&mut layer);
        let base = support::built_image(&machine).await.tags[0].clone();
        let tag = format!("fault{}", std::process::id());
        let source = format!("xtask-test-fault:{tag}");
        let tar = xtask::image::context::tar(
            &format!("FROM {base}\nCOPY filler /filler\n"),
            &[xtask::image::context::File {
                path: "filler".into(),
                contents: layer,
                mode: 0o644,
            }],
        )
        .unwrap();
        xtask::image::build_context(&machine, tar, std::slice::from_ref(&source), true)
            .await
            .unwrap();

        let filler = Filler::fill(&lab.dir.join("registry/data"));
        let started = Instant::now();
        let out = push(lab, &source);
        let failed_after = started.elapsed();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the push fails: {text}");
        eprintln!("FIGURE push to a full registry, said: {text}");
        assert!(
            text.contains(&registry.address) && text.contains("xtask-test-fault"),
            "names the image and the registry: {text}"
        );
        assert!(
            text.contains("could not store"),
            "says the registry could not store it: {text}"
        );
        assert_eq!(manifest(lab, &tag).await, None, "no manifest under {tag}");

        let freed = Instant::now();
        filler.free();
        let out = push(lab, &source);
        let recovered = freed.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the push once space is freed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pushed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let digest = manifest(lab, &tag).await.expect("the manifest once pushed");
        assert_eq!(pushed["digest"], digest.as_str(), "{pushed}");
        eprintln!(
            "FIGURE push to a full registry: exit 1 after {failed_after:.1?}; freed to a pushed image {recovered:.1?}"
        );
        let _ = machine
            .remove_image(&source, None::<bollard::query_parameters::RemoveImageOptions>, None)
            .await;
    })
    .await;
}

fn rand_fill(buf: &mut [u8]) {
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut random, buf).unwrap();
}

/// `cargo xtask push IMAGE --registry <lab registry> --json` with its credentials.
fn push(lab: &xtask::lab::Lab, image: &str) -> std::process::Output {
    let registry = lab.registry.as_ref().unwrap();
    let c = registry.credentials().unwrap();
    tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["push", image, "--registry", &registry.address, "--json"])
            // The credentials are offered to the registry XTASK_REGISTRY names only.
            .env("XTASK_REGISTRY", &registry.address)
            .env("REGISTRY_USERNAME", &c.username)
            .env("REGISTRY_PASSWORD", &c.password)
            .output()
            .unwrap()
    })
}

/// The digest the registry serves for `xtask-test-fault:<tag>`, if any.
async fn manifest(lab: &xtask::lab::Lab, tag: &str) -> Option<String> {
    let registry = lab.registry.as_ref().unwrap();
    let c = registry.credentials().unwrap();
    let ca = std::fs::read(&registry.ca_file).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client
        .head(format!(
            "https://{}/v2/xtask-test-fault/manifests/{tag}",
            registry.address
        ))
        .basic_auth(&c.username, Some(&c.password))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => Some(
            response.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        404 => None,
        other => panic!("the registry answered {other} for the manifest"),
    }
}
