//! The balancer: HAProxy 2.6 in a FROM-scratch container, steered at run
//! time through its runtime API and never reloaded (a reload closes idle
//! keep-alive connections; nginx open source can change upstreams no other
//! way). The backend is a fixed pool of slots (`s1`..`sN`, see
//! `config::HaproxySettings::max_servers`); deploying means pointing slots at
//! instances and setting their weight and state.
//!
//! The runtime API is reached by `docker exec balancer-ctl '<commands>'`
//! (one exec per batch of `;`-joined commands), so it works over any Docker
//! transport and the admin socket never leaves the container. A handle given
//! a session (`with_session`) sends its lines over one attached `docker exec
//! balancer-ctl --session` instead, and falls back to one exec per line when
//! the session cannot be had (see `session`).
//!
//! # State right after `set server ... state ready`
//! Measured on HAProxy 2.6.12 (`tests/haproxy/checks.rs`,
//! `ready_after_maint_is_up_at_once_before_any_check`): a server leaving
//! MAINT is **UP at once and takes traffic before any check has run**, even
//! when its new address has nothing listening. HAProxy sets its check health
//! to `rise` ("start OK, check immediately"): `show stat` says `UP 1/2` (with
//! fall 2), and `check_status` still holds the slot's *last* result, which
//! may be a stale `L7OK` of the previous instance (`set server ... addr`
//! does not reset it; only a never-checked slot says `INI`). The slot's
//! check timer keeps ticking through MAINT, so the first check comes at its
//! next tick, anywhere within `inter` (seen: 0.1 s to 1.7 s with inter 2 s);
//! then one failure (not `fall`) makes it DOWN, one success plain `UP`
//! (with fall 2). Until then, a broken instance takes its share of traffic.
//!
//! So a deploy gate must not infer health from `ready` or from
//! `check_status`: set the new slot's address, weight 0 and `ready` in one
//! exec, wait for `status == ServerStatus::Up` (plain `UP`, not `UP n/m`,
//! which needs `check_fall >= 2`), and only then give it a weight. A server
//! left at weight 0 is checked like any other but gets no new requests.
pub mod compose;
pub mod config;
pub mod engine;
pub mod image;
pub mod runtime;
pub mod session;

use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{bail, Context, Result};
use bollard::{
    models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum},
    query_parameters::{
        CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        StopContainerOptionsBuilder,
    },
    Docker,
};

pub use config::HaproxySettings;
pub use runtime::{AdminState, Command, ServerStat, ServerStatus, Slot};

use crate::targets::docker::labels;

/// Label holding the fingerprint of the config and certificate a container was created with.
const CONFIG_LABEL: &str = "xtask.balancer.config";

/// What `HaproxyBalancer::ensure` needs.
#[derive(Clone)]
pub struct Settings {
    /// `<app>-<env>`: the container is `<scope>-balancer`, labelled with it.
    pub scope: String,
    /// From `image::ensure` (built at CI/test time, never inside a deploy).
    pub image: String,
    /// User-defined bridge network shared with the instances.
    pub network: String,
    /// False for a swarm overlay the manager made: a worker's engine does
    /// not list it until something on it runs there, and must not make a
    /// local bridge of the same name; the container joins it by name.
    pub create_network: bool,
    /// Where the host ports are published: 127.0.0.1 for a balancer used
    /// from its own host, the host's address when clients come from elsewhere.
    pub publish_address: IpAddr,
    /// Host ports.
    pub https_port: u16,
    pub http_port: u16,
    /// 0: a free port the engine picks (see `published_port`).
    pub exporter_port: u16,
    pub haproxy: HaproxySettings,
    /// Certificate chain then private key, PEM (see `dev_pem`).
    pub pem: Vec<u8>,
    /// More labels for the container and the network (app, env...).
    pub labels: HashMap<String, String>,
}

/// A self-signed certificate and key for `localhost` and 127.0.0.1, as one
/// PEM (HAProxy's `crt` wants both in one file); also returns the certificate
/// alone, for clients to trust. Made fresh each time, never committed.
pub fn dev_pem() -> Result<(String, Vec<u8>)> {
    dev_pem_for(&[])
}

/// `dev_pem`, also valid for `more` names or addresses (a balancer published
/// on a host's address is reached by that address).
pub fn dev_pem_for(more: &[String]) -> Result<(String, Vec<u8>)> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    names.extend(
        more.iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a development TLS certificate")?;
    let cert = certified.cert.pem();
    let pem = format!("{cert}{}", certified.signing_key.serialize_pem());
    Ok((cert, pem.into_bytes()))
}

/// A slot as a deploy wants it: which instance, how much traffic, which state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub slot: Slot,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub state: AdminState,
}

