//! The Docker API calls the balancer needs beyond create/start: its network,
//! the upload of its files, and exec. All of them work over any transport
//! bollard speaks (local socket, SSH, TLS), which is why the runtime API is
//! reached by exec rather than by a socket or port on the engine's host.
use std::{collections::HashMap, net::IpAddr};

use anyhow::{bail, Context, Result};
use bollard::{
    exec::{StartExecOptions, StartExecResults},
    models::{EndpointSettings, ExecConfig, NetworkConnectRequest, NetworkCreateRequest},
    query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder},
    Docker,
};
use futures_util::StreamExt;

/// The user-defined bridge network the balancer and the instances share,
/// created (labelled with `labels`) if missing. Instances are addressed on
/// it by container IP and port: nothing of theirs needs publishing.
pub async fn ensure_network(
    docker: &Docker,
    name: &str,
    labels: &HashMap<String, String>,
) -> Result<()> {
    match docker.inspect_network(name, None).await {
        Ok(_) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting network {name}")),
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(()),
        // Another runner made it between our inspect and create.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating network {name}")),
    }
}

/// Removes the network; one that is gone is fine. Fails while containers use it.
pub async fn remove_network(docker: &Docker, name: &str) -> Result<()> {
    match docker.remove_network(name).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing network {name}")),
    }
}

/// The gateway of the network: clients that come in through a port the
/// engine publishes reach the balancer from this address (docker-proxy).
pub async fn network_gateway(docker: &Docker, name: &str) -> Result<IpAddr> {
    let inspect = docker
        .inspect_network(name, None)
        .await
        .with_context(|| format!("inspecting network {name}"))?;
    let gateway = inspect
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| c.gateway)
        .with_context(|| format!("network {name} has no gateway"))?;
    gateway
        .parse()
        .with_context(|| format!("network {name}: gateway `{gateway}` is not an address"))
}

/// Attaches a container (an instance) to the network; already attached is fine.
pub async fn connect(docker: &Docker, network: &str, container: &str) -> Result<()> {
    let request = NetworkConnectRequest {
        container: container.to_owned(),
        endpoint_config: Some(EndpointSettings::default()),
    };
    match docker.connect_network(network, request).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 403,
            message,
        }) if message.contains("already exists") => Ok(()),
        Err(e) => Err(e).with_context(|| format!("connecting {container} to {network}")),
    }
}

/// A container's address on `network`: what `set server ... addr` takes.
pub async fn address_on(docker: &Docker, container: &str, network: &str) -> Result<IpAddr> {
    let inspect = docker
        .inspect_container(container, None)
        .await
        .with_context(|| format!("inspecting {container}"))?;
    let address = inspect
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut n| n.remove(network))
        .and_then(|e| e.ip_address)
        .filter(|a| !a.is_empty())
        .with_context(|| {
            format!(
                "{container} has no address on network {network} (not running, or not attached?)"
            )
        })?;
    address
        .parse()
        .with_context(|| format!("{container}: address `{address}` on {network}"))
}

/// One file for `upload`.
pub struct Upload<'a> {
    /// Relative to the upload's target folder.
    pub path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
    pub owner: u64,
}

/// Puts files into a (created, not yet started) container through the
/// archive API: they never appear in an image layer, argv or environment.
pub async fn upload(
    docker: &Docker,
    container: &str,
    folder: &str,
    files: &[Upload<'_>],
) -> Result<()> {
    let mut tar = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.contents.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(file.owner);
        header.set_gid(file.owner);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, file.path, file.contents)
            .with_context(|| format!("packing {}", file.path))?;
    }
    let bytes = tar.into_inner().context("finishing the upload tar")?;
    let options = UploadToContainerOptionsBuilder::default()
        .path(folder)
        .build();
    docker
        .upload_to_container(container, Some(options), bollard::body_full(bytes.into()))
        .await
        .with_context(|| format!("uploading files into {container}:{folder}"))
}

/// One file out of a container (running or not) through the archive API,
/// or `None` when the container or the file does not exist.
pub async fn download(docker: &Docker, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {container}:{path}")),
        }
    }
    let mut tar = tar::Archive::new(archive.as_slice());
    let mut entries = tar
        .entries()
        .with_context(|| format!("reading the archive of {container}:{path}"))?;
    let Some(entry) = entries.next() else {
        return Ok(None);
    };
    let mut entry = entry.with_context(|| format!("reading the archive of {container}:{path}"))?;
    let mut contents = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut contents)
        .with_context(|| format!("reading {container}:{path}"))?;
    Ok(Some(contents))
}

/// What an exec printed and how it ended.
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i64>,
}

/// Creates and starts `cmd` in the container, attached to its output (and
/// to its stdin when `stdin`): what `exec` and the runtime-API session
/// share. Returns the exec's id (for its exit code) with its streams.
pub async fn start_attached(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
    stdin: bool,
) -> Result<(String, StartExecResults)> {
    let config = ExecConfig {
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .with_context(|| format!("creating an exec of {cmd:?} in {container}"))?;
    let options = StartExecOptions {
        detach: false,
        tty: false,
        // `show stat` lines are long; never let the codec cut one.
        output_capacity: Some(1 << 20),
    };
    let started = docker
        .start_exec(&created.id, Some(options))
        .await
        .with_context(|| format!("starting an exec of {cmd:?} in {container}"))?;
    Ok((created.id, started))
}

/// Runs `cmd` in the container and waits for it; output is collected whole.
pub async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
    let (id, started) = start_attached(docker, container, cmd, false).await?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(chunk) = output.next().await {
            match chunk.with_context(|| format!("reading exec output from {container}"))? {
                bollard::container::LogOutput::StdErr { message } => {
                    stderr.push_str(&String::from_utf8_lossy(&message))
                }
                other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
    } else {
        bail!("exec in {container} started detached");
    }
    let inspect = docker
        .inspect_exec(&id)
        .await
        .with_context(|| format!("inspecting the exec in {container}"))?;
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code: inspect.exit_code,
    })
}
