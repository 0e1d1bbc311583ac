//! The Docker target over the 3 lab hosts, reached over SSH as from any
//! runner (the lab's ssh wrapper on PATH, pinned host keys): images pulled
//! by each host from the lab registry with its credentials, one balancer
//! per host, keep-alive load on every host's public URL. What runs on each
//! host is checked through that host's own engine socket, not through the
//! tool under test.
use std::{collections::BTreeMap, path::PathBuf, process::Output, time::Duration};

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use tokio::sync::OnceCell;
use xtask::{engine, lab::Lab, load::Load};

use super::{shared_lab, support};

/// `<lab registry>/xtask-test-app:v1` and `:v2`, pushed once.
static IMAGES: OnceCell<(String, String)> = OnceCell::const_new();

async fn pushed_images(lab: &Lab) -> (String, String) {
    IMAGES
        .get_or_init(|| async {
            let (machine, _) = support::docker().await;
            let registry = lab.registry.as_ref().expect("the lab registry");
            let c = registry.credentials().unwrap();
            let auth =
                xtask::registry::Credentials::new(&c.username, &c.password, "the lab registry");
            let v1 = support::built_image(&machine).await.tags[0].clone();
            let v2 = support::second_image(&machine).await;
            let mut pushed = Vec::new();
            for (source, tag) in [(v1, "v1"), (v2, "v2")] {
                let target = format!("{}/xtask-test-app:{tag}", registry.address);
                machine
                    .tag_image(
                        &source,
                        Some(
                            bollard::query_parameters::TagImageOptionsBuilder::default()
                                .repo(&format!("{}/xtask-test-app", registry.address))
                                .tag(tag)
                                .build(),
                        ),
                    )
                    .await
                    .unwrap();
                xtask::registry::push(&machine, &target, &registry.address, Some(&auth), true)
                    .await
                    .expect("pushing to the lab registry");
                pushed.push(target);
            }
            (pushed[0].clone(), pushed[1].clone())
        })
        .await
        .clone()
}

/// A fleet environment over `hosts` (ssh:// addresses), in its own folder.
struct Fleet {
    lab: &'static Lab,
    name: String,
    path: PathBuf,
    https_port: u16,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn new(lab: &'static Lab, label: &str, strategy: &str, hosts: &[String]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("f{}-{label}", std::process::id() % 10_000);
        let registry = &lab.registry.as_ref().unwrap().address;
        let hosts = hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"[target]
kind = "docker"
hosts = [{hosts}]
[image]
repo = "{registry}/xtask-test-app"
[deploy]
replicas = 2
strategy = "{strategy}"
surge = 2
prune = false
lock_ttl_seconds = 600
[app.env]
LOG_FORMAT = "json"
[health]
path = "/ready"
interval_ms = 100
timeout_ms = 1000
success_threshold = 2
failure_threshold = 3
deadline_seconds = 30
drain_seconds = 1
verify_seconds = 1
[balancer]
https_port = 8443
http_port = 8080
api_rate = 1000000
"#
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        Fleet {
            lab,
            name,
            path,
            https_port: 8443,
            _dir: dir,
        }
    }

    fn scope(&self) -> String {
        format!("xtask-test-app--{}", self.name)
    }

    /// `cargo xtask ARGS -e <file>` as a runner would run it: the lab's ssh
    /// on PATH, the lab registry's credentials in the environment.
    fn xtask(&self, args: &[&str]) -> Output {
        let registry = self.lab.registry.as_ref().unwrap();
        let c = registry.credentials().unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-e", self.path.to_str().unwrap()]);
        tokio::task::block_in_place(|| {
            std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
                .args(&all)
                .env("PATH", self.lab.ssh.path_env())
                .env("XTASK_REGISTRY", &registry.address)
                .env("REGISTRY_USERNAME", &c.username)
                .env("REGISTRY_PASSWORD", &c.password)
                .env_remove("DOCKER_HOST")
                .output()
                .unwrap()
        })
    }

