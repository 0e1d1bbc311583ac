//! A network partition (issue #14, docs/RELIABILITY.md): lab host h2's
//! link to the bridge set down in the middle of a fleet deploy over SSH,
//! then up again, on the fault lab (see `faults.rs`). The hosts are reached
//! as a CI runner reaches them (XTASK_SSH_KEY, the tool's own ssh config),
//! so what notices the dead link is the tool's SSH keep-alive, not the lab's.
use std::time::Instant;

use xtask::lab;

use super::{
    env::LabEnv,
    faults::{containers_of, on_fault_lab, outcome, until_new_instance},
    fleet::prepared,
};

/// `ip link set <veth> down|up`: the bridge side, in the machine's namespace.
fn link(host: &lab::Host, state: &str) {
    let out = std::process::Command::new("ip")
        .args(["link", "set", &host.veth, state])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip link set {} {state}: {}",
        host.veth,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The link back up when dropped, also when the test fails.
struct Partition<'a>(&'a lab::Host);

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        link(self.0, "up");
    }
}

/// Expected, with h2 cut off (its veth down) once h1 runs the new release's
/// instances of a rolling deploy, under keep-alive load on both URLs, and
/// back once that deploy has ended:
/// - the deploy does not hang: it exits 1 within the tool's SSH keep-alive
///   (ServerAliveInterval 10 s, 3 misses), naming host h2's address;
/// - h1 is undone to r1 and serves throughout: **0 failed requests** on h1's
///   URL (h2's URL cannot be reached while cut off: counted, not asserted);
/// - the release is recorded **failed** on h1, which holds the lock and the
///   history: the lock is free, nothing in progress;
/// - with the link up, the next deploy succeeds with no manual step, both
///   hosts run only the new release, **0 failed requests** on both URLs
///   during it, and the history shows the failed release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_cut_off_mid_deploy_is_named_the_other_is_undone_and_the_next_deploy_recovers() {
    on_fault_lab(|lab, (v1, v2)| async move {
        let hosts: Vec<String> = lab.hosts.iter().map(|h| h.ssh_docker_host()).collect();
        let env = LabEnv::fleet(lab, "cut", "rolling", &hosts).reached_as_runner();
        prepared(&env);
        let (ok, first, stderr) = env.json(&["deploy", "--image", &v1]);
        assert!(ok, "{first}\n{stderr}");
        let r1 = first["release"]["id"].as_str().unwrap().to_owned();
        let mut loads = env.load().await;
        let (h1_load, h2_load) = (loads.remove(0), loads.remove(0));

        let cut = &lab.hosts[1];
        let child = env.spawn(&["deploy", "--image", &v2, "--json"]);
        until_new_instance(&env, &lab.hosts[0], &r1).await;
        let partition = Partition(cut);
        link(cut, "down");
        let down_at = Instant::now();
        let out = tokio::task::block_in_place(|| child.wait_with_output().unwrap());
        let failed_after = down_at.elapsed();
        let (report, text) = outcome(&out);
        assert!(!out.status.success(), "the deploy fails: {text}");
        assert!(
            text.contains(&format!("host {}", cut.address)),
            "names the cut-off host: {text}"
        );
        assert_eq!(report["release"]["outcome"], "failed", "{text}");
        eprintln!("FIGURE partition, reason: {}", report["release"]["reason"]);
        let r2 = report["release"]["id"].as_str().unwrap().to_owned();
        let h1 = containers_of(&lab.hosts[0], &env.scope()).await;
        assert!(!h1.contains_key(&r2), "h1 keeps nothing of {r2}: {h1:?}");
        assert_eq!(env.running_on(&lab.hosts[0]).await.get(&r1), Some(&2));
        let (_, status, _) = env.json(&["status"]);
        assert!(status["lock"].is_null(), "lock free: {status}");
        let h1_report = h1_load.stop().await;
        let h2_report = h2_load.stop().await;

        drop(partition);
        let up_at = Instant::now();
        let loads = env.load().await;
        let reachable = up_at.elapsed();
        let (ok, again, stderr) = env.json(&["deploy", "--image", &v2]);
        assert!(ok, "the deploy once the link is up: {again}\n{stderr}");
        let recovered = up_at.elapsed();
        let r3 = again["release"]["id"].as_str().unwrap().to_owned();
        env.assert_only(&r3, "after the deploy with the link up")
            .await;
        eprintln!("FIGURE partition, h1 during: {h1_report:?}; h2 during (cut off): ok {} failed {}", h2_report.ok, h2_report.failed);
        assert!(h1_report.ok > 100, "{h1_report:?}");
        assert_eq!(h1_report.failed, 0, "h1 serves throughout: {h1_report:?}");
        for (url, load) in env.urls().iter().zip(loads) {
            let report = load.stop().await;
            eprintln!("FIGURE partition, next deploy, load on {url}: {report:?}");
            assert_eq!(report.failed, 0, "{url}: {report:?}");
        }
        let (_, history, _) = env.json(&["history"]);
        let failed: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "failed")
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(failed, [r2.as_str()], "{history}");
        eprintln!(
            "FIGURE partition: link down to deploy exit 1 {failed_after:.1?}; link up to h2 answering {reachable:.1?}; link up to next deploy done {recovered:.1?}"
        );
        env.destroy().await;
    })
    .await;
}
