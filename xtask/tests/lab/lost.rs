//! A host lost in the middle of a deploy, on a 2-host lab of its own (its
//! engine is killed, which no later test could use): the deploy fails
//! naming that host, the other host is undone to the active release, and
//! the runbook's way out (drop the host from `target.hosts`) deploys again
//! from the history the first host keeps.
use std::time::Duration;

use xtask::{lab, workspace};

use super::{
    env::{push_images, LabEnv},
    fleet::prepared,
};

const PREFIX: &str = "xltl";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_lost_mid_deploy_is_named_the_other_is_undone_and_dropping_it_deploys_again() {
    let dir = workspace::target_dir().join("lab-test-lost");
    let mut options = lab::Options::new(2, false);
    options.prefix = PREFIX.into();
    options.dir = dir.clone();
    lab::down(PREFIX, &dir)
        .await
        .expect("removing an earlier lost-host lab");
    let (made, _) = lab::up(&options).await.expect("lab up --hosts 2");
    let lab: &'static lab::Lab = Box::leak(Box::new(made));
    let outcome = std::panic::AssertUnwindSafe(scenario(lab));
    let result = futures_util::FutureExt::catch_unwind(outcome).await;
    lab::down(PREFIX, &dir)
        .await
        .expect("taking the lost-host lab down");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(lab: &'static lab::Lab) {
    let (v1, v2) = push_images(lab).await;
    let hosts: Vec<String> = lab.hosts.iter().map(|h| h.ssh_docker_host()).collect();
    let env = LabEnv::fleet(lab, "lost", "rolling", &hosts);
    prepared(&env);
    let (ok, first, stderr) = env.json(&["deploy", "--image", &v1]);
    assert!(ok, "{first}\n{stderr}");
    let r1 = first["release"]["id"].as_str().unwrap().to_owned();

    // h2's engine dies once h1 runs the new release's instances.
    let child = env.spawn(&["deploy", "--image", &v2, "--json"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !env.running_on(&lab.hosts[0]).await.keys().any(|r| *r != r1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no new instance on h1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost = &lab.hosts[1];
    let pid = lost.dockerd.as_ref().expect("h2's dockerd").pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| child.wait_with_output().unwrap());
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let text = format!("{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("host {}", lost.address)),
        "the report names the lost host: {text}"
    );
    let h1 = &env.running_on(&lab.hosts[0]).await;
    assert_eq!(
        h1,
        &std::collections::BTreeMap::from([(r1.clone(), 2)]),
        "h1 is back on {r1} alone: {text}"
    );

    // The runbook: h2 is gone for good, so it leaves the list.
    let text = std::fs::read_to_string(&env.path).unwrap();
    std::fs::write(&env.path, text.replace(&format!(", \"{}\"", hosts[1]), "")).unwrap();
    let (ok, again, stderr) = env.json(&["deploy", "--image", &v2]);
    assert!(ok, "the deploy without the lost host: {again}\n{stderr}");
    let history = env.json(&["history"]).1;
    let failed = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .count();
    assert_eq!(
        failed, 1,
        "the interrupted release is recorded failed: {history}"
    );
}
