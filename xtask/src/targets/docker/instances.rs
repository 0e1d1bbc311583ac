//! The containers of a Docker environment: one per instance, labelled with
//! app, environment, release, colour and port, attached to the environment's
//! network and reached there by the balancer at their address and port.
//! Nothing of theirs is published on the host, so any HTTP image works.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context, Result};
use bollard::{
    models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum},
    query_parameters::{
        CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
        RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    },
    Docker,
};

use super::{labels, DockerTarget};
use crate::{deploy::release::Release, targets::InstanceState};

/// One running copy of a release.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub release: String,
    pub color: String,
    /// Its address and port on the environment's network (None: not running).
    pub addr: Option<SocketAddr>,
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
    pub(super) fn instance_from(
        &self,
        id: String,
        name: String,
        labels: &HashMap<String, String>,
        ip: Option<String>,
    ) -> Instance {
        let port = labels
            .get(labels::PORT)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(self.app_port);
        Instance {
            id,
            name: name.trim_start_matches('/').to_owned(),
            release: labels.get(labels::RELEASE).cloned().unwrap_or_default(),
            color: labels.get(labels::COLOR).cloned().unwrap_or_default(),
            addr: ip
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, port)),
        }
    }

    /// `env`: the plain variables; `secrets`: resolved, delivered as files.
    pub async fn start_instance(
        &self,
        release: &Release,
        env: &BTreeMap<String, String>,
        secrets: &super::secrets::SecretFiles,
    ) -> Result<Instance> {
        let name = format!("{}-{}-{}", self.scope, release.id, random_suffix());
        // A release may set PORT; a value that is not a port makes the app exit
        // at start, which the gate reports (its address falls back to [app] port).
        let configured = self.app_port.to_string();
        let port = env.get("PORT").map(String::as_str).unwrap_or(&configured);
        let listens = port.parse::<u16>().unwrap_or(self.app_port);
        let mut plain = env.clone();
        plain.remove("PORT");
        let mut vars = super::secrets::variables(&plain, &secrets.values);
        vars.push(format!("PORT={port}"));
        vars.push(format!("DRAIN_SECONDS={}", self.drain_seconds));
        let labels = HashMap::from([
            (labels::SCOPE.to_owned(), self.scope.clone()),
            (labels::ROLE.to_owned(), "instance".to_owned()),
            (labels::APP.to_owned(), self.app.clone()),
            (labels::ENV.to_owned(), self.env_name.clone()),
            (labels::RELEASE.to_owned(), release.id.clone()),
            (labels::COLOR.to_owned(), release.color().to_owned()),
            (labels::PORT.to_owned(), listens.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(release.runnable_image().to_owned()),
            env: Some(vars),
            labels: Some(labels.clone()),
            stop_timeout: Some((self.drain_seconds.ceil() as i64) + 10),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.creating.lock().expect("creating").push(name.clone());
        let created = self.docker.create_container(Some(options), body).await;
        self.creating
            .lock()
            .expect("creating")
            .retain(|n| *n != name);
        let created =
            created.with_context(|| format!("creating instance {name} of {}", release.image))?;
        let started = async {
            self.put_secrets(&created.id, secrets)
                .await
                .with_context(|| format!("writing the secrets of instance {name}"))?;
            self.docker
                .start_container(&created.id, None)
                .await
                .with_context(|| format!("starting instance {name}"))?;
            let inspect = self
                .docker
                .inspect_container(&created.id, None)
                .await
                .with_context(|| format!("inspecting instance {name}"))?;
            // An instance that already exited has no address: the gate reports its exit and logs.
            Ok::<_, anyhow::Error>(
                inspect
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|mut n| n.remove(&self.network))
                    .and_then(|e| e.ip_address)
                    .filter(|a| !a.is_empty()),
            )
        }
        .await;
        match started {
            Ok(ip) => Ok(self.instance_from(created.id, name, &labels, ip)),
            Err(e) => {
                // Never leave a half-started instance behind.
                let _ = remove_forced(&self.docker, &created.id).await;
                Err(e)
            }
        }
    }

    /// After an interrupted start: every container whose create was sent but
    /// never answered is waited for (the engine may still make it) and
    /// removed, so the undo that follows leaves no orphan.
    pub(super) async fn settle(&self) {
        let names = std::mem::take(&mut *self.creating.lock().expect("creating"));
        for name in names {
            for _ in 0..30 {
                if self.docker.inspect_container(&name, None).await.is_ok() {
                    let _ = remove_forced(&self.docker, &name).await;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
        remove_forced(&self.docker, &instance.id).await
    }

    pub async fn containers(&self) -> Result<Vec<Instance>> {
        let containers = list_scoped(&self.docker, &self.scope, Some("instance")).await?;
        Ok(containers
            .into_iter()
            .map(|c| {
                let ip = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|mut n| n.remove(&self.network))
                    .and_then(|e| e.ip_address)
                    .filter(|a| !a.is_empty());
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
                    ip,
                )
            })
            .collect())
    }
}
