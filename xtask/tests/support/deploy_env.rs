//! A throwaway environment for deploy tests: its own name, ports and state,
//! all removed on drop (instances, records, the balancer container and its
//! network, runtime folder).
use std::{path::PathBuf, process::Output};

use xtask::{
    environment,
    targets::{docker::DockerTarget, swarm::SwarmTarget},
};

pub struct TestEnv {
    pub name: String,
    pub path: PathBuf,
    pub https_port: u16,
    _dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new(label: &str, strategy: &str, initial_delay_ms: u64) -> TestEnv {
        Self::with_target(label, "docker", strategy, initial_delay_ms, 0.5)
    }

    /// A Docker environment for an image that is not the app: `repo`,
    /// listening on `port` in its container, healthy on `health_path`.
    pub fn any_image(
        label: &str,
        strategy: &str,
        repo: &str,
        port: u16,
        health_path: &str,
    ) -> TestEnv {
        let env = Self::with_target(label, "docker", strategy, 0, 0.5);
        let text = std::fs::read_to_string(&env.path)
            .unwrap()
            .replace("repo = \"xtask-test-app\"", &format!("repo = \"{repo}\""))
            .replace("path = \"/ready\"", &format!("path = \"{health_path}\""))
            .replace("[app.env]", &format!("[app]\nport = {port}\n[app.env]"));
        std::fs::write(&env.path, text).unwrap();
        env
    }

    /// A swarm environment: tasks drain 2 s (the slots follow swarm's
    /// replacements within that), HEALTHCHECK every 250 ms, plus `swarm_toml`
    /// in its `[swarm]` table.
    pub fn swarm(label: &str, strategy: &str, swarm_toml: &str) -> TestEnv {
        let env = Self::with_target(label, "swarm", strategy, 0, 2.0);
        env.append(&format!(
            "[swarm]\nhealthcheck_interval_ms = 250\nmonitor_seconds = 1\n{swarm_toml}\n"
        ));
        env
    }

    fn with_target(
        label: &str,
        kind: &str,
        strategy: &str,
        initial_delay_ms: u64,
        drain_seconds: f64,
    ) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let mut suffix = [0u8; 3];
        getrandom::fill(&mut suffix).unwrap();
        let name = format!(
            "t{}-{label}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let (https_port, http_port) = (super::free_port(), super::free_port());
        let text = format!(
            r#"[target]
kind = "{kind}"
[image]
repo = "xtask-test-app"
[deploy]
replicas = 3
strategy = "{strategy}"
keep_releases = 5
# Tests share one engine: only the prune test removes images.
prune = false
lock_ttl_seconds = 600
[app.env]
LOG_FORMAT = "json"
[health]
path = "/ready"
interval_ms = 100
timeout_ms = 1000
initial_delay_ms = {initial_delay_ms}
success_threshold = 2
failure_threshold = 3
deadline_seconds = 30
drain_seconds = {drain_seconds}
verify_seconds = 1
[balancer]
https_port = {https_port}
http_port = {http_port}
api_rate = 1000000
"#
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        TestEnv {
            name,
            path,
            https_port,
            _dir: dir,
        }
    }

    /// Replaces `from` (which must be there) with `to` in the file.
    pub fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        assert!(text.contains(from), "{from} not in {}", self.path.display());
        std::fs::write(&self.path, text.replacen(from, to, 1)).unwrap();
    }

    /// Adds TOML at the end of the file (a new table).
    pub fn append(&self, toml: &str) {
        let mut text = std::fs::read_to_string(&self.path).unwrap();
        text.push_str(toml);
        std::fs::write(&self.path, text).unwrap();
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Runs `cargo xtask ARGS -e <this env>` in a fresh process. Blocks this
    /// worker only (tests run multi-threaded), so load tasks keep running.
    pub fn xtask(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-e", self.arg()]);
        tokio::task::block_in_place(|| super::xtask(&all))
    }

    /// Like `xtask`, with `--json` parsed; panics with stderr when stdout is not JSON.
    pub fn xtask_json(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.xtask(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}); stderr:\n{stderr}"));
        (out.status.success(), json, stderr)
    }

    pub async fn target(&self) -> DockerTarget {
        DockerTarget::connect(&environment::load(self.arg()).unwrap())
            .await
            .unwrap()
    }

    pub async fn swarm_target(&self) -> SwarmTarget {
        SwarmTarget::connect(&environment::load(self.arg()).unwrap())
            .await
            .unwrap()
    }

    /// The environment's network gateway and subnet (made by its first
    /// deploy): where its containers reach a service of this machine.
    pub async fn gateway(&self, docker: &bollard::Docker) -> (String, String) {
        let network = docker
            .inspect_network(
                &format!("xtask-test-app--{}-net", self.name),
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .unwrap();
        let config = &network.ipam.unwrap().config.unwrap()[0];
        (
            config.gateway.clone().unwrap(),
            config.subnet.clone().unwrap(),
        )
    }

    /// Every container of the environment (running or not), of `role`
    /// (`instance`, `hook`, ...) when given.
    pub async fn containers(
        &self,
        docker: &bollard::Docker,
        role: Option<&str>,
    ) -> Vec<bollard::models::ContainerSummary> {
        let mut labels = vec![format!("xtask.scope=xtask-test-app--{}", self.name)];
        labels.extend(role.map(|r| format!("xtask.role={r}")));
        let filters = std::collections::HashMap::from([("label".to_owned(), labels)]);
        docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
    }

    pub fn public_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// Keep-alive load on `/version` of the public URL; every worker has a
    /// live connection before anything changes.
    pub async fn load(&self, client: reqwest::Client) -> xtask::load::Load {
        let load = xtask::load::Load::start(client, format!("{}/version", self.public_url()), 4);
        while load.ok_so_far() < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        load
    }

    /// `deploy --image IMAGE --json` in a child process, to act on while it runs.
    pub fn spawn_deploy(&self, image: &str) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["deploy", "--image", image, "--json", "-e", self.arg()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// (outcome, reason) of release `id` in `history --json`.
pub fn outcome_of(history: &serde_json::Value, id: &str) -> (String, String) {
    let r = history
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {history}"));
    (
        r["outcome"].as_str().unwrap().to_owned(),
        r["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let path = self.arg().to_owned();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let Ok(env) = environment::load(&path) else {
                        return;
                    };
                    if env.file.target.kind() == environment::TargetKind::Swarm {
                        if let Ok(target) = SwarmTarget::connect(&env).await {
                            let _ = target.destroy().await;
                        }
                    } else if let Ok(target) = DockerTarget::connect(&env).await {
                        let _ = target.destroy().await;
                    }
                })
        })
        .join();
    }
}