impl ServerSpec {
    /// Address, then weight, then state: a slot made ready with weight 0 never
    /// sees a request before its weight is set.
    pub fn commands(&self) -> Result<Vec<Command>> {
        Ok(vec![
            Command::set_addr(self.slot, self.addr, self.port),
            Command::set_weight(self.slot, self.weight)?,
            Command::set_state(self.slot, self.state),
        ])
    }
}

/// A handle on one running balancer container.
#[derive(Clone)]
pub struct HaproxyBalancer {
    docker: Docker,
    container: String,
    session: Option<session::Shared>,
}

/// The config without comments and blank lines: a new comment in the
/// template must not make every running balancer "another config" that has
/// to be replaced (cutting connections) on the next deploy.
fn significant_lines(config: &str) -> String {
    config
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The certificate and key the scope's balancer serves, read back from its
/// container (`None` without one): a deploy from another machine (a fresh CI
/// runner) keeps serving it instead of making a new one, which would change
/// the balancer's fingerprint and force its replacement.
pub async fn served_pem(docker: &Docker, scope: &str) -> Result<Option<Vec<u8>>> {
    engine::download(docker, &container_name(scope), config::PEM_IN_CONTAINER).await
}

pub fn container_name(scope: &str) -> String {
    format!("{scope}-balancer")
}

impl HaproxyBalancer {
    /// Creates and starts the balancer if missing; starts it if stopped.
    /// An existing container made with another config or certificate is an
    /// error: applying it means a new container, which cuts connections, so
    /// the caller decides (`remove` then `ensure`).
    pub async fn ensure(docker: &Docker, settings: &Settings) -> Result<HaproxyBalancer> {
        HaproxyBalancer::ensure_with(docker, settings, None).await
    }

    /// `ensure` whose handle, readiness wait included, is on `session`.
    pub async fn ensure_with(
        docker: &Docker,
        settings: &Settings,
        session: Option<session::Shared>,
    ) -> Result<HaproxyBalancer> {
        let rendered = config::render(&settings.haproxy)?;
        let fingerprint = format!(
            "{:016x}",
            image::fnv1a(&[significant_lines(&rendered).as_bytes(), &settings.pem])
        );
        let mut labels = settings.labels.clone();
        labels.insert(labels::SCOPE.into(), settings.scope.clone());
        if settings.create_network {
            engine::ensure_network(docker, &settings.network, &labels).await?;
        }
        let name = container_name(&settings.scope);
        let balancer = HaproxyBalancer {
            docker: docker.clone(),
            container: name.clone(),
            session,
        };
        match docker.inspect_container(&name, None).await {
            Ok(inspect) => {
                let found = inspect
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|mut l| l.remove(CONFIG_LABEL));
                if found.as_deref() != Some(fingerprint.as_str()) {
                    bail!("balancer {name} runs another config or certificate; to apply this one, remove it (`docker rm -f {name}`, which cuts open connections) and deploy again");
                }
                let running = inspect.state.and_then(|s| s.running).unwrap_or(false);
                if !running {
                    docker
                        .start_container(&name, None)
                        .await
                        .with_context(|| format!("starting {name}"))?;
                }
                balancer.wait_ready().await?;
                return Ok(balancer);
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting {name}")),
        }
        labels.insert(labels::ROLE.into(), "balancer".into());
        labels.insert(CONFIG_LABEL.into(), fingerprint);
        let publish = |port: u16| {
            Some(vec![PortBinding {
                host_ip: Some(settings.publish_address.to_string()),
                host_port: Some(if port == 0 {
                    String::new()
                } else {
                    port.to_string()
                }),
            }])
        };
        let ports = HashMap::from([
            (
                format!("{}/tcp", config::HTTPS_PORT),
                publish(settings.https_port),
            ),
            (
                format!("{}/tcp", config::HTTP_PORT),
                publish(settings.http_port),
            ),
            (
                format!("{}/tcp", config::EXPORTER_PORT),
                publish(settings.exporter_port),
            ),
        ]);
        let body = ContainerCreateBody {
            image: Some(settings.image.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                port_bindings: Some(ports),
                network_mode: Some(settings.network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating balancer {name} from {}", settings.image))?;
        let started = async {
            engine::upload(
                docker,
                &name,
                "/etc/haproxy",
                &[
                    engine::Upload {
                        path: "haproxy.cfg",
                        contents: rendered.as_bytes(),
                        mode: 0o644,
                        owner: 0,
                    },
                    // Readable by HAProxy's user only.
                    engine::Upload {
                        path: "tls/balancer.pem",
                        contents: &settings.pem,
                        mode: 0o600,
                        owner: image::UID,
                    },
                ],
            )
            .await?;
            docker
                .start_container(&name, None)
                .await
                .with_context(|| format!("starting balancer {name}"))?;
            balancer.wait_ready().await
        }
        .await;
        if let Err(e) = started {
            let logs = balancer.logs(20).await;
            let _ = balancer.remove().await;
            return Err(e.context(format!("balancer logs:\n{logs}")));
        }
        Ok(balancer)
    }

    /// A handle on the scope's balancer, which must exist.
    pub async fn open(docker: &Docker, scope: &str) -> Result<HaproxyBalancer> {
        let name = container_name(scope);
        docker
            .inspect_container(&name, None)
            .await
            .with_context(|| format!("no balancer {name}"))?;
        Ok(HaproxyBalancer {
            docker: docker.clone(),
            container: name,
            session: None,
        })
    }

    /// A handle on the scope's balancer if it exists and runs, from one inspect.
    pub async fn running(docker: &Docker, scope: &str) -> Option<HaproxyBalancer> {
        let name = container_name(scope);
        let inspect = docker.inspect_container(&name, None).await.ok()?;
        inspect
            .state
            .and_then(|s| s.running)
            .unwrap_or(false)
            .then(|| HaproxyBalancer {
                docker: docker.clone(),
                container: name,
                session: None,
            })
    }

    /// This handle sends its command lines over `shared` (opened at the
    /// first line, shared with every handle given the same one).
    pub fn with_session(mut self, shared: session::Shared) -> HaproxyBalancer {
        self.session = Some(shared);
        self
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    /// Waits until the admin socket answers (HAProxy has parsed its config).
    async fn wait_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let error = match self.exec_raw("show info").await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let inspect = self
                .docker
                .inspect_container(&self.container, None)
                .await
                .with_context(|| format!("inspecting {}", self.container))?;
            let state = inspect.state.unwrap_or_default();
            if state.running != Some(true) || tokio::time::Instant::now() > deadline {
                bail!("balancer {} is not answering on its admin socket (running: {:?}, exit code {:?}): {error:#}", self.container, state.running, state.exit_code);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one `;`-joined command line; the answer as HAProxy wrote it.
    pub async fn exec_raw(&self, line: &str) -> Result<String> {
        if let Some(shared) = &self.session {
            if let Some(answer) = session::send(shared, &self.docker, &self.container, line).await {
                return answer;
            }
        }
        let output =
            engine::exec(&self.docker, &self.container, &[image::CTL_IN_IMAGE, line]).await?;
        if output.exit_code != Some(0) {
            bail!(
                "balancer-ctl in {} failed ({:?}): {}",
                self.container,
                output.exit_code,
                output.stderr.trim()
            );
        }
        Ok(output.stdout)
    }

    /// Runs `commands` in one exec, in order; the first one HAProxy refuses
    /// is an error with its text (the ones before it took effect).
    pub async fn exec(&self, commands: &[Command]) -> Result<Vec<String>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let raw = self.exec_raw(&runtime::join(commands)).await?;
        runtime::check_answers(commands, &raw)
    }

    /// Applies every spec in one exec.
    pub async fn set_servers(&self, specs: &[ServerSpec]) -> Result<()> {
        let mut commands = Vec::new();
        for spec in specs {
            commands.extend(spec.commands()?);
        }
        self.exec(&commands).await.map(drop)
    }

    /// Every slot with its address, status, weight, check and counters.
    pub async fn servers(&self) -> Result<Vec<ServerStat>> {
        let command = Command::show_stat();
        let raw = self.exec_raw(command.as_str()).await?;
        runtime::parse_show_stat(&raw)
            .with_context(|| format!("reading `{}` from {}", command.as_str(), self.container))
    }

    pub async fn logs(&self, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        crate::targets::collect_logs(Box::pin(self.docker.logs(&self.container, Some(options))))
            .await
    }

    /// Soft stop (SIGUSR1): in-flight requests finish first.
    pub async fn stop(&self) -> Result<()> {
        let options = StopContainerOptionsBuilder::default().t(35).build();
        match self
            .docker
            .stop_container(&self.container, Some(options))
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stopping {}", self.container)),
        }
    }

    /// Removes the container (forced); one that is gone is fine. The network stays.
    pub async fn remove(&self) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self
            .docker
            .remove_container(&self.container, Some(options))
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.container)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::significant_lines;

    #[test]
    fn comments_and_blank_lines_do_not_change_what_the_balancer_runs() {
        let before = "global\n    maxconn 100\n\nbackend app\n    balance roundrobin\n";
        let commented = "# a new note\nglobal\n    # why\n    maxconn 100\n\n\nbackend app\n    balance roundrobin   \n";
        assert_eq!(significant_lines(before), significant_lines(commented));
        let changed = before.replace("maxconn 100", "maxconn 200");
        assert_ne!(significant_lines(before), significant_lines(&changed));
    }
}
