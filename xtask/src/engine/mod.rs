//! `cargo xtask engine start|stop|status`: one place that makes a Docker
//! engine and an authenticated registry available to every command and test.
//! An engine that already answers (DOCKER_HOST or the default socket) is
//! used as it is; otherwise a project-private dockerd is started under
//! `target/engine/`. `stop` ends only what `start` started.
mod dockerd;
pub(crate) mod registry;
pub mod swarm;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use serde::{Deserialize, Serialize};

pub use registry::RegistryCredentials;

use crate::{daemon, workspace};

/// A process `engine start` launched, identified by pid plus a marker in its argv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagedProcess {
    pub pid: u32,
    pub marker: String,
    pub log: PathBuf,
}

impl ManagedProcess {
    pub fn is_running(&self) -> bool {
        daemon::is_ours(self.pid, &self.marker)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryState {
    /// `127.0.0.1:PORT`: plain HTTP, which the engine allows for loopback registries.
    pub address: String,
    pub credentials_file: PathBuf,
    pub process: ManagedProcess,
}

/// What `engine start` recorded in `target/engine/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineState {
    pub docker_host: String,
    /// None when an engine that was already running is used.
    pub dockerd: Option<ManagedProcess>,
    pub registry: RegistryState,
}

impl EngineState {
    pub fn registry_credentials(&self) -> Result<RegistryCredentials> {
        RegistryCredentials::load(&self.registry.credentials_file)
    }
}

pub fn engine_dir() -> PathBuf {
    workspace::target_dir().join("engine")
}

fn state_file() -> PathBuf {
    engine_dir().join("state.json")
}

pub fn load_state() -> Result<Option<EngineState>> {
    let path = state_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "reading {} (delete it and run `cargo xtask engine start`)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_state(state: &EngineState) -> Result<()> {
    let path = state_file();
    std::fs::write(&path, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Connects to `unix:///path` or `tcp://host:port` and negotiates the API
/// version down to what the engine speaks (Debian's dockerd is API 1.41).
pub async fn connect(docker_host: &str) -> Result<Docker> {
    let docker = if let Some(path) = docker_host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 300, bollard::API_DEFAULT_VERSION)
    } else {
        let http = docker_host.replacen("tcp://", "http://", 1);
        Docker::connect_with_http(&http, 300, bollard::API_DEFAULT_VERSION)
    }
    .with_context(|| format!("connecting to the Docker engine at {docker_host}"))?;
    tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .with_context(|| format!("the Docker engine at {docker_host} did not answer within 5s"))?
        .with_context(|| format!("negotiating the API version with {docker_host}"))
}

pub async fn answers(docker_host: &str) -> bool {
    match connect(docker_host).await {
        Ok(docker) => tokio::time::timeout(Duration::from_secs(3), docker.ping())
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    }
}

/// Outcome of `start`: the state, and whether this call started anything.
pub struct Started {
    pub state: EngineState,
    pub started_now: bool,
}

pub async fn start() -> Result<Started> {
    if let Some(state) = load_state()? {
        if answers(&state.docker_host).await && state.registry.process.is_running() {
            return Ok(Started {
                state,
                started_now: false,
            });
        }
        if answers(&state.docker_host).await {
            // Only the registry died: it comes back alone, same address and storage.
            return Ok(Started {
                state: restart_registry().await?,
                started_now: true,
            });
        }
        eprintln!(
            "engine state in {} is stale; cleaning up before starting again",
            state_file().display()
        );
        stop_recorded(&state)?;
    }
    std::fs::create_dir_all(engine_dir())
        .with_context(|| format!("creating {}", engine_dir().display()))?;
    let (docker_host, dockerd) = match existing_engine().await {
        Some(host) => (host, None),
        None => {
            let started = dockerd::start(&engine_dir()).await?;
            (started.0, Some(started.1))
        }
    };
    let registry = match registry::start(&engine_dir().join("registry")).await {
        Ok(registry) => registry,
        Err(e) => {
            // Leave nothing half-started behind.
            if let Some(process) = &dockerd {
                let _ = daemon::stop(process.pid, &process.marker, Duration::from_secs(30));
            }
            return Err(e);
        }
    };
    let state = EngineState {
        docker_host,
        dockerd,
        registry,
    };
    save_state(&state)?;
    Ok(Started {
        state,
        started_now: true,
    })
}

/// Starts the recorded registry again (stopping it first if it still runs)
/// on its address, with its credentials and storage, and records its pid.
pub async fn restart_registry() -> Result<EngineState> {
    let mut state =
        load_state()?.context("no engine recorded: run `cargo xtask engine start` first")?;
    state.registry = registry::restart(&state.registry).await?;
    save_state(&state)?;
    Ok(state)
}

async fn existing_engine() -> Option<String> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if answers(&host).await {
            return Some(host);
        }
        eprintln!(
            "DOCKER_HOST={host} does not answer; trying the default socket, then a private engine"
        );
    }
    let default = "unix:///var/run/docker.sock";
    (Path::new("/var/run/docker.sock").exists() && answers(default).await)
        .then(|| default.to_owned())
}

/// Leaves the single-node swarm `swarm::ensure_single_node` made on the
/// recorded engine, if it did; a swarm someone else made is left alone.
pub async fn leave_swarm_if_ours() -> Result<bool> {
    let Some(state) = load_state()? else {
        return Ok(false);
    };
    if !answers(&state.docker_host).await {
        return Ok(false);
    }
    swarm::leave_if_ours(&connect(&state.docker_host).await?).await
}

/// Stops what `start` started (never an engine it found running) and forgets it.
pub fn stop() -> Result<Option<EngineState>> {
    let Some(state) = load_state()? else {
        return Ok(None);
    };
    stop_recorded(&state)?;
    Ok(Some(state))
}

fn stop_recorded(state: &EngineState) -> Result<()> {
    let registry = &state.registry.process;
    daemon::stop(registry.pid, &registry.marker, Duration::from_secs(10))?;
    if let Some(dockerd) = &state.dockerd {
        // dockerd stops its containers first; give it time to do so cleanly.
        daemon::stop(dockerd.pid, &dockerd.marker, Duration::from_secs(30))?;
        dockerd::remove_bridge(&engine_dir());
    }
    let path = state_file();
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The running engine for commands and tests: the recorded one, else
/// DOCKER_HOST or the default socket. Fails with what to run when none answers.
pub async fn require() -> Result<(Docker, Option<EngineState>)> {
    // An explicit DOCKER_HOST is never silently swapped for another engine:
    // deploying to the wrong one is worse than failing.
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if !answers(&host).await {
            bail!("DOCKER_HOST={host} does not answer: start that engine, or unset DOCKER_HOST to use the one from `cargo xtask engine start`");
        }
        let state = load_state()?.filter(|s| s.docker_host == host);
        return Ok((connect(&host).await?, state));
    }
    if let Some(state) = load_state()? {
        if answers(&state.docker_host).await {
            return Ok((connect(&state.docker_host).await?, Some(state)));
        }
    }
    if let Some(host) = existing_engine().await {
        return Ok((connect(&host).await?, None));
    }
    bail!("no Docker engine answers: run `cargo xtask engine start` (it starts a private one under target/engine/)")
}
