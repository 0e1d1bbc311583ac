//! The build context, made in memory: a generated Dockerfile, the static
//! binary, the Cargo.lock it was built from (so `scan` can read the exact
//! dependency set back out of the image itself) and its SBOM.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

/// Where the image carries the lockfile its binary was built from.
pub const LOCKFILE_IN_IMAGE: &str = "usr/share/app/Cargo.lock";
/// Where the image carries its CycloneDX SBOM (see docs/SUPPLY-CHAIN.md for why inside).
pub const SBOM_IN_IMAGE: &str = "usr/share/app/sbom.cdx.json";
/// Labels that find the SBOM in the image and check it was not swapped.
pub const SBOM_PATH_LABEL: &str = "xtask.sbom.path";
pub const SBOM_DIGEST_LABEL: &str = "xtask.sbom.sha256";
pub const APP_PORT: u16 = 8080;
/// A fixed non-root id: scratch has no /etc/passwd, and 65532 is distroless' `nonroot`.
pub const APP_USER: &str = "65532:65532";

pub struct File {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// The Dockerfile of the image `cargo xtask build` makes. Nothing in it
/// pulls: FROM scratch.
pub fn dockerfile(labels: &BTreeMap<String, String>) -> String {
    // One LABEL instruction: the classic builder runs a container per instruction.
    let label_line: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    format!(
        "FROM scratch\n\
         COPY app /app\n\
         COPY Cargo.lock /{LOCKFILE_IN_IMAGE}\n\
         COPY sbom.cdx.json /{SBOM_IN_IMAGE}\n\
         ENV PORT={APP_PORT}\n\
         USER {APP_USER}\n\
         EXPOSE {APP_PORT}\n\
         HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD [\"/app\", \"healthcheck\", \"--path\", \"/ready\"]\n\
         ENTRYPOINT [\"/app\"]\n\
         LABEL {}\n",
        label_line.join(" ")
    )
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A tar archive of the Dockerfile and files, as the Engine API's /build wants.
pub fn tar(dockerfile: &str, files: &[File]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |path: &str, contents: &[u8], mode: u32| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        // A fixed mtime keeps the context (and so the build cache) reproducible.
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, contents)
            .with_context(|| format!("adding {path} to the build context"))
    };
    append("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    for file in files {
        append(&file.path, &file.contents, file.mode)?;
    }
    builder.into_inner().context("finishing the build context")
}

/// OCI labels: where the image came from, so any running container can be
/// traced back to a commit.
pub fn oci_labels(version: &str, revision: &str, created: &str) -> BTreeMap<String, String> {
    [
        ("org.opencontainers.image.title", "app"),
        ("org.opencontainers.image.version", version),
        ("org.opencontainers.image.revision", revision),
        ("org.opencontainers.image.created", created),
        (
            "org.opencontainers.image.source",
            env!("CARGO_PKG_REPOSITORY"),
        ),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_holds_the_dockerfile_and_files_with_their_modes() {
        let bytes = tar(
            &dockerfile(&BTreeMap::new()),
            &[File {
                path: "app".into(),
                contents: b"bin".to_vec(),
                mode: 0o755,
            }],
        )
        .unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![("Dockerfile".to_owned(), 0o644), ("app".to_owned(), 0o755)]
        );
    }

    #[test]
    fn dockerfile_needs_no_pull_and_runs_as_non_root() {
        let labels = oci_labels("1.0.0", "abc", "2026-01-01T00:00:00Z");
        let d = dockerfile(&labels);
        assert!(
            d.contains("LABEL org.opencontainers.image.created=\"2026-01-01T00:00:00Z\" "),
            "{d}"
        );
        assert!(d.starts_with("FROM scratch\n"));
        assert!(d.contains("USER 65532:65532"));
        assert!(d.contains("HEALTHCHECK"));
    }
}
