//! Renders `infrastructure/nginx/nginx.conf.template` into a config nginx can
//! run. Pure (settings in, text out) so the deploy engine can put nginx in
//! front of whatever app instances it started, and lint can check the result.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// The template this checkout ships; `render` uses it.
pub const TEMPLATE: &str = include_str!("../../infrastructure/nginx/nginx.conf.template");

/// Where the template lives, for messages and for lint.
pub fn template_path() -> PathBuf {
    crate::workspace::root().join("infrastructure/nginx/nginx.conf.template")
}

#[derive(Debug, Clone)]
pub struct NginxSettings {
    /// `user` for worker processes; only meaningful when nginx starts as root.
    pub user: Option<String>,
    /// pid file and temp folders.
    pub runtime_dir: PathBuf,
    pub log_dir: PathBuf,
    /// `listen` values: `80`, `127.0.0.1:8080`, `[::]:443`.
    pub http_listen: String,
    pub https_listen: String,
    /// The HTTPS port clients see, for the redirect (443 is left out of URLs).
    pub https_public_port: u16,
    pub server_name: String,
    /// `host:port` or `unix:/path` of every app instance (or traffic slot).
    pub upstreams: Vec<String>,
    /// Idle connections to the app kept open per worker; 0 opens one per
    /// request, so a slot switch takes effect for the very next request.
    pub upstream_keepalive: u32,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Addresses or CIDR networks allowed to read `/metrics`; everyone else gets 403.
    pub metrics_allow: Vec<String>,
    /// Requests per second per client address.
    pub api_rate: u32,
    pub auth_rate: u32,
}

impl NginxSettings {
    /// Everything nginx writes goes under `dir`, listening on loopback only:
    /// for tests, lint and local runs without root.
    pub fn local(dir: &Path, http_port: u16, https_port: u16, upstreams: Vec<String>) -> Self {
        NginxSettings {
            user: root_user(),
            runtime_dir: dir.join("run"),
            log_dir: dir.join("logs"),
            http_listen: format!("127.0.0.1:{http_port}"),
            https_listen: format!("127.0.0.1:{https_port}"),
            https_public_port: https_port,
            server_name: "localhost".into(),
            upstreams,
            upstream_keepalive: 32,
            cert_path: dir.join("tls/cert.pem"),
            key_path: dir.join("tls/key.pem"),
            metrics_allow: vec!["127.0.0.1".into(), "10.0.0.0/8".into()],
            api_rate: 100,
            auth_rate: 5,
        }
    }

    /// Creates the folders nginx expects to exist before it starts.
    pub fn create_dirs(&self) -> Result<()> {
        for dir in [&self.runtime_dir, &self.log_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Started as root, nginx would run workers as `nobody`, who cannot enter a
/// private temp folder; keep them as the current user instead.
fn root_user() -> Option<String> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return None;
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
}

pub fn render(settings: &NginxSettings) -> Result<String> {
    render_template(TEMPLATE, settings)
}

/// Fills every `{{name}}`; an unknown name or a value that could inject
/// nginx syntax is an error naming the setting.
pub fn render_template(template: &str, s: &NginxSettings) -> Result<String> {
    if s.upstreams.is_empty() {
        bail!("nginx settings: `upstreams` is empty; nginx needs at least one app instance");
    }
    if s.api_rate == 0 || s.auth_rate == 0 {
        bail!("nginx settings: `api_rate` and `auth_rate` must be above 0");
    }
    for (field, value) in [
        ("http_listen", s.http_listen.as_str()),
        ("https_listen", s.https_listen.as_str()),
        ("server_name", s.server_name.as_str()),
    ] {
        plain(field, value)?;
    }
    for (field, path) in [
        ("runtime_dir", &s.runtime_dir),
        ("log_dir", &s.log_dir),
        ("cert_path", &s.cert_path),
        ("key_path", &s.key_path),
    ] {
        plain(field, &path.to_string_lossy())?;
    }
    let mut upstreams = String::new();
    for server in &s.upstreams {
        plain("upstreams", server)?;
        let unix_socket = server
            .strip_prefix("unix:")
            .is_some_and(|p| p.starts_with('/'));
        if !unix_socket
            && server
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            bail!("nginx settings: `upstreams` entry `{server}` is not host:port or unix:/path");
        }
        // Three failures in 10s take an instance out for 10s; the rest carry on.
        upstreams.push_str(&format!(
            "        server {server} max_fails=3 fail_timeout=10s;\n"
        ));
    }
    let mut allow = String::new();
    for network in &s.metrics_allow {
        let address = network.split_once('/').map_or(network.as_str(), |(a, _)| a);
        let prefix_ok = network
            .split_once('/')
            .is_none_or(|(_, p)| p.parse::<u8>().is_ok());
        if address.parse::<IpAddr>().is_err() || !prefix_ok {
            bail!("nginx settings: `metrics_allow` entry `{network}` is not an IP address or CIDR network");
        }
        allow.push_str(&format!("            allow {network};\n"));
    }
    let user = match &s.user {
        Some(u) => {
            plain("user", u)?;
            format!("user {u};")
        }
        None => String::new(),
    };
    let port_suffix = if s.https_public_port == 443 {
        String::new()
    } else {
        format!(":{}", s.https_public_port)
    };
    let keepalive = if s.upstream_keepalive == 0 {
        "        # No idle connections kept: each request connects anew.".to_owned()
    } else {
        format!(
            "        # Reused connections to the app: no handshake per request.\n        keepalive {};\n        keepalive_timeout 60s;",
            s.upstream_keepalive
        )
    };
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let values: Vec<(&str, String)> = vec![
        ("user_directive", user),
        ("runtime_dir", path(&s.runtime_dir)),
        ("log_dir", path(&s.log_dir)),
        ("http_listen", s.http_listen.clone()),
        ("https_listen", s.https_listen.clone()),
        ("https_port_suffix", port_suffix),
        ("server_name", s.server_name.clone()),
        ("upstream_servers", upstreams.trim_end().to_owned()),
        ("upstream_keepalive", keepalive),
        ("cert_path", path(&s.cert_path)),
        ("key_path", path(&s.key_path)),
        ("metrics_allow", allow.trim_end().to_owned()),
        ("api_rate", s.api_rate.to_string()),
        ("auth_rate", s.auth_rate.to_string()),
    ];
    fill(template, &values)
}

fn fill(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").with_context(|| {
            format!(
                "nginx template: `{{{{` without `}}}}` near `{}`",
                snippet(after)
            )
        })?;
        let name = after[..end].trim();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .with_context(|| format!("nginx template: unknown placeholder `{{{{{name}}}}}`"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn snippet(s: &str) -> &str {
    let end = s.char_indices().nth(30).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// A value that lands inside one nginx directive must not end it or open a block.
fn plain(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        bail!("nginx settings: `{field}` is empty");
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '#' | '"' | '\'' | '$'))
    {
        bail!("nginx settings: `{field}` value `{value}` contains `{c}`, which nginx would read as syntax");
    }
    Ok(())
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// `cert.pem`/`key.pem` (key 0600) into `dir`. Made fresh each time, never committed.
pub fn write_dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .context("generating a development TLS certificate")?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .with_context(|| format!("writing {}", key.display()))?;
    std::io::Write::write_all(&mut file, certified.signing_key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    Ok((cert, key))
}
