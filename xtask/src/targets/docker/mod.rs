//! The Docker target: instances are containers on one engine, labelled with
//! app, environment, release and colour, reachable by probes on 127.0.0.1
//! and by the balancer through a unix socket in a bind-mounted folder.
mod records;

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
};

use anyhow::{Context, Result};
use bollard::{
    models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum},
    query_parameters::{
        CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
        RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    },
    Docker,
};

use super::{Instance, InstanceState, Target};
use crate::{
    balancer::Balancer,
    deploy::lock::{LockInfo, LockStore},
    deploy::release::{History, Release},
    engine,
    environment::Environment,
};

pub mod labels {
    pub const SCOPE: &str = "xtask.scope";
    pub const ROLE: &str = "xtask.role";
    pub const SEQ: &str = "xtask.seq";
    pub const DATA: &str = "xtask.data";
    pub const APP: &str = "xtask.app";
    pub const ENV: &str = "xtask.env";
    pub const RELEASE: &str = "xtask.release";
    pub const COLOR: &str = "xtask.color";
}

/// The port the app listens on unless a release sets PORT.
const DEFAULT_PORT: &str = "8080";
const SOCKET_IN_CONTAINER: &str = "/run/app/app.sock";
/// The image's non-root user must be able to create its socket in the mounted folder.
pub(crate) const APP_UID: u32 = 65532;

pub struct DockerTarget {
    docker: Docker,
    /// `<app>-<env>`: prefixes every container and record of this environment.
    scope: String,
    app: String,
    env_name: String,
    drain_seconds: f64,
    runtime_dir: PathBuf,
    balancer: Balancer,
    public_url: String,
}

/// Sockets and nginx's files live on the engine's host, outside any checkout,
/// so every runner on that host finds the same ones.
pub(crate) fn runtime_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/xtask")
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(dir).join("xtask")
    } else {
        PathBuf::from(format!("/tmp/xtask-{}", nix::unistd::geteuid()))
    }
}

