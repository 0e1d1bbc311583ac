//! `app healthcheck`: the probe a FROM-scratch image (no shell, no curl)
//! declares as its Docker HEALTHCHECK. Plain HTTP/1.1 GET, exit 0 on 2xx.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http_body_util::Empty;
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Target {
    pub authority: String,
    pub path: String,
}

/// Accepts `http://HOST:PORT` (with an optional path, which `--path` overrides).
pub fn target(url: &str, path: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url}: only http:// URLs can be probed"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("--url {url}: no host");
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok(Target { authority, path })
}

pub async fn probe(target: &Target, timeout: Duration) -> Result<u16> {
    tokio::time::timeout(timeout, get(target))
        .await
        .with_context(|| format!("no answer from {} within {timeout:?}", target.authority))?
}

async fn get(target: &Target) -> Result<u16> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .with_context(|| format!("connecting to {}", target.authority))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let request = Request::get(&target.path)
        .header("host", &target.authority)
        .header("user-agent", "app-healthcheck")
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {}", target.path))?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let t = target("http://127.0.0.1:8080", "/ready").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/ready")
        );
        assert_eq!(
            target("http://localhost/x", "health").unwrap().authority,
            "localhost:80"
        );
        assert!(target("https://x:1", "/").is_err());
    }
}
