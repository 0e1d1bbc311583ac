//! The balancer image: FROM scratch with Debian's /usr/sbin/haproxy, exactly
//! the shared libraries `ldd` lists (and the dynamic loader), and the static
//! `balancer-ctl`. Nothing is pulled; nothing secret is in a layer (the
//! config and the certificate are uploaded into the container before start).
//! The tag carries HAProxy's version and a hash of every input, so the image
//! is rebuilt only when one of them changes.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::{image, setup, workspace};

pub const REPO: &str = "xtask-balancer";
const HAPROXY: &str = "/usr/sbin/haproxy";
pub const CTL_IN_IMAGE: &str = "/usr/local/bin/balancer-ctl";
/// The non-root user HAProxy runs as (distroless' `nonroot`; scratch has no passwd).
pub const UID: u64 = 65532;

/// Builds the image unless the engine already has this exact one; returns its reference.
pub async fn ensure(docker: &Docker, quiet: bool) -> Result<String> {
    setup::ensure(setup::HAPROXY)?;
    let ctl = build_ctl(quiet)?;
    let version = haproxy_version()?;
    let rootfs = rootfs(&ctl)?;
    let dockerfile = dockerfile(&version);
    let reference = format!(
        "{REPO}:{version}-{:016x}",
        fnv1a(&[dockerfile.as_bytes(), &rootfs])
    );
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(reference);
    }
    let tar = image::context::tar(
        &dockerfile,
        &[image::context::File {
            path: "rootfs.tar".into(),
            contents: rootfs,
            mode: 0o644,
        }],
    )?;
    image::build_context(docker, tar, std::slice::from_ref(&reference), quiet).await?;
    Ok(reference)
}

/// `ensure` on the engine at `docker_host`: for `engine start`, `up` and CI,
/// which may install and build; a deploy only looks the image up (`find`).
pub async fn ensure_on(docker_host: &str, quiet: bool) -> Result<String> {
    let docker = crate::engine::connect(docker_host).await?;
    ensure(&docker, quiet)
        .await
        .context("building the balancer image")
}

/// The newest balancer image the engine has. A deploy never builds it (that
/// needs haproxy installed on this machine): none is an error naming the
/// command that builds it.
pub async fn find(docker: &Docker) -> Result<String> {
    let filters =
        std::collections::HashMap::from([("reference".to_owned(), vec![REPO.to_owned()])]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker
        .list_images(Some(options))
        .await
        .context("listing the balancer images")?;
    images
        .into_iter()
        .filter(|i| i.repo_tags.iter().any(|t| t.starts_with(&format!("{REPO}:"))))
        .max_by_key(|i| i.created)
        .and_then(|i| {
            i.repo_tags
                .into_iter()
                .find(|t| t.starts_with(&format!("{REPO}:")))
        })
        .with_context(|| {
            format!("the engine has no balancer image ({REPO}): run `cargo xtask engine start` (the local engine) or `cargo xtask hosts prepare -e ENV` (an environment's hosts), which build it from this machine's haproxy, then deploy again")
        })
}

fn dockerfile(version: &str) -> String {
    format!(
        "FROM scratch\n\
         # ADD unpacks the tar keeping its owners: the writable folders are 65532's.\n\
         ADD rootfs.tar /\n\
         USER {UID}:{UID}\n\
         EXPOSE 8080 8443 8404\n\
         # Soft stop: HAProxy finishes in-flight requests (bounded by hard-stop-after).\n\
         STOPSIGNAL SIGUSR1\n\
         ENTRYPOINT [\"{HAPROXY}\", \"-db\", \"-f\", \"{}\"]\n\
         LABEL org.opencontainers.image.title=\"balancer\" org.opencontainers.image.version=\"{version}\"\n",
        super::config::CONFIG_IN_CONTAINER
    )
}

/// `HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ...` -> `2.6.12`.
fn haproxy_version() -> Result<String> {
    let output = duct::cmd!(HAPROXY, "-v")
        .stdout_capture()
        .run()
        .context("running haproxy -v")?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).with_context(|| format!("no version in `haproxy -v`: {text}"))
}

fn parse_version(text: &str) -> Option<String> {
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    let version: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!version.is_empty()).then_some(version)
}