    fn json(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.xtask(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}); stderr:\n{stderr}"));
        (out.status.success(), json, stderr)
    }

    fn urls(&self) -> Vec<String> {
        self.lab
            .hosts
            .iter()
            .map(|h| format!("https://{}:{}", h.address, self.https_port))
            .collect()
    }

    /// A client trusting every host's balancer certificate, as this
    /// machine's deploys stored them.
    fn client(&self) -> reqwest::Client {
        let root = xtask::targets::docker::runtime_root();
        let mut builder = reqwest::Client::builder();
        for host in &self.lab.hosts {
            let cert = root
                .join(format!("{}@{}", self.scope(), host.address))
                .join("tls/cert.pem");
            let pem = std::fs::read(&cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }

    /// Keep-alive load on every host's public URL, each live before returning.
    async fn load(&self) -> Vec<Load> {
        let client = self.client();
        let loads: Vec<Load> = self
            .urls()
            .into_iter()
            .map(|u| Load::start(client.clone(), format!("{u}/version"), 2))
            .collect();
        for load in &loads {
            while load.ok_so_far() < 30 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loads
    }

    /// Release id -> instances running, per lab host, read from each host's own engine.
    async fn running(&self) -> Vec<BTreeMap<String, usize>> {
        let mut all = Vec::new();
        for host in &self.lab.hosts {
            let docker = engine::connect(&host.docker_host()).await.unwrap();
            let filters = std::collections::HashMap::from([(
                "label".to_owned(),
                vec![format!("xtask.scope={}", self.scope())],
            )]);
            let options = ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build();
            let mut by_release = BTreeMap::new();
            for c in docker.list_containers(Some(options)).await.unwrap() {
                let labels = c.labels.unwrap_or_default();
                if labels.get("xtask.role").map(String::as_str) != Some("instance") {
                    continue;
                }
                if let Some(release) = labels.get("xtask.release") {
                    *by_release.entry(release.clone()).or_insert(0) += 1;
                }
            }
            all.push(by_release);
        }
        all
    }

    async fn assert_only(&self, release: &str, what: &str) {
        let seen = self.running().await;
        for (host, running) in self.lab.hosts.iter().zip(&seen) {
            assert_eq!(
                running,
                &BTreeMap::from([(release.to_owned(), 2)]),
                "{what}: host {} runs {running:?}",
                host.name
            );
        }
    }

    /// Everything of the environment on every host, through the hosts' own sockets.
    async fn destroy(&self) {
        let env = xtask::environment::load(self.path.to_str().unwrap()).unwrap();
        for host in &self.lab.hosts {
            let placement = xtask::targets::docker::Placement {
                engine: Some(host.docker_host()),
                publish: std::net::IpAddr::from(host.address),
                public_host: host.address.to_string(),
            };
            if let Ok(target) =
                xtask::targets::docker::DockerTarget::connect_at(&env, placement).await
            {
                let _ = target.destroy().await;
            }
            let _ = std::fs::remove_dir_all(xtask::targets::docker::runtime_root().join(format!(
                "{}@{}",
                self.scope(),
                host.address
            )));
        }
    }
}

/// `hosts prepare` builds the balancer image on each host over SSH.
fn prepared(fleet: &Fleet) {
    let out = fleet.xtask(&["hosts", "prepare"]);
    assert!(
        out.status.success(),
        "hosts prepare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ssh_hosts(lab: &Lab) -> Vec<String> {
    lab.hosts.iter().map(|h| h.ssh_docker_host()).collect()
}

/// Rolling (host by host: surge = replicas) and blue-green over 3 hosts
/// under load on every host's URL with no failed request; a crashing
/// release undone on every host and recorded as failed; a deploy killed
/// with SIGKILL half-way, then the next deploy recovers by itself; a
/// rollback from a runner with none of this machine's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_over_ssh_deploys_undoes_recovers_and_rolls_back_on_every_host() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (v1, v2) = pushed_images(lab).await;
    let fleet = Fleet::new(lab, "roll", "rolling", &ssh_hosts(lab));
    prepared(&fleet);

    let (ok, first, stderr) = fleet.json(&["deploy", "--image", &v1]);
    assert!(ok, "first deploy: {first}\n{stderr}");
    let r1 = first["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r1, "after the first deploy").await;

    let loads = fleet.load().await;
    let (ok, rolled, stderr) = fleet.json(&["deploy", "--image", &v2]);
    assert!(ok, "rolling deploy: {rolled}\n{stderr}");
    let r2 = rolled["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r2, "after the rolling deploy").await;

    let (ok, green, stderr) = fleet.json(&["deploy", "--image", &v1, "--strategy", "blue-green"]);
    assert!(ok, "blue-green deploy: {green}\n{stderr}");
    let r3 = green["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r3, "after the blue-green deploy").await;

    let (ok, crashed, _) = fleet.json(&["deploy", "--image", &v2, "--env", "PORT=abc"]);
    assert!(!ok, "a crashing release fails: {crashed}");
    assert_eq!(crashed["release"]["outcome"], "failed", "{crashed}");
    fleet
        .assert_only(&r3, "after the crashing release was undone")
        .await;
    for (url, load) in fleet.urls().iter().zip(loads) {
        let report = load.stop().await;
        assert!(report.ok > 100, "{url}: {report:?}");
        assert_eq!(report.failed, 0, "{url}: {report:?}");
    }

    // SIGKILL once the new release has instances on the first host.
    let registry = lab.registry.as_ref().unwrap();
    let c = registry.credentials().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "deploy",
            "--image",
            &v2,
            "--json",
            "-e",
            fleet.path.to_str().unwrap(),
        ])
        .env("PATH", lab.ssh.path_env())
        .env("XTASK_REGISTRY", &registry.address)
        .env("REGISTRY_USERNAME", &c.username)
        .env("REGISTRY_PASSWORD", &c.password)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let running = fleet.running().await;
        if running[0].keys().any(|r| *r != r3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new instance on h1: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, recovered, stderr) = fleet.json(&["deploy", "--image", &v2]);
    assert!(ok, "the deploy after a killed one: {recovered}\n{stderr}");
    let r5 = recovered["release"]["id"].as_str().unwrap().to_owned();
    fleet.assert_only(&r5, "after the recovering deploy").await;

    // A fresh runner: none of this machine's runtime files.
    for host in &lab.hosts {
        let _ = std::fs::remove_dir_all(xtask::targets::docker::runtime_root().join(format!(
            "{}@{}",
            fleet.scope(),
            host.address
        )));
    }
    let (ok, rolled_back, stderr) = fleet.json(&["rollback"]);
    assert!(ok, "rollback from a fresh runner: {rolled_back}\n{stderr}");
    let back = rolled_back["release"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        rolled_back["release"]["restores"],
        r3.as_str(),
        "{rolled_back}"
    );
    fleet.assert_only(&back, "after the rollback").await;
    let (_, history, _) = fleet.json(&["history"]);
    let outcomes: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["id"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        format!("{r2}=superseded"),
        format!("{r5}=rolled-back"),
        format!("{back}=active"),
    ] {
        assert!(outcomes.contains(&expected), "{outcomes:?}");
    }
    assert!(
        outcomes.iter().filter(|o| o.ends_with("=failed")).count() >= 2,
        "the crash and the killed run are recorded as failed: {outcomes:?}"
    );
    fleet.destroy().await;
}

/// One host whose sshd does not answer: the deploy is refused naming it,
/// and nothing (no instance, no balancer, no record) is made on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_be_reached_stops_the_deploy_before_anything_changes() {
    let lease = shared_lab().await;
    let lab = lease.0;
    let (v1, _) = pushed_images(lab).await;
    let mut hosts = ssh_hosts(lab);
    // Nothing listens there: what a stopped sshd looks like from the runner.
    let lost = format!("{}:2222", hosts[2]);
    hosts[2] = lost.clone();
    let fleet = Fleet::new(lab, "lost", "rolling", &hosts);
    let out = fleet.xtask(&["deploy", "--image", &v1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&lost) && stderr.contains("nothing was changed on any host"),
        "{stderr}"
    );
    for host in &lab.hosts[..2] {
        let docker = engine::connect(&host.docker_host()).await.unwrap();
        let by_scope = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("xtask.scope={}", fleet.scope())],
        )]);
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&by_scope)
                    .build(),
            ))
            .await
            .unwrap();
        let volumes = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&by_scope)
                    .build(),
            ))
            .await
            .unwrap();
        assert!(containers.is_empty(), "{}: {containers:?}", host.name);
        assert!(
            volumes.volumes.unwrap_or_default().is_empty(),
            "{}: no lock or history record",
            host.name
        );
    }
}
