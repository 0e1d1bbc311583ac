//! An environment file over the shared lab, run as a runner would run it:
//! the lab's ssh wrapper on PATH (pinned host keys, the lab's key), the lab
//! registry's credentials in the environment, hosts named `ssh://`.
use std::{collections::BTreeMap, path::PathBuf, process::Output, time::Duration};

use bollard::query_parameters::ListContainersOptionsBuilder;
use tokio::sync::OnceCell;
use xtask::{engine, lab::Lab, load::Load};

use super::support;

/// `<lab registry>/xtask-test-app:v1` and `:v2`, pushed once.
static IMAGES: OnceCell<(String, String)> = OnceCell::const_new();

pub async fn pushed_images(lab: &Lab) -> (String, String) {
    IMAGES.get_or_init(|| push_images(lab)).await.clone()
}

/// The app image as `v1` and a second release as `v2`, pushed to `lab`'s registry.
pub async fn push_images(lab: &Lab) -> (String, String) {
    let (machine, _) = support::docker().await;
    let registry = lab.registry.as_ref().expect("the lab registry");
    let c = registry.credentials().unwrap();
    let auth = xtask::registry::Credentials::new(&c.username, &c.password, "the lab registry");
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
}

/// An environment over lab hosts, in its own folder.
pub struct LabEnv {
    pub lab: &'static Lab,
    pub name: String,
    pub path: PathBuf,
    pub https_port: u16,
    /// A swarm environment: one balancer, on the manager...
    swarm: bool,
    /// ...and one on each other node (`target.balancer_nodes`).
    node_balancers: bool,
    /// Reach the hosts as a CI runner does (see `reached_as_runner`).
    runner: bool,
    _dir: tempfile::TempDir,
}

impl LabEnv {
    /// A Docker environment over `hosts` (ssh:// addresses), 2 instances each.
    pub fn fleet(lab: &'static Lab, label: &str, strategy: &str, hosts: &[String]) -> LabEnv {
        let hosts = hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Self::with(
            lab,
            label,
            &format!("kind = \"docker\"\nhosts = [{hosts}]"),
            &format!("replicas = 2\nstrategy = \"{strategy}\"\nsurge = 2"),
            "",
        )
    }

    /// A swarm environment through the manager's sshd: `replicas` tasks,
    /// no placement constraint, the balancer on the manager.
    pub fn swarm(lab: &'static Lab, label: &str, strategy: &str, replicas: usize) -> LabEnv {
        let manager = lab.manager().expect("a swarm lab");
        let mut env = Self::with(
            lab,
            label,
            &format!("kind = \"swarm\"\nhost = \"{}\"", manager.ssh_docker_host()),
            &format!("replicas = {replicas}\nstrategy = \"{strategy}\""),
            "[swarm]\nhealthcheck_interval_ms = 250\nmonitor_seconds = 1\n",
        );
        env.swarm = true;
        env
    }

    /// `swarm`, with a balancer on every node: `target.balancer_nodes`
    /// names the workers' engines.
    pub fn swarm_balanced_on_every_node(lab: &'static Lab, label: &str, replicas: usize) -> LabEnv {
        let env = Self::swarm(lab, label, "rolling", replicas);
        let workers: Vec<String> = lab.hosts[1..]
            .iter()
            .map(|h| format!("\"{}\"", h.ssh_docker_host()))
            .collect();
        let text = std::fs::read_to_string(&env.path).unwrap().replacen(
            "[image]",
            &format!("balancer_nodes = [{}]\n[image]", workers.join(", ")),
            1,
        );
        std::fs::write(&env.path, text).unwrap();
        LabEnv {
            node_balancers: true,
            ..env
        }
    }

