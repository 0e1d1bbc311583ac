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

/// How `connect` reaches an engine address.
#[derive(Debug, PartialEq, Eq)]
enum Transport {
    Unix(String),
    /// tcp:// with the client certificate, key and CA of `docker --tlsverify`.
    Tls {
        address: String,
        dir: PathBuf,
    },
    /// ssh://[user@]host[:port]: bollard runs `docker system dial-stdio`
    /// there through this machine's OpenSSH client (`crate::ssh`).
    Ssh(String),
}

/// unix:// as it is; tcp:// only over TLS. A plain tcp:// engine would get
/// every request in clear text (registry credentials in X-Registry-Auth
/// included) and would run containers for anyone who reaches its port, so
/// it is refused with the fix. The TLS files are where the docker CLI looks:
/// DOCKER_CERT_PATH, else ~/.docker, once DOCKER_TLS_VERIFY or
/// DOCKER_CERT_PATH is set.
fn transport(docker_host: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<Transport> {
    if let Some(path) = docker_host.strip_prefix("unix://") {
        return Ok(Transport::Unix(path.to_owned()));
    }
    if let Some(rest) = docker_host.strip_prefix("ssh://") {
        if rest.is_empty() || rest.contains('/') {
            bail!("{docker_host}: an SSH engine address is ssh://[user@]host[:port], with no path");
        }
        return Ok(Transport::Ssh(docker_host.to_owned()));
    }
    let Some(address) = docker_host
        .strip_prefix("tcp://")
        .or_else(|| docker_host.strip_prefix("https://"))
        .or_else(|| docker_host.strip_prefix("http://"))
    else {
        bail!("{docker_host}: not an engine address this tool speaks to; use unix:///path/to/docker.sock, ssh://user@host[:port], or tcp://host:port with TLS (DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH)");
    };
    let wants_tls = var("DOCKER_TLS_VERIFY").is_some() || var("DOCKER_CERT_PATH").is_some();
    if !wants_tls {
        bail!(
            "{docker_host}: refusing a plain-HTTP engine: every request (registry credentials included) would cross the network unencrypted, to whoever answers on that port. \
             Give it TLS: run dockerd with --tlsverify and set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a folder with ca.pem, cert.pem and key.pem (as for `docker --tlsverify`); \
             or reach it through a unix socket (e.g. `ssh -nNT -L /tmp/docker.sock:/var/run/docker.sock user@host` and unix:///tmp/docker.sock)"
        );
    }
    let dir = match (var("DOCKER_CERT_PATH"), var("HOME")) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(home)) => Path::new(&home).join(".docker"),
        (None, None) => bail!("{docker_host}: DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is: set DOCKER_CERT_PATH to the folder with ca.pem, cert.pem and key.pem"),
    };
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        if !dir.join(file).is_file() {
            bail!(
                "{docker_host}: TLS needs {} (DOCKER_CERT_PATH, else ~/.docker, holds ca.pem, cert.pem and key.pem)",
                dir.join(file).display()
            );
        }
    }
    Ok(Transport::Tls {
        address: format!("tcp://{address}"),
        dir,
    })
}

/// Connects to `unix:///path`, `ssh://user@host` or `tcp://host:port` over
/// TLS and negotiates the API version down to what the engine speaks
/// (Debian's dockerd is API 1.41).
pub async fn connect(docker_host: &str) -> Result<Docker> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let transport = transport(docker_host, &var)?;
    // An SSH connection starts a master and a remote `docker` process first.
    let (limit, hint) = match &transport {
        Transport::Ssh(_) => (
            Duration::from_secs(20),
            " (reached over SSH: is sshd running there, does it accept this machine's key \
             (ssh-agent, ~/.ssh or XTASK_SSH_KEY), is the host in known_hosts, \
             and does `docker` on that host reach its engine?)",
        ),
        _ => (Duration::from_secs(5), ""),
    };
    let docker = client(transport)
        .with_context(|| format!("connecting to the Docker engine at {docker_host}"))?;
    tokio::time::timeout(limit, docker.negotiate_version())
        .await
        .with_context(|| {
            format!(
                "the Docker engine at {docker_host} did not answer within {}s{hint}",
                limit.as_secs()
            )
        })?
        .with_context(|| format!("negotiating the API version with {docker_host}{hint}"))
}

fn client(transport: Transport) -> Result<Docker, bollard::errors::Error> {
    match transport {
        Transport::Unix(path) => {
            Docker::connect_with_unix(&path, 300, bollard::API_DEFAULT_VERSION)
        }
        Transport::Tls { address, dir } => Docker::connect_with_ssl(
            &address,
            &dir.join("key.pem"),
            &dir.join("cert.pem"),
            &dir.join("ca.pem"),
            300,
            bollard::API_DEFAULT_VERSION,
        ),
        Transport::Ssh(address) => {
            Docker::connect_with_ssh(&address, 300, bollard::API_DEFAULT_VERSION, None)
        }
    }
}

/// An address `connect` refuses before trying it (a plain tcp:// engine):
/// the refusal, for callers that would otherwise only say "does not answer".
pub fn refused(docker_host: &str) -> Option<anyhow::Error> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    transport(docker_host, &var).err()
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
        let why = refused(&host).map_or("does not answer".to_owned(), |e| format!("{e:#}"));
        eprintln!("DOCKER_HOST={host}: {why}; trying the default socket, then a private engine");
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
        if let Some(refusal) = refused(&host) {
            return Err(refusal.context(format!("DOCKER_HOST={host}")));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_plain_tcp_engine_is_refused_naming_the_fix() {
        for host in ["tcp://10.0.0.5:2375", "http://10.0.0.5:2375"] {
            let err = transport(host, &vars(&[("HOME", "/root")]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("refusing a plain-HTTP engine")
                    && err.contains("DOCKER_TLS_VERIFY=1")
                    && err.contains("DOCKER_CERT_PATH"),
                "{err}"
            );
        }
        assert_eq!(
            transport("unix:///var/run/docker.sock", &vars(&[])).unwrap(),
            Transport::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            transport("ssh://deploy@10.0.0.5:2222", &vars(&[])).unwrap(),
            Transport::Ssh("ssh://deploy@10.0.0.5:2222".into())
        );
        let err = transport("ssh://root@host/var/run/docker.sock", &vars(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssh://[user@]host[:port]"), "{err}");
    }

    #[test]
    fn tcp_with_tls_material_goes_over_tls_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_str().unwrap();
        let env = vars(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", certs)]);
        let err = transport("tcp://10.0.0.5:2376", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        assert_eq!(
            transport("tcp://10.0.0.5:2376", &env).unwrap(),
            Transport::Tls {
                address: "tcp://10.0.0.5:2376".into(),
                dir: dir.path().to_path_buf(),
            }
        );
        // DOCKER_TLS_VERIFY alone: the docker CLI's default folder.
        let home = vars(&[("DOCKER_TLS_VERIFY", "1"), ("HOME", "/nonexistent-home")]);
        let err = transport("tcp://h:2376", &home).unwrap_err().to_string();
        assert!(err.contains("/nonexistent-home/.docker/ca.pem"), "{err}");
    }

    /// The TLS client builds with this binary's one crypto provider, and an
    /// engine that does not answer is an error, not a panic.
    #[tokio::test]
    async fn the_tls_client_builds_and_fails_cleanly_where_nothing_listens() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        let docker = client(Transport::Tls {
            address: "tcp://127.0.0.1:1".into(),
            dir: dir.path().to_path_buf(),
        })
        .unwrap();
        assert!(docker.ping().await.is_err());
    }
}