impl DockerTarget {
    pub async fn connect(env: &Environment) -> Result<DockerTarget> {
        let docker = match &env.file.target.host {
            Some(host) => engine::connect(host).await?,
            None => engine::require().await?.0,
        };
        let app = env.app_name();
        let scope = format!("{app}-{}", env.name);
        let runtime_dir = runtime_root().join(&scope);
        std::fs::create_dir_all(runtime_dir.join("sockets"))
            .with_context(|| format!("creating {}", runtime_dir.display()))?;
        Ok(DockerTarget {
            docker,
            balancer: Balancer::new(&runtime_dir, env.balancer()),
            runtime_dir,
            scope,
            app,
            env_name: env.name.clone(),
            drain_seconds: env.file.health.drain_seconds,
            public_url: env.public_url(),
        })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn socket_dir(&self, name: &str) -> PathBuf {
        self.runtime_dir.join("sockets").join(name)
    }

    fn instance_from(
        &self,
        id: String,
        name: String,
        labels: &HashMap<String, String>,
        host_port: Option<String>,
    ) -> Instance {
        Instance {
            id,
            name: name.trim_start_matches('/').to_owned(),
            release: labels.get(labels::RELEASE).cloned().unwrap_or_default(),
            color: labels.get(labels::COLOR).cloned().unwrap_or_default(),
            probe_url: host_port
                .map(|p| format!("http://127.0.0.1:{p}"))
                .unwrap_or_default(),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        remove_forced(&self.docker, id).await
    }

    /// Removes every trace of the environment: instances, history and lock
    /// records, the balancer and its folder. For throwaway environments
    /// (tests, benchmarks), never for real ones.
    pub async fn destroy(&self) -> Result<()> {
        self.balancer.stop()?;
        for c in list_scoped(&self.docker, &self.scope, None).await? {
            self.remove_container(&c.id.unwrap_or_default()).await?;
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        Ok(())
    }

    /// Stops the balancer; used by `down`.
    pub fn stop_balancer(&self) -> Result<()> {
        self.balancer.stop()
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }
}

/// Every container (running or not) of `scope`, of one role or all.
async fn list_scoped(
    docker: &Docker,
    scope: &str,
    role: Option<&str>,
) -> Result<Vec<bollard::models::ContainerSummary>> {
    let mut wanted = vec![format!("{}={scope}", labels::SCOPE)];
    wanted.extend(role.map(|r| format!("{}={r}", labels::ROLE)));
    let filters = HashMap::from([("label".to_owned(), wanted)]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .with_context(|| {
            format!(
                "listing the {} containers of {scope}",
                role.unwrap_or("all")
            )
        })
}

/// Force-removes a container; one that is already gone is fine.
async fn remove_forced(docker: &Docker, id: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing container {id}")),
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 3];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LockStore for DockerTarget {
    async fn lock_create(&self, info: &LockInfo) -> Result<bool> {
        records::lock_create(&self.docker, &self.scope, info).await
    }
    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        records::lock_read(&self.docker, &self.scope).await
    }
    async fn lock_remove(&self, token: &str) -> Result<()> {
        records::lock_remove(&self.docker, token).await
    }
}

impl Target for DockerTarget {
    async fn read_history(&self) -> Result<History> {
        records::read_history(&self.docker, &self.scope).await
    }

    async fn write_history(&self, history: &History) -> Result<()> {
        records::write_history(&self.docker, &self.scope, history).await
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {image}")),
        }
    }

    async fn start_instance(
        &self,
        release: &Release,
        env: &BTreeMap<String, String>,
    ) -> Result<Instance> {
        let name = format!("{}-{}-{}", self.scope, release.id, random_suffix());
        let socket_dir = self.socket_dir(&name);
        std::fs::create_dir_all(&socket_dir)
            .with_context(|| format!("creating {}", socket_dir.display()))?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&socket_dir, Some(APP_UID.into()), Some(APP_UID.into()))
                .with_context(|| format!("handing {} to the app's user", socket_dir.display()))?;
        } else {
            std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777))?;
        }
        // A release may set PORT; a value that is not a port makes the app exit at
        // start, which the gate reports (the container port falls back to the default).
        let port = env.get("PORT").map(String::as_str).unwrap_or(DEFAULT_PORT);
        let container_port = format!(
            "{}/tcp",
            port.parse::<u16>()
                .map_or(DEFAULT_PORT.to_owned(), |p| p.to_string())
        );
        let mut vars: Vec<String> = env
            .iter()
            .filter(|(k, _)| *k != "PORT")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vars.push(format!("PORT={port}"));
        vars.push(format!("LISTEN_SOCKET={SOCKET_IN_CONTAINER}"));
        vars.push(format!("DRAIN_SECONDS={}", self.drain_seconds));
        let labels = HashMap::from([
            (labels::SCOPE.to_owned(), self.scope.clone()),
            (labels::ROLE.to_owned(), "instance".to_owned()),
            (labels::APP.to_owned(), self.app.clone()),
            (labels::ENV.to_owned(), self.env_name.clone()),
            (labels::RELEASE.to_owned(), release.id.clone()),
            (labels::COLOR.to_owned(), release.color().to_owned()),
        ]);
        // Port chosen by the engine, on loopback only.
        let ports = HashMap::from([(
            container_port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        )]);
        let body = ContainerCreateBody {
            image: Some(release.image.clone()),
            env: Some(vars),
            labels: Some(labels.clone()),
            stop_timeout: Some((self.drain_seconds.ceil() as i64) + 10),
            host_config: Some(HostConfig {
                port_bindings: Some(ports),
                binds: Some(vec![format!("{}:/run/app", socket_dir.display())]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating instance {name} of {}", release.image))?;
        let started = async {
            self.docker
                .start_container(&created.id, None)
                .await
                .with_context(|| format!("starting instance {name}"))?;
            let inspect = self
                .docker
                .inspect_container(&created.id, None)
                .await
                .with_context(|| format!("inspecting instance {name}"))?;
            // A crash-looping container reports Running while it restarts; only "running" counts.
            let running = inspect
                .state
                .as_ref()
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .as_deref()
                == Some("running");
            let port = inspect
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|p| p.get(&container_port).cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port));
            // An instance that already exited has no port: the gate reports its exit and logs.
            match (port, running) {
                (None, true) => anyhow::bail!("instance {name} runs but has no published port"),
                (port, _) => Ok(port),
            }
        }
        .await;
        match started {
            Ok(port) => Ok(self.instance_from(created.id, name, &labels, port)),
            Err(e) => {
                // Never leave a half-started instance behind.
                let _ = self.remove_container(&created.id).await;
                let _ = std::fs::remove_dir_all(&socket_dir);
                Err(e)
            }
        }
    }

    async fn instance_state(&self, instance: &Instance) -> Result<InstanceState> {
        let inspect = match self.docker.inspect_container(&instance.id, None).await {
            Ok(inspect) => inspect,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(InstanceState::Missing),
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", instance.name)),
        };
        let restarts = inspect.restart_count.unwrap_or(0);
        let state = inspect.state.unwrap_or_default();
        Ok(match state.status.map(|s| s.to_string()).as_deref() {
            Some("restarting") => InstanceState::Running {
                restarts: restarts.max(1),
            },
            Some("exited") | Some("dead") => InstanceState::Exited {
                code: state.exit_code.unwrap_or(-1),
            },
            _ => InstanceState::Running { restarts },
        })
    }

    async fn instance_logs(&self, instance: &Instance, lines: usize) -> Result<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        Ok(super::collect_logs(Box::pin(self.docker.logs(&instance.id, Some(options)))).await)
    }

    async fn stop_instance(&self, instance: &Instance) -> Result<()> {
        let grace = (self.drain_seconds.ceil() as i32) + 10;
        let options = StopContainerOptionsBuilder::default().t(grace).build();
        match self
            .docker
            .stop_container(&instance.id, Some(options))
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("stopping {}", instance.name)),
        }
        self.remove_container(&instance.id).await?;
        let _ = std::fs::remove_dir_all(self.socket_dir(&instance.name));
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<Instance>> {
        let containers = list_scoped(&self.docker, &self.scope, Some("instance")).await?;
        Ok(containers
            .into_iter()
            .map(|c| {
                let port = c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .find(|p| p.public_port.is_some() && p.ip.as_deref() == Some("127.0.0.1"))
                    .and_then(|p| p.public_port)
                    .map(|p| p.to_string());
                let name = c
                    .names
                    .unwrap_or_default()
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                self.instance_from(
                    c.id.unwrap_or_default(),
                    name,
                    &c.labels.unwrap_or_default(),
                    port,
                )
            })
            .collect())
    }

    async fn ensure_balancer(&self, slots: usize) -> Result<()> {
        self.balancer.ensure(slots).await
    }

    async fn routes(&self) -> Result<Vec<Option<String>>> {
        Ok(self
            .balancer
            .routes(self.balancer.slot_count())
            .into_iter()
            .map(|socket| {
                socket.and_then(|s| Some(s.parent()?.file_name()?.to_string_lossy().into_owned()))
            })
            .collect())
    }

    async fn route(&self, slot: usize, instance: &Instance) -> Result<()> {
        let socket = self.socket_dir(&instance.name).join("app.sock");
        if !socket.exists() {
            anyhow::bail!(
                "instance {} has no socket at {}: is LISTEN_SOCKET honoured by the image?",
                instance.name,
                socket.display()
            );
        }
        self.balancer.route(slot, &socket)
    }

    fn public_url(&self) -> String {
        self.public_url.clone()
    }

    fn public_client(&self) -> Result<reqwest::Client> {
        self.balancer.public_client()
    }
}
