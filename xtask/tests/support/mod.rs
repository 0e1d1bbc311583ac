//! What the xtask integration tests share: the real engine (never a
//! stand-in), the image built from this tree, containers cleaned up on drop.
#![allow(dead_code)] // each test binary uses a different part

use std::{collections::HashMap, time::Duration};

use bollard::{
    models::{ContainerCreateBody, HostConfig, PortBinding},
    query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder},
    Docker,
};
use tokio::sync::OnceCell;
use xtask::{engine, image};

/// The engine `cargo xtask engine start` recorded, or the one that answers.
/// No engine is a failure, never a skip: `cargo xtask ci` starts one.
pub async fn docker() -> (Docker, Option<engine::EngineState>) {
    match engine::require().await {
        Ok(found) => found,
        Err(e) => panic!("this test needs a Docker engine: {e:#}"),
    }
}

static BUILT: OnceCell<image::BuiltImage> = OnceCell::const_new();

/// The app image built from this tree, once per test binary (cargo and the
/// engine's cache make later builds cheap).
pub async fn built_image(docker: &Docker) -> &'static image::BuiltImage {
    BUILT
        .get_or_init(|| async {
            let request = image::BuildRequest {
                repo: "xtask-test-app".into(),
                extra_tags: vec![],
                quiet: true,
                ..Default::default()
            };
            image::build(docker, &request)
                .await
                .expect("building the app image")
        })
        .await
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A container removed (forced) when dropped, so a failing test leaves no orphan.
pub struct Container {
    pub id: String,
    pub port: u16,
    docker: Docker,
}

impl Container {
    /// Runs `image` with its port 8080 published on 127.0.0.1 only.
    pub async fn run(docker: &Docker, image: &str, env: &[&str]) -> Container {
        let port = free_port();
        let bindings = HashMap::from([(
            "8080/tcp".to_owned(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(port.to_string()),
            }]),
        )]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env.iter().map(|e| e.to_string()).collect()),
            labels: Some(HashMap::from([(
                "xtask.test".to_owned(),
                "true".to_owned(),
            )])),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
            .await
            .expect("creating a container");
        let container = Container {
            id: created.id,
            port,
            docker: docker.clone(),
        };
        docker
            .start_container(&container.id, None)
            .await
            .expect("starting the container");
        container
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Polls until `path` answers 200; panics with the container's state after `limit`.
    pub async fn wait_for(&self, path: &str, limit: Duration) -> reqwest::Response {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(r) = client
                .get(self.url(path))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status() == 200 {
                    return r;
                }
            }
            if tokio::time::Instant::now() > deadline {
                let state = self
                    .docker
                    .inspect_container(&self.id, None)
                    .await
                    .ok()
                    .and_then(|i| i.state);
                panic!(
                    "{} did not answer 200 within {limit:?}; container state: {state:?}",
                    self.url(path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = self.id.clone();
        // Drop cannot be async: remove on a separate thread with its own runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let options = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_container(&id, Some(options)).await;
                })
        })
        .join();
    }
}

/// Runs the `cargo xtask` binary itself, as a user would.
pub fn xtask(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("running the xtask binary")
}

pub mod canary;
pub mod deploy_env;
pub mod prometheus;

static V2: OnceCell<String> = OnceCell::const_new();

/// A second release: the app image plus a label, so it has its own image id.
pub async fn second_image(docker: &Docker) -> String {
    let base = built_image(docker).await.tags[0].clone();
    V2.get_or_init(|| async {
        let reference = "xtask-test-app:v2".to_owned();
        let tar = image::context::tar(&format!("FROM {base}\nLABEL xtask.test.release=v2\n"), &[])
            .unwrap();
        image::build_context(docker, tar, std::slice::from_ref(&reference), true)
            .await
            .unwrap();
        reference
    })
    .await
    .clone()
}

static BALANCER: OnceCell<String> = OnceCell::const_new();

/// The balancer image the Docker target's deploys look for (`engine start`
/// builds it; tests build it here, once per test binary).
pub async fn balancer_image(docker: &Docker) -> String {
    BALANCER
        .get_or_init(|| async {
            xtask::haproxy::image::ensure(docker, true)
                .await
                .expect("building the balancer image")
        })
        .await
        .clone()
}

/// Deploy tests share two cores: one at a time keeps their gates honest.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn workspace_env(name: &str) -> std::path::PathBuf {
    xtask::workspace::root()
        .join("infrastructure/environments")
        .join(format!("{name}.toml"))
}

/// The engine as a single-node swarm manager on loopback, made once and
/// left again by `engine stop` (as `cargo xtask ci` does at the end).
pub async fn swarm() -> Docker {
    let (docker, _) = docker().await;
    engine::swarm::ensure_single_node(&docker)
        .await
        .unwrap_or_else(|e| panic!("this test needs swarm mode on the engine: {e:#}"));
    docker
}
