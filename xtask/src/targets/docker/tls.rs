//! The balancer's TLS certificate on the deploying machine: made once per
//! environment, or adopted from the running balancer, and kept where every
//! later command (status, the tests' clients) finds it to trust it.
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::DockerTarget;
use crate::haproxy;
use crate::targets::Target;

/// The balancer's TLS files live on the deploying machine, outside any
/// checkout, so every runner on it finds the same ones.
pub fn runtime_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/xtask")
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(dir).join("xtask")
    } else {
        PathBuf::from(format!("/tmp/xtask-{}", nix::unistd::geteuid()))
    }
}

/// The certificate blocks of a PEM that also holds the key.
fn certificate_of(pem: &[u8]) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).ok()?;
    let last = text.rfind(END)? + END.len();
    Some(format!("{}\n", &text[..last]))
}

impl DockerTarget {
    pub(crate) fn cert_path(&self) -> PathBuf {
        self.runtime_dir.join("tls").join("cert.pem")
    }

    /// The balancer's certificate, for a client to trust.
    pub(crate) fn trusted_cert(&self) -> Result<reqwest::Certificate> {
        let pem = std::fs::read(self.cert_path()).with_context(|| {
            format!(
                "reading the balancer's certificate {} (made by the first deploy from this machine)",
                self.cert_path().display()
            )
        })?;
        reqwest::Certificate::from_pem(&pem).context("parsing the balancer's certificate")
    }

    /// The certificate and the PEM (certificate and key) the balancer serves:
    /// the running balancer's (see `adopt_served_pem`), else made once per
    /// environment on this machine and read back, so the balancer's
    /// fingerprint stays the same from one command to the next.
    pub(super) fn pem(&self) -> Result<Vec<u8>> {
        let pem_path = self.pem_path();
        if let (Ok(pem), true) = (std::fs::read(&pem_path), self.cert_path().is_file()) {
            return Ok(pem);
        }
        let (_, pem) = haproxy::dev_pem_for(&[
            self.public_host.clone(),
            self.balancer_config.publish_address().to_string(),
        ])?;
        self.store_pem(&pem)?;
        Ok(pem)
    }

    fn pem_path(&self) -> PathBuf {
        self.runtime_dir.join("tls").join("balancer.pem")
    }

    /// The target is the truth, not this machine: a fresh CI runner (or one
    /// whose runtime folder was cleared) takes the certificate the running
    /// balancer serves, so it trusts it and a deploy keeps the balancer
    /// rather than replacing it for a certificate of its own.
    pub(super) async fn adopt_served_pem(&self) -> Result<()> {
        let Some(served) = haproxy::served_pem(&self.docker, &self.scope).await? else {
            return Ok(());
        };
        if std::fs::read(self.pem_path()).ok().as_deref() == Some(served.as_slice())
            && self.cert_path().is_file()
        {
            return Ok(());
        }
        self.store_pem(&served)
    }

    /// Writes the PEM (mode 0600: it holds the key) and its certificate
    /// alone, for clients to trust.
    fn store_pem(&self, pem: &[u8]) -> Result<()> {
        let dir = self.runtime_dir.join("tls");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pem_path = self.pem_path();
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pem_path)
                .with_context(|| format!("writing {}", pem_path.display()))?;
            std::io::Write::write_all(&mut file, pem)
                .with_context(|| format!("writing {}", pem_path.display()))?;
        }
        let cert = certificate_of(pem).with_context(|| {
            format!(
                "the balancer's PEM has no certificate ({})",
                pem_path.display()
            )
        })?;
        std::fs::write(self.cert_path(), cert)
            .with_context(|| format!("writing {}", self.cert_path().display()))
    }
}

/// A client that trusts the balancer certificate of each of `targets` (a
/// fleet's hosts, a swarm's balancer nodes).
pub fn client_trusting<'a>(
    targets: impl Iterator<Item = &'a DockerTarget>,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    for target in targets {
        let cert = target
            .trusted_cert()
            .with_context(|| format!("the balancer at {}", target.public_url()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().context("building the public client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_of_a_pem_leaves_the_key_out() {
        let (cert, pem) = haproxy::dev_pem().unwrap();
        let found = certificate_of(&pem).unwrap();
        assert_eq!(found.trim(), cert.trim());
        assert!(!found.contains("PRIVATE KEY"));
        assert!(certificate_of(b"-----BEGIN PRIVATE KEY-----\n").is_none());
    }
}