/// The shared objects `ldd` resolves for `binary`, loader included.
fn libraries(binary: &str) -> Result<Vec<PathBuf>> {
    let output = duct::cmd!("ldd", binary)
        .stdout_capture()
        .run()
        .with_context(|| format!("running ldd {binary}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let libs = parse_ldd(&text);
    if libs.is_empty() {
        bail!("ldd {binary} listed no libraries:\n{text}");
    }
    Ok(libs)
}

/// `libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The image's whole file system as one tar, owners and modes included.
fn rootfs(ctl: &Path) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    let add_dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, owner: u64, mode: u32| {
        let mut header = entry_header(tar::EntryType::Directory, 0, owner, mode);
        tar.append_data(&mut header, format!("{path}/"), std::io::empty())
            .with_context(|| format!("adding {path}/ to the balancer image"))
    };
    let mut files: Vec<(String, PathBuf, u32)> = vec![
        (HAPROXY.into(), PathBuf::from(HAPROXY), 0o755),
        (CTL_IN_IMAGE.into(), ctl.to_path_buf(), 0o755),
    ];
    for lib in libraries(HAPROXY)? {
        files.push((lib.to_string_lossy().into_owned(), lib, 0o755));
    }
    for (inside, _, _) in &files {
        // Parents first, each once: /lib64, /lib/x86_64-linux-gnu...
        let parts: Vec<&str> = inside.trim_start_matches('/').split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if !dirs.contains(&dir) {
                add_dir(&mut tar, &dir, 0, 0o755)?;
                dirs.push(dir);
            }
        }
    }
    for (dir, owner, mode) in [
        ("etc", 0, 0o755),
        // The config is uploaded here before start; HAProxy only reads it.
        ("etc/haproxy", UID, 0o755),
        ("etc/haproxy/tls", UID, 0o700),
        ("run", 0, 0o755),
        // The admin socket: HAProxy (65532) creates it, nobody else may enter.
        ("run/haproxy", UID, 0o700),
        ("tmp", 0, 0o1777),
        ("var", 0, 0o755),
        ("var/lib", 0, 0o755),
        // The slots' saved state (not under /run: nothing there is meant
        // to outlive a restart). The container's own layer keeps it.
        ("var/lib/haproxy", UID, 0o700),
    ] {
        if !dirs.iter().any(|d| d == dir) {
            add_dir(&mut tar, dir, owner, mode)?;
            dirs.push(dir.into());
        }
    }
    // HAProxy loads it at start; balancer-ctl (the same user) replaces it.
    let state = super::config::EMPTY_STATE.as_bytes();
    let mut header = entry_header(tar::EntryType::Regular, state.len() as u64, UID, 0o600);
    tar.append_data(
        &mut header,
        super::config::STATE_IN_CONTAINER.trim_start_matches('/'),
        state,
    )
    .context("adding the empty slot state to the balancer image")?;
    for (inside, source, mode) in files {
        // Symlinks (libcrypt.so.1 -> libcrypt.so.1.1.0) become plain files.
        let contents =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        let mut header = entry_header(tar::EntryType::Regular, contents.len() as u64, 0, mode);
        tar.append_data(
            &mut header,
            inside.trim_start_matches('/'),
            contents.as_slice(),
        )
        .with_context(|| format!("adding {inside} to the balancer image"))?;
    }
    tar.into_inner()
        .context("finishing the balancer image's rootfs tar")
}

fn entry_header(kind: tar::EntryType, size: u64, owner: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(owner);
    header.set_gid(owner);
    // A fixed mtime: same inputs, same bytes, same tag.
    header.set_mtime(0);
    header.set_cksum();
    header
}

/// FNV-1a, 64 bits: a stable fingerprint of the inputs to name the image.
/// It detects change, not tampering (every input is a local file).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&(part.len() as u64).to_le_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// `balancer-ctl` as a static binary, like the app's (see image::binary).
fn build_ctl(quiet: bool) -> Result<PathBuf> {
    let target_dir = workspace::target_dir();
    let target = image::binary::TARGET;
    let output = duct::cmd!(
        "cargo",
        "build",
        "--release",
        "--locked",
        "--package",
        "balancer-ctl",
        "--target",
        target
    )
    .dir(workspace::root())
    .env("RUSTFLAGS", "-C target-feature=+crt-static")
    .env("CARGO_TARGET_DIR", &target_dir)
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .context("running cargo build -p balancer-ctl")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("building balancer-ctl failed:\n{text}");
    }
    if !quiet && !text.trim().is_empty() {
        eprintln!("{}", text.trim_end());
    }
    let binary = target_dir.join(target).join("release").join("balancer-ctl");
    if !binary.is_file() {
        bail!("cargo reported success but {} is missing", binary.display());
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007f961498c000)\n\
            \tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f9614896000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f9613c1e000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f961498e000)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libssl.so.3",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn the_version_is_haproxys_upstream_one() {
        let text = "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\n";
        assert_eq!(parse_version(text).as_deref(), Some("2.6.12"));
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn the_fingerprint_changes_with_any_input_and_its_boundaries() {
        assert_eq!(fnv1a(&[b"ab"]), fnv1a(&[b"ab"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert!(dockerfile("2.6.12").starts_with("FROM scratch\n"));
        assert!(dockerfile("2.6.12").contains("USER 65532:65532"));
    }
}
