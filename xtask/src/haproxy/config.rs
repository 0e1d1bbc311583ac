//! Renders `infrastructure/balancer/haproxy.cfg.template`. Pure (settings in,
//! text out) so the balancer container, lint and tests render the same file.
use std::{net::IpAddr, path::PathBuf};

use anyhow::{bail, Context, Result};

/// The template this checkout ships; `render` uses it.
pub const TEMPLATE: &str = include_str!("../../../infrastructure/balancer/haproxy.cfg.template");

/// Where the config, certificate and admin socket live inside the container.
pub const CONFIG_IN_CONTAINER: &str = "/etc/haproxy/haproxy.cfg";
pub const PEM_IN_CONTAINER: &str = "/etc/haproxy/tls/balancer.pem";
pub const SOCKET_IN_CONTAINER: &str = "/run/haproxy/admin.sock";
/// The slots' runtime state (`show servers state`), saved by `balancer-ctl`
/// after every change and loaded by HAProxy when it starts: a balancer the
/// engine restarts after a crash serves the same instances at the same
/// weights, instead of every slot disabled until `cargo xtask route`.
pub const STATE_IN_CONTAINER: &str = "/var/lib/haproxy/server-state";
/// A state file of no servers (format version 1): what the image ships, so
/// the first start loads it without a warning.
pub const EMPTY_STATE: &str = "1\n";
/// Unprivileged ports inside the container (it runs as 65532).
pub const HTTP_PORT: u16 = 8080;
pub const HTTPS_PORT: u16 = 8443;
pub const EXPORTER_PORT: u16 = 8404;
/// The backend whose slots the runtime API moves.
pub const BACKEND: &str = "app";

pub fn template_path() -> PathBuf {
    crate::workspace::root().join("infrastructure/balancer/haproxy.cfg.template")
}

#[derive(Debug, Clone, PartialEq)]
pub struct HaproxySettings {
    /// `bind` values: `:8080`, `127.0.0.1:8080`.
    pub http_bind: String,
    pub https_bind: String,
    pub exporter_bind: String,
    /// The HTTPS port clients see, for the redirect (443 is left out of URLs).
    pub https_public_port: u16,
    /// PEM with the certificate chain and the private key.
    pub cert_path: String,
    pub socket_path: String,
    /// Where HAProxy loads its slots' state from at start (None: nowhere,
    /// for the compose stacks, whose slots come from DNS).
    pub state_file: Option<String>,
    /// Addresses or CIDR networks allowed to read the app's `/metrics`;
    /// everyone else gets 403. Clients that come in through a port the
    /// engine publishes are seen with the Docker network's gateway address.
    pub metrics_allow: Vec<String>,
    /// Requests per second per client address; past it, 429.
    pub api_rate: u32,
    /// The same for `/auth/`.
    pub auth_rate: u32,
    /// Slots in the backend (`s1`..`sN`); more instances than this need a new container.
    pub max_servers: u16,
    /// What health checks GET; 2xx is healthy.
    pub health_path: String,
    pub check_interval_ms: u32,
    /// Failed checks before a server is DOWN, passed checks before it is UP again.
    pub check_fall: u32,
    pub check_rise: u32,
}

impl Default for HaproxySettings {
    /// The container's settings: its own ports and paths, the app's `/ready`.
    fn default() -> Self {
        HaproxySettings {
            http_bind: format!(":{HTTP_PORT}"),
            https_bind: format!(":{HTTPS_PORT}"),
            exporter_bind: format!(":{EXPORTER_PORT}"),
            https_public_port: 443,
            cert_path: PEM_IN_CONTAINER.into(),
            socket_path: SOCKET_IN_CONTAINER.into(),
            state_file: Some(STATE_IN_CONTAINER.into()),
            metrics_allow: vec!["127.0.0.1".into(), "10.0.0.0/8".into()],
            api_rate: 100,
            auth_rate: 5,
            max_servers: 32,
            health_path: "/ready".into(),
            check_interval_ms: 1000,
            check_fall: 2,
            check_rise: 2,
        }
    }
}

pub fn render(settings: &HaproxySettings) -> Result<String> {
    render_template(TEMPLATE, settings)
}

/// Fills every `{{name}}`; an unknown name or a value that could inject
/// HAProxy syntax is an error naming the setting.
pub fn render_template(template: &str, s: &HaproxySettings) -> Result<String> {
    let servers = Servers {
        // All disabled until the runtime API gives one an address and `state
        // ready`. At start each slot takes the address saved in the state
        // file (`init-addr last`), else 127.0.0.1:1, a placeholder nothing
        // listens on. HAProxy applies a saved address only to a server named
        // by host name, hence `unset.invalid` (a name that never resolves,
        // and is never looked up: no `libc` in `init-addr`).
        servers: format!(
            "    server-template s 1-{} unset.invalid:1 disabled check init-addr last,127.0.0.1",
            s.max_servers
        ),
        resolvers: "# No resolvers: the runtime API sets every slot's address.\n".into(),
    };
    render_with(template, s, &servers)
}

