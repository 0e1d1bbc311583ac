//! A private registry on 127.0.0.1 with htpasswd (bcrypt) auth and a
//! generated password, so push is tested against real authentication.
use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{ManagedProcess, RegistryState};
use crate::{daemon, setup};

#[derive(Clone, Serialize, Deserialize)]
pub struct RegistryCredentials {
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// Debug output must never show the password.
impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryCredentials({}@{}, password: ***)",
            self.username, self.registry
        )
    }
}

impl RegistryCredentials {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading registry credentials {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing registry credentials {}", path.display()))
    }
}

/// Written 0600: it holds a password.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("reading random bytes: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn free_loopback_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Where `new_credentials` wrote them.
pub(crate) struct CredentialFiles {
    /// What the registry checks.
    pub htpasswd: PathBuf,
    /// What pushes and pulls use.
    pub credentials: PathBuf,
}

/// A fresh user `xtask` with a random password for the registry at
/// `address`: `htpasswd` and `credentials.json` in `dir`, both readable by
/// their owner only.
pub(crate) fn new_credentials(dir: &Path, address: &str) -> Result<CredentialFiles> {
    let credentials = RegistryCredentials {
        registry: address.to_owned(),
        username: "xtask".to_owned(),
        password: random_hex(24)?,
    };
    // The lowest bcrypt cost (all the registry accepts is bcrypt): it
    // re-hashes on every request, and a random 192-bit password needs no
    // slow hash to resist guessing.
    let hash = bcrypt::hash(&credentials.password, 4).context("hashing the registry password")?;
    let files = CredentialFiles {
        htpasswd: dir.join("htpasswd"),
        credentials: dir.join("credentials.json"),
    };
    write_private(
        &files.htpasswd,
        format!("{}:{hash}\n", credentials.username).as_bytes(),
    )?;
    write_private(
        &files.credentials,
        &serde_json::to_vec_pretty(&credentials)?,
    )?;
    Ok(files)
}

pub async fn start(dir: &Path) -> Result<RegistryState> {
    setup::ensure(setup::ENGINE)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let address = format!("127.0.0.1:{}", free_loopback_port()?);
    let CredentialFiles {
        htpasswd,
        credentials: credentials_file,
    } = new_credentials(dir, &address)?;
    let config = dir.join("config.yml");
    let storage = dir.join("data");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n  secret: {}\nauth:\n  htpasswd:\n    realm: xtask-registry\n    path: {}\n",
            storage.display(),
            random_hex(16)?,
            htpasswd.display()
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;

    let log = dir.join("registry.log");
    let config_arg = config.to_string_lossy().into_owned();
    let pid = daemon::spawn("docker-registry", &["serve", &config_arg], &log)?;
    let process = ManagedProcess {
        pid,
        marker: config_arg,
        log: log.clone(),
    };
    wait_until_serving(&address, &process).await?;
    Ok(RegistryState {
        address,
        credentials_file,
        process,
    })
}

/// The registry `start` made, started again on the same address with the
/// same config, credentials and storage (after it crashed or was stopped):
/// what was pushed before is still there and pushes retried after it work.
pub(crate) async fn restart(state: &RegistryState) -> Result<RegistryState> {
    let old = &state.process;
    daemon::stop(old.pid, &old.marker, Duration::from_secs(5))?;
    let pid = daemon::spawn("docker-registry", &["serve", &old.marker], &old.log)?;
    let process = ManagedProcess { pid, ..old.clone() };
    wait_until_serving(&state.address, &process).await?;
    Ok(RegistryState {
        process,
        ..state.clone()
    })
}

/// Ready means `/v2/` answers 401: serving, with authentication on.
async fn wait_until_serving(address: &str, process: &ManagedProcess) -> Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v2/");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client
            .get(&url)
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                return Ok(());
            }
            bail!(
                "registry at {address} answered {} without credentials; expected 401",
                response.status()
            );
        }
        if !daemon::is_alive(process.pid) {
            bail!(
                "docker-registry exited during start-up:\n{}",
                daemon::log_tail(&process.log, 15)
            );
        }
        if Instant::now() > deadline {
            daemon::stop(process.pid, &process.marker, Duration::from_secs(5))?;
            bail!(
                "registry at {address} did not answer within 20s:\n{}",
                daemon::log_tail(&process.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
