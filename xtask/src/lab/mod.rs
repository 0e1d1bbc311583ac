//! `cargo xtask lab up|status|down`: several Docker hosts on one machine.
//! Each lab host is a network namespace on one private bridge with its own
//! dockerd, sshd and hostname; a registry with TLS and htpasswd auth listens
//! on the bridge address. Nothing in the lab has a default route: lab
//! traffic never leaves the machine.
//!
//! Tests and targets use [`Lab::load`]: the hosts with their addresses,
//! Docker sockets, ssh endpoints, swarm roles and node ids, the ssh client
//! files and the registry with its credentials.
mod down;
mod net;
pub mod plan;
mod processes;
mod registry;
mod status;
mod swarm;
mod up;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use down::{down, Removed};
pub use status::{status, HostStatus, LabStatus};
pub use up::{up, Options};

use crate::{engine::ManagedProcess, workspace};

/// The prefix of every name the default lab makes (`xlab0`, `xlab-h1`).
pub const DEFAULT_PREFIX: &str = "xlab";

/// The default lab's folder: `target/lab/`.
pub fn default_dir() -> PathBuf {
    workspace::target_dir().join("lab")
}

/// What `lab up` made, written after every step to `<dir>/state.json` so
/// that `down` removes exactly that, even after an `up` that failed half-way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    /// `a.b.c.0/24`, chosen free of every route and address on the machine.
    pub subnet: String,
    pub bridge: String,
    /// The machine's side of the bridge: lab hosts reach the registry here.
    pub bridge_address: Ipv4Addr,
    pub swarm: bool,
    pub hosts: Vec<Host>,
    pub registry: Option<Registry>,
    pub ssh: SshClient,
    /// False until every step of `up` succeeded.
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// `h1`, `h2`, ...: also the hostname dockerd, sshd and swarm report.
    pub name: String,
    /// The network namespace, `/var/run/netns/<netns>`.
    pub netns: String,
    /// The bridge side of the host's veth (its own side is `eth0`).
    pub veth: String,
    pub address: Ipv4Addr,
    pub dir: PathBuf,
    pub docker_socket: PathBuf,
    pub dockerd: Option<ManagedProcess>,
    pub sshd: Option<ManagedProcess>,
    pub swarm: Option<SwarmMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SwarmMember {
    /// `manager` or `worker`.
    pub role: String,
    pub node_id: String,
}

impl Host {
    /// `unix://<socket>`: this host's engine from the machine itself.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket.display())
    }

    /// `ssh://root@<address>`: the same engine the way a remote runner
    /// reaches it (run with [`SshClient::path_env`] so ssh uses the lab config).
    pub fn ssh_docker_host(&self) -> String {
        format!("ssh://root@{}", self.address)
    }

    /// Every IPv4 route inside the host's namespace (a lab host has no default route).
    pub fn routes(&self) -> Result<String> {
        net::routes_in(&self.netns)
    }

    pub fn ssh_endpoint(&self) -> String {
        format!("root@{}:22", self.address)
    }
}

/// The project-owned ssh client files; the user's ~/.ssh is never written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SshClient {
    /// The private key every lab host accepts for root (ed25519, no passphrase).
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// `ssh -F` this, or `Include` it from ~/.ssh/config.
    pub config: PathBuf,
    /// Holds an `ssh` wrapper running `/usr/bin/ssh -F <config>`: put it first
    /// on PATH and `docker -H ssh://...` and bollard's ssh transport use the lab config.
    pub bin_dir: PathBuf,
}

impl SshClient {
    /// `PATH` with the wrapper first, for a child process.
    pub fn path_env(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        format!("{}:{rest}", self.bin_dir.display())
    }
}

/// The lab's registry: TLS with a lab CA (in /etc/docker/certs.d for the
/// registry's address, so every engine here trusts it), htpasswd auth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registry {
    /// `<bridge address>:<port>`: the same name for the machine and the lab hosts.
    pub address: String,
    pub ca_file: PathBuf,
    pub certs_d: PathBuf,
    pub credentials_file: PathBuf,
    pub process: ManagedProcess,
}

impl Registry {
    pub fn credentials(&self) -> Result<crate::engine::RegistryCredentials> {
        crate::engine::RegistryCredentials::load(&self.credentials_file)
    }
}

impl Lab {
    /// The default lab (`target/lab/`), or an error saying to run `lab up`.
    pub fn load() -> Result<Lab> {
        Lab::load_from(&default_dir())?.context(
            "no lab is up: run `cargo xtask lab up` (state file target/lab/state.json is missing)",
        )
    }

    /// The lab recorded in `dir`, if any.
    pub fn load_from(dir: &Path) -> Result<Option<Lab>> {
        let path = state_file(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
                format!("parsing {} (run `cargo xtask lab down`)", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub(crate) fn save(&self) -> Result<()> {
        let path = state_file(&self.dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("the lab has no host {name}"))
    }

    pub fn manager(&self) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| h.swarm.as_ref().is_some_and(|s| s.role == "manager"))
    }
}

/// `up` and `down` hold it: a `down` removing a bridge while another lab's
/// `up` picks the freed subnet must not then remove that lab's certs.d entry.
const LOCK_FILE: &str = "/run/xtask-lab.lock";

/// Held until dropped (the kernel releases it if the process dies).
pub(crate) fn machine_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {LOCK_FILE}"))
}

pub(crate) fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Root and the tools, checked before anything is made. The lab installs
/// nothing itself: `cargo xtask ci` (the test services step) does.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab needs root: it creates network namespaces, a bridge and daemons (run `cargo xtask lab ...` as root)");
    }
    crate::setup::refuse_missing(crate::setup::LAB, "the lab installs nothing itself")
}
