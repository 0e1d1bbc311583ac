//! Compose files: `docker-compose config` (the schema and interpolation of
//! the docker-compose that runs them), then what it accepts but we do not:
//! unpinned images, dev/test ports reachable from other machines, and a
//! HAProxy image of another series than the `haproxy -c` that checks its config.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_yaml_ng::Value;

pub fn check(file: &Path) -> Result<()> {
    let path = file.to_string_lossy();
    let resolved = super::tool(file, "docker-compose", &["-f", &path, "config"])?;
    let doc: Value = serde_yaml_ng::from_str(&resolved).with_context(|| {
        format!(
            "{}: `docker-compose config` output is not YAML",
            file.display()
        )
    })?;
    let public_ports_allowed = file
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("prod"));
    let mut problems = Vec::new();
    let services = doc["services"].as_mapping().into_iter().flatten();
    for (name, service) in services {
        let name = name.as_str().unwrap_or("?");
        // An image the file itself builds is local: its tag names a build, not a release.
        match service["image"].as_str() {
            Some(image) if service["build"].is_null() => {
                if let Some(problem) = unpinned(image) {
                    problems.push(format!("service `{name}`: image `{image}` {problem}"));
                }
            }
            None if service["build"].is_null() => {
                problems.push(format!("service `{name}`: neither `image` nor `build`"))
            }
            _ => {}
        }
        if let Some(tag) = service["image"]
            .as_str()
            .and_then(|i| i.strip_prefix("haproxy:"))
        {
            let series = local_haproxy_series()?;
            let same = tag
                .strip_prefix(&series)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-']));
            if !same {
                problems.push(format!("service `{name}`: image `haproxy:{tag}` is not the HAProxy series lint checks its config with ({series}, this machine's `haproxy -v`)"));
            }
        }
        if public_ports_allowed {
            continue;
        }
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let published = match port {
                Value::String(s) => s.clone(),
                Value::Mapping(_) => port["host_ip"].as_str().unwrap_or("").to_owned() + ":",
                other => format!("{other:?}"),
            };
            if !published.starts_with("127.0.0.1:") {
                problems.push(format!(
                    "service `{name}`: port `{published}` is published on all interfaces; use 127.0.0.1:HOST:CONTAINER outside production"
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", file.display(), problems.join("; "));
    }
    Ok(())
}

/// Why an image reference is not pinned to a version, if it is not.
pub fn unpinned(image: &str) -> Option<&'static str> {
    if crate::image::pinned_digest(image).is_some() {
        return None;
    }
    // The tag follows the last `:` after the last `/` (a registry may have a port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Some("has no tag (pulls `latest`)"),
        Some((_, "latest")) => Some("uses `latest`"),
        Some((_, tag)) if !tag.chars().any(|c| c.is_ascii_digit()) => {
            Some("has a tag without a version number")
        }
        Some(_) => None,
    }
}

/// `2.6` from `HAProxy version 2.6.12-1+deb12u4 ...`.
fn local_haproxy_series() -> Result<String> {
    crate::setup::ensure(crate::setup::HAPROXY)?;
    let output = duct::cmd("haproxy", ["-v"])
        .stdout_capture()
        .stderr_null()
        .read()
        .context("running haproxy -v")?;
    let version = output
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .with_context(|| format!("no version in `haproxy -v`: {output}"))?;
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => Ok(format!("{major}.{minor}")),
        _ => bail!("`haproxy -v` version `{version}` is not major.minor.patch"),
    }
}
