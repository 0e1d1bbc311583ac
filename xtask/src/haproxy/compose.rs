//! The compose stacks' balancer (infrastructure/docker/docker-compose*.yml):
//! the official `haproxy` image a user pulls, running a config rendered from
//! the same template as the deploy targets' container, so TLS, the redirect,
//! rate limits, security headers and the `/metrics` allow list are the same
//! code and the same tests.
//!
//! What differs is where the servers come from. Compose has no deploy run
//! to steer slots through the runtime API; instead the backend is a
//! `server-template` whose slots Docker's embedded DNS fills (`resolvers`
//! pointing at 127.0.0.11, which every user-defined network has, and compose
//! networks are user-defined). That was chosen over one static `server app
//! app:8080` because a static name is resolved once, at start, through libc:
//! it finds one replica of `docker-compose up --scale app=3`, and keeps a
//! dead address when compose recreates the app container with a new one.
//! The resolver asks for the name every second, every replica gets a slot,
//! and health checks keep a slot out until its replica answers.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use super::config::{self, HaproxySettings, Servers};

/// Where the official image reads its config (`CMD haproxy -f
/// /usr/local/etc/haproxy/haproxy.cfg`); the compose files mount the
/// rendered folder there, so the image runs unchanged.
pub const CONFIG_DIR_IN_IMAGE: &str = "/usr/local/etc/haproxy";
/// Docker's embedded DNS server, inside every container on a user-defined network.
pub const DOCKER_DNS: &str = "127.0.0.11:53";
/// The dev stack's default HTTPS port on the host (`BALANCER_HTTPS_PORT`).
pub const DEV_HTTPS_PORT: u16 = 8443;

/// The folder `docker-compose.yml` mounts unless `BALANCER_RENDERED_DIR`
/// says otherwise (`../../target/balancer-compose` from the compose file,
/// whatever CARGO_TARGET_DIR is).
pub fn dev_dir() -> PathBuf {
    crate::workspace::root().join("target/balancer-compose")
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComposeSettings {
    /// Listeners, certificate, limits, allow list, health checks;
    /// `max_servers` is the most replicas that get a slot.
    pub haproxy: HaproxySettings,
    /// The compose service's name (Docker's DNS answers it with every
    /// replica's address), or an IP address.
    pub app_host: String,
    pub app_port: u16,
    /// `address:port` of the DNS server asked for `app_host`.
    pub nameserver: String,
}

impl ComposeSettings {
    /// `docker-compose.yml`: the certificate from the mounted folder, the
    /// redirect to the host's HTTPS port.
    pub fn dev(https_public_port: u16) -> Self {
        ComposeSettings {
            haproxy: HaproxySettings {
                https_public_port,
                cert_path: format!("{CONFIG_DIR_IN_IMAGE}/balancer.pem"),
                ..Self::base()
            },
            app_host: "app".into(),
            app_port: 8080,
            nameserver: DOCKER_DNS.into(),
        }
    }

    /// `docker-compose.prod.yml`: the certificate from the `tls_cert` secret
    /// and its key from `tls_key`, mounted as `<crt>.key` beside it, where
    /// HAProxy looks for a key the certificate file does not hold.
    pub fn prod() -> Self {
        ComposeSettings {
            haproxy: HaproxySettings {
                https_public_port: 443,
                cert_path: "/run/secrets/balancer.pem".into(),
                ..Self::base()
            },
            ..Self::dev(443)
        }
    }

    /// The container's listeners (unprivileged ports: the official image
    /// runs as `haproxy`, uid 99), and the admin socket in the folder the
    /// image gives that user.
    fn base() -> HaproxySettings {
        HaproxySettings {
            socket_path: "/var/lib/haproxy/admin.sock".into(),
            state_file: None,
            max_servers: 8,
            ..HaproxySettings::default()
        }
    }
}

pub fn render(settings: &ComposeSettings) -> Result<String> {
    render_template(config::TEMPLATE, settings)
}

/// The template with compose's servers; a bad value is an error naming its field.
pub fn render_template(template: &str, s: &ComposeSettings) -> Result<String> {
    let host = &s.app_host;
    if host.is_empty()
        || host.starts_with(['-', '.'])
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        bail!("compose balancer settings: `app_host` value `{host}` is not a DNS name or IPv4 address");
    }
    if s.app_port == 0 {
        bail!("compose balancer settings: `app_port` is 0");
    }
    if s.nameserver.parse::<SocketAddr>().is_err() {
        bail!(
            "compose balancer settings: `nameserver` value `{}` is not address:port",
            s.nameserver
        );
    }
    let servers = Servers {
        // `init-addr none`: start even while the name does not resolve yet
        // (the app is still starting); slots get addresses from the resolver.
        servers: format!(
            "    server-template s 1-{} {host}:{} check resolvers docker resolve-prefer ipv4 init-addr none",
            s.haproxy.max_servers, s.app_port
        ),
        resolvers: format!(
            "resolvers docker\n    nameserver dns {}\n    # Room for every replica's address in one answer.\n    accepted_payload_size 8192\n    # Asked every second: a new or recreated replica has a slot within\n    # about a second (measured: 0.9 s to UP, tests/haproxy/compose_dns.rs).\n    timeout resolve 1s\n    resolve_retries 3\n    timeout retry 1s\n    # While compose recreates the app, answers may fail or name no one for\n    # a moment: the last good one holds 10 s. An address gone from the\n    # answers keeps its slot 10 s (failed checks stop its traffic sooner).\n    hold valid 10s\n    hold nx 10s\n    hold obsolete 10s\n",
            s.nameserver
        ),
    };
    config::render_with(template, &s.haproxy, &servers)
}

/// Writes `haproxy.cfg` and, when given, `balancer.pem` into `dir`.
pub fn write(dir: &Path, settings: &ComposeSettings, pem: Option<&[u8]>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, render(settings)?)
        .with_context(|| format!("writing {}", config.display()))?;
    if let Some(pem) = pem {
        let file = dir.join("balancer.pem");
        std::fs::write(&file, pem).with_context(|| format!("writing {}", file.display()))?;
        // Readable by all: the container's user (uid 99) reads it through a
        // bind mount, and it is a throwaway key for localhost, made fresh
        // each time and kept under target/, never committed.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", file.display()))?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests;