/// The template's `{{servers}}` (lines of the `app` backend) and
/// `{{resolvers}}` (top-level sections): the one part in which the deploy
/// targets' container and the compose stacks differ (see `compose`).
pub(crate) struct Servers {
    pub servers: String,
    pub resolvers: String,
}

pub(crate) fn render_with(
    template: &str,
    s: &HaproxySettings,
    servers: &Servers,
) -> Result<String> {
    for (field, value) in [
        ("http_bind", &s.http_bind),
        ("https_bind", &s.https_bind),
        ("exporter_bind", &s.exporter_bind),
    ] {
        plain(field, value)?;
        let port = value.rsplit_once(':').map(|(_, p)| p);
        if port
            .and_then(|p| p.parse::<u16>().ok())
            .is_none_or(|p| p == 0)
        {
            bail!("haproxy settings: `{field}` value `{value}` is not [address]:port");
        }
    }
    let state_file = s.state_file.as_ref();
    for (field, value) in [
        ("cert_path", &s.cert_path),
        ("socket_path", &s.socket_path),
        ("health_path", &s.health_path),
    ]
    .into_iter()
    .chain(state_file.map(|f| ("state_file", f)))
    {
        plain(field, value)?;
        if !value.starts_with('/') {
            bail!("haproxy settings: `{field}` value `{value}` must start with /");
        }
    }
    for (field, value, min) in [
        ("api_rate", s.api_rate, 1),
        ("auth_rate", s.auth_rate, 1),
        ("check_interval_ms", s.check_interval_ms, 100),
        ("check_fall", s.check_fall, 1),
        ("check_rise", s.check_rise, 1),
    ] {
        if value < min {
            bail!("haproxy settings: `{field}` is {value}; it must be at least {min}");
        }
    }
    if !(1..=1000).contains(&s.max_servers) {
        bail!(
            "haproxy settings: `max_servers` is {}; it must be 1 to 1000",
            s.max_servers
        );
    }
    if s.https_public_port == 0 {
        bail!("haproxy settings: `https_public_port` is 0");
    }
    let mut networks = Vec::new();
    for network in &s.metrics_allow {
        let (address, prefix) = match network.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (network.as_str(), None),
        };
        let max = match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => bail!("haproxy settings: `metrics_allow` entry `{network}` is not an IP address or CIDR network"),
        };
        if prefix.is_some_and(|p| p.parse::<u8>().map_or(true, |p| p > max)) {
            bail!("haproxy settings: `metrics_allow` entry `{network}` has a bad prefix length");
        }
        networks.push(network.as_str());
    }
    let metrics_rule = if networks.is_empty() {
        "    http-request deny deny_status 403 if { path /metrics }".to_owned()
    } else {
        format!(
            "    acl metrics_allowed src {}\n    http-request deny deny_status 403 if {{ path /metrics }} !metrics_allowed",
            networks.join(" ")
        )
    };
    let port_suffix = if s.https_public_port == 443 {
        String::new()
    } else {
        format!(":{}", s.https_public_port)
    };
    let values: Vec<(&str, String)> = vec![
        ("socket_path", s.socket_path.clone()),
        (
            "server_state_file",
            state_file.map_or(
                "    # No saved slot state: the slots come from DNS.".into(),
                |f| format!("    server-state-file {f}"),
            ),
        ),
        (
            "load_server_state",
            match state_file {
                Some(_) => "    load-server-state-from-file global".into(),
                None => "    # No saved slot state to load.".into(),
            },
        ),
        ("http_bind", s.http_bind.clone()),
        ("https_bind", s.https_bind.clone()),
        ("exporter_bind", s.exporter_bind.clone()),
        ("https_port_suffix", port_suffix),
        ("cert_path", s.cert_path.clone()),
        ("metrics_rule", metrics_rule),
        ("api_rate", s.api_rate.to_string()),
        ("auth_rate", s.auth_rate.to_string()),
        ("health_path", s.health_path.clone()),
        ("check_interval_ms", s.check_interval_ms.to_string()),
        ("check_fall", s.check_fall.to_string()),
        ("check_rise", s.check_rise.to_string()),
        ("max_servers", s.max_servers.to_string()),
        ("servers", servers.servers.clone()),
        ("resolvers", servers.resolvers.clone()),
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
            let near: String = after.chars().take(30).collect();
            format!("haproxy template: `{{{{` without `}}}}` near `{near}`")
        })?;
        let name = after[..end].trim();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .with_context(|| format!("haproxy template: unknown placeholder `{{{{{name}}}}}`"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value that lands inside one HAProxy keyword line must not split it into
/// more words, start a comment, or expand a variable or sample.
fn plain(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        bail!("haproxy settings: `{field}` is empty");
    }
    if let Some(c) = value.chars().find(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '#' | '"' | '\'' | '\\' | '$' | '%' | '{' | '}' | ';')
    }) {
        bail!("haproxy settings: `{field}` value `{value}` contains `{}`, which HAProxy would read as syntax", c.escape_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