    fn with(lab: &'static Lab, label: &str, target: &str, deploy: &str, extra: &str) -> LabEnv {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("f{}-{label}", std::process::id() % 10_000);
        // Environments of parallel tests share the hosts: ports of their own.
        static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(8443);
        let https_port = NEXT_PORT.fetch_add(2, std::sync::atomic::Ordering::SeqCst);
        let http_port = https_port + 1;
        let registry = &lab.registry.as_ref().unwrap().address;
        let text = format!(
            r#"[target]
{target}
[image]
repo = "{registry}/xtask-test-app"
[deploy]
{deploy}
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
deadline_seconds = 60
drain_seconds = 2
verify_seconds = 1
[balancer]
https_port = {https_port}
http_port = {http_port}
api_rate = 1000000
{extra}"#
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        LabEnv {
            lab,
            name,
            path,
            https_port,
            swarm: false,
            node_balancers: false,
            runner: false,
            _dir: dir,
        }
    }

    /// The hosts reached with the key and pinned host keys in
    /// XTASK_SSH_KEY / XTASK_SSH_KNOWN_HOSTS, through the ssh config the
    /// tool writes for them (its keep-alive settings included), instead of
    /// the lab's ssh wrapper.
    pub fn reached_as_runner(mut self) -> LabEnv {
        self.runner = true;
        self
    }

    /// The lab hosts whose balancers take public traffic.
    fn fronts(&self) -> Vec<&'static xtask::lab::Host> {
        match self.swarm && !self.node_balancers {
            true => vec![self.lab.manager().unwrap()],
            false => self.lab.hosts.iter().collect(),
        }
    }

    /// This machine's folder for one front's balancer certificate.
    fn runtime_folder(&self, host: &xtask::lab::Host) -> PathBuf {
        let name = match self.swarm && !self.node_balancers {
            true => self.scope(),
            false => format!("{}@{}", self.scope(), host.address),
        };
        xtask::targets::docker::runtime_root().join(name)
    }

    pub fn scope(&self) -> String {
        format!("xtask-test-app--{}", self.name)
    }

    /// `cargo xtask ARGS -e <file>` as a runner would run it: the lab's ssh
    /// on PATH, the lab registry's credentials in the environment.
    pub fn xtask(&self, args: &[&str]) -> Output {
        tokio::task::block_in_place(|| self.command(args).output().unwrap())
    }

    /// `xtask` in a child process, to act on while it runs (output piped).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let registry = self.lab.registry.as_ref().unwrap();
        let c = registry.credentials().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .args(args)
            .args(["-e", self.path.to_str().unwrap()])
            .env("PATH", self.lab.ssh.path_env())
            .env("XTASK_REGISTRY", &registry.address)
            .env("REGISTRY_USERNAME", &c.username)
            .env("REGISTRY_PASSWORD", &c.password)
            .env_remove("DOCKER_HOST");
        if self.runner {
            let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
            command
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env(xtask::ssh::KEY_VAR, read(&self.lab.ssh.key))
                .env(xtask::ssh::KNOWN_HOSTS_VAR, read(&self.lab.ssh.known_hosts));
        }
        command
    }

    pub fn json(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.xtask(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}); stderr:\n{stderr}"));
        (out.status.success(), json, stderr)
    }

    pub fn urls(&self) -> Vec<String> {
        self.fronts()
            .iter()
            .map(|h| format!("https://{}:{}", h.address, self.https_port))
            .collect()
    }

    /// A client trusting every host's balancer certificate, as this
    /// machine's deploys stored them.
    pub fn client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        for host in self.fronts() {
            let cert = self.runtime_folder(host).join("tls/cert.pem");
            let pem = std::fs::read(&cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }

    /// Keep-alive load on every host's public URL, each live before returning.
    pub async fn load(&self) -> Vec<Load> {
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
    pub async fn running(&self) -> Vec<BTreeMap<String, usize>> {
        let mut all = Vec::new();
        for host in &self.lab.hosts {
            all.push(self.running_on(host).await);
        }
        all
    }

    /// Release id -> instances running on `host`, from its own engine.
    pub async fn running_on(&self, host: &xtask::lab::Host) -> BTreeMap<String, usize> {
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
        by_release
    }

    pub async fn assert_only(&self, release: &str, what: &str) {
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
    /// Frees what the environment runs (the lab goes when its last test ends).
    pub async fn destroy(&self) {
        if self.swarm {
            let _ = self.xtask(&["down"]);
            for host in self.fronts() {
                let _ = std::fs::remove_dir_all(self.runtime_folder(host));
            }
            return;
        }
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
