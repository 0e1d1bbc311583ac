//! The lab's own registry, bound to the bridge address, the way production
//! hosts pull from theirs: TLS with a lab CA and htpasswd (bcrypt) auth.
//!
//! Its own instance rather than the engine's: the engine's registry listens
//! on 127.0.0.1, which lab hosts cannot reach (their loopback is their own),
//! and depending on `engine start` would tie the lab's life to the engine's.
//! TLS rather than `--insecure-registry`: the machine's engine (which builds
//! and pushes) allows plain HTTP for loopback only and cannot be restarted
//! with a new flag, while `/etc/docker/certs.d/<addr>/ca.crt` is read by every
//! engine at each push and pull.
use std::{
    net::{Ipv4Addr, TcpListener},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{plan, processes, Registry};
use crate::engine::registry::{new_credentials, random_hex, write_private, CredentialFiles};

/// Port 5000 on the bridge address when free there, else any free one.
fn choose_port(bridge: Ipv4Addr) -> Result<u16> {
    if TcpListener::bind((bridge, 5000)).is_ok() {
        return Ok(5000);
    }
    Ok(TcpListener::bind((bridge, 0))
        .with_context(|| format!("finding a free port on {bridge}"))?
        .local_addr()?
        .port())
}

/// A CA, and a server certificate for the bridge address signed by it (PEMs:
/// CA certificate, server certificate, server key).
fn certificates(bridge: Ipv4Addr) -> Result<(String, String, String)> {
    let ca_key = rcgen::KeyPair::generate().context("generating the lab CA key")?;
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).context("lab CA parameters")?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xtask lab CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the lab CA")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().context("generating the registry's TLS key")?;
    let mut params = rcgen::CertificateParams::new(vec![bridge.to_string()])
        .context("registry certificate parameters")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, bridge.to_string());
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the registry's certificate")?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

pub async fn start(lab_dir: &Path, bridge: Ipv4Addr) -> Result<Registry> {
    let dir = lab_dir.join("registry");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let address = format!("{bridge}:{}", choose_port(bridge)?);

    let (ca, cert, key) = certificates(bridge)?;
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_file, &ca).with_context(|| format!("writing {}", ca_file.display()))?;
    std::fs::write(&cert_file, &cert)
        .with_context(|| format!("writing {}", cert_file.display()))?;
    write_private(&key_file, key.as_bytes())?;
    let certs_d = plan::certs_d_dir(&address);
    std::fs::create_dir_all(&certs_d).with_context(|| format!("creating {}", certs_d.display()))?;
    let ca_crt = certs_d.join("ca.crt");
    std::fs::write(&ca_crt, &ca).with_context(|| format!("writing {}", ca_crt.display()))?;

    let CredentialFiles {
        htpasswd,
        credentials: credentials_file,
    } = new_credentials(&dir, &address)?;

    let config = dir.join("config.yml");
    let text = plan::registry_config(
        &address,
        &dir.join("data"),
        &htpasswd,
        &cert_file,
        &key_file,
        &random_hex(16)?,
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let config_arg = config.to_string_lossy().into_owned();
    let process = processes::spawn(
        &plan::Cmd::new("docker-registry", &["serve", &config_arg]),
        &dir.join("registry.log"),
        &config_arg,
    )?;
    let registry = Registry {
        address,
        ca_file,
        certs_d,
        credentials_file,
        process,
    };
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.as_bytes()).context("parsing the lab CA")?,
        )
        .timeout(Duration::from_secs(1))
        .build()
        .context("building an HTTPS client trusting the lab CA")?;
    let url = format!("https://{}/v2/", registry.address);
    // Ready means /v2/ answers 401 over TLS: serving, certificate valid, auth on.
    processes::wait_ready(
        "docker-registry",
        &registry.process,
        Duration::from_secs(20),
        || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED)
        },
    )
    .await?;
    Ok(registry)
}
