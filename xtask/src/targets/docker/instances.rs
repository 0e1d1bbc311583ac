//! The containers of a Docker environment: one per instance, labelled with
//! app, environment, release and colour, reachable by probes on 127.0.0.1
//! and by the balancer through a unix socket in a bind-mounted folder.
use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::PermissionsExt,
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

use super::{labels, DockerTarget, APP_UID, DEFAULT_PORT, SOCKET_IN_CONTAINER};
use crate::{deploy::release::Release, targets::InstanceState};

/// One running copy of a release.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub release: String,
    pub color: String,
    /// `http://127.0.0.1:PORT`: probes reach the instance directly, not through the balancer.
    pub probe_url: String,
}

/// Every container (running or not) of `scope`, of one role or all.
pub(super) async fn list_scoped(
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
pub(super) async fn remove_forced(docker: &Docker, id: &str) -> Result<()> {
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

impl DockerTarget {
    pub async fn start_instance(
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

    pub async fn instance_state(&self, instance: &Instance) -> Result<InstanceState> {
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
            Some("created") => InstanceState::Pending,
            _ => InstanceState::Running { restarts },
        })
    }

    pub async fn instance_logs(&self, id: &str, lines: usize) -> Result<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        Ok(crate::targets::collect_logs(Box::pin(self.docker.logs(id, Some(options)))).await)
    }

    pub async fn stop_instance(&self, instance: &Instance) -> Result<()> {
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

    pub async fn containers(&self) -> Result<Vec<Instance>> {
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
}
