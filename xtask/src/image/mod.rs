//! `cargo xtask build`: a static binary in a FROM-scratch image, built by the
//! engine from an in-memory context with bollard. Nothing is pulled.
pub mod binary;
pub mod context;
pub mod revision;
pub mod sbom;

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use bollard::{query_parameters::BuildImageOptionsBuilder, Docker};
use futures_util::StreamExt;
use serde::Serialize;

use crate::{progress::Step, workspace};

/// What was built, as `build --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    pub id: String,
    /// Full references, `repo:tag`; the first is the commit tag.
    pub tags: Vec<String>,
    pub size_bytes: i64,
    pub labels: BTreeMap<String, String>,
}

/// The image repository: `[workspace.metadata.xtask] image` in the root
/// Cargo.toml, or `xtask-app`.
pub fn default_repo() -> Result<String> {
    let path = workspace::root().join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match manifest.get("workspace").and_then(|w| w.get("metadata")).and_then(|m| m.get("xtask")).and_then(|x| x.get("image")) {
        None => Ok("xtask-app".to_owned()),
        Some(toml::Value::String(repo)) if is_valid_repo(repo) => Ok(repo.clone()),
        Some(other) => bail!(
            "{}: [workspace.metadata.xtask] image = {other}: expected a lowercase repository name such as \"my-service\"",
            path.display()
        ),
    }
}

pub fn is_valid_repo(repo: &str) -> bool {
    !repo.is_empty()
        && repo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        && !repo.starts_with(['.', '-', '/'])
}

pub fn is_valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !tag.starts_with(['.', '-'])
}

#[derive(Default)]
pub struct BuildRequest {
    pub repo: String,
    pub extra_tags: Vec<String>,
    pub quiet: bool,
    /// A separate cargo target folder (benchmarks measure cold builds with one).
    pub target_dir: Option<std::path::PathBuf>,
    /// Ignore the engine's layer cache.
    pub no_cache: bool,
    /// Also write the image's SBOM (the one it carries) to this file.
    pub sbom_out: Option<std::path::PathBuf>,
}

/// Compiles the app, builds the image and tags it `<repo>:<commit>` and `<repo>:<version>` (plus extras).
pub async fn build(docker: &Docker, request: &BuildRequest) -> Result<BuiltImage> {
    for tag in &request.extra_tags {
        if !is_valid_tag(tag) {
            bail!("--tag {tag}: a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -");
        }
        if tag == "latest" {
            bail!("--tag latest: `latest` says nothing about what runs; use a version or a name for the channel");
        }
    }
    let revision = revision::current()?;
    let binary_path =
        binary::build_static(&revision, request.target_dir.as_deref(), request.quiet)?;
    let binary = std::fs::read(&binary_path)
        .with_context(|| format!("reading {}", binary_path.display()))?;
    let lock_path = workspace::root().join("Cargo.lock");
    let lock_text = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("reading {}", lock_path.display()))?;
    // The image carries the lockfile and SBOM of what is compiled into the
    // binary, not of the whole workspace (xtask's own packages never ship).
    let resolved = sbom::resolve(&workspace::root(), "app", binary::TARGET)?;
    let lockfile = sbom::pruned_lockfile(&lock_text, &resolved)
        .with_context(|| format!("cutting {} down to the app's packages", lock_path.display()))?;
    let version = env!("CARGO_PKG_VERSION");
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let binary_sha256 = sbom::sha256_hex(&binary);
    let checksums = sbom::checksums(&lock_text)?;
    let document = sbom::cyclonedx(
        &resolved,
        &sbom::Subject {
            binary_sha256: &binary_sha256,
            target: binary::TARGET,
            revision: &revision.full(),
            created: &created,
            checksums: &checksums,
        },
    );
    let sbom_bytes = serde_json::to_vec_pretty(&document).context("serializing the SBOM")?;
    if let Some(path) = &request.sbom_out {
        std::fs::write(path, &sbom_bytes)
            .with_context(|| format!("--sbom {}: writing the SBOM", path.display()))?;
    }
    let mut labels = context::oci_labels(version, &revision.full(), &created);
    labels.insert(
        context::SBOM_PATH_LABEL.into(),
        format!("/{}", context::SBOM_IN_IMAGE),
    );
    labels.insert(
        context::SBOM_DIGEST_LABEL.into(),
        sbom::sha256_hex(&sbom_bytes),
    );
    // The schema its migrations go up to, for schema-aware rollbacks.
    labels.extend(crate::deploy::schema::labels_for(
        &crate::workspace::root().join("app/migrations"),
    )?);
    let files = [
        context::File {
            path: "app".into(),
            contents: binary,
            mode: 0o755,
        },
        context::File {
            path: "Cargo.lock".into(),
            contents: lockfile.into_bytes(),
            mode: 0o644,
        },
        context::File {
            path: "sbom.cdx.json".into(),
            contents: sbom_bytes,
            mode: 0o644,
        },
    ];
    let tar = context::tar(&context::dockerfile(&labels), &files)?;
    let mut tags = vec![revision.tag(), version.to_owned()];
    tags.extend(request.extra_tags.iter().cloned());
    let refs: Vec<String> = tags
        .iter()
        .map(|t| format!("{}:{t}", request.repo))
        .collect();
    build_context_with(docker, tar, &refs, request.quiet, request.no_cache).await
}

/// Sends a tar context to the engine and tags the result with every reference.
pub async fn build_context(
    docker: &Docker,
    tar: Vec<u8>,
    refs: &[String],
    quiet: bool,
) -> Result<BuiltImage> {
    build_context_with(docker, tar, refs, quiet, false).await
}

async fn build_context_with(
    docker: &Docker,
    tar: Vec<u8>,
    refs: &[String],
    quiet: bool,
    no_cache: bool,
) -> Result<BuiltImage> {
    let first = refs.first().context("an image needs at least one tag")?;
    let step = Step::start("image build", quiet);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(first)
        .rm(true)
        .forcerm(true)
        .nocache(no_cache)
        .build();
    let body = bollard::body_full(tar.into());
    let mut stream = docker.build_image(options, None, Some(body));
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => {
                step.finish("FAILED");
                return Err(e).with_context(|| format!("building {first}"));
            }
        };
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            step.finish("FAILED");
            bail!("building {first}: {error}");
        }
        if let Some(line) = info.stream {
            step.line(&line);
        }
    }
    step.finish("done");
    for reference in &refs[1..] {
        tag(docker, first, reference).await?;
    }
    let inspect = docker
        .inspect_image(first)
        .await
        .with_context(|| format!("inspecting {first}"))?;
    Ok(BuiltImage {
        id: inspect.id.unwrap_or_default(),
        tags: refs.to_vec(),
        size_bytes: inspect.size.unwrap_or_default(),
        labels: inspect
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

/// Tags `source` as `target` (`repo:tag`).
pub async fn tag(docker: &Docker, source: &str, target: &str) -> Result<()> {
    let (repo, tag) = split_reference(target);
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(source, Some(options))
        .await
        .with_context(|| format!("tagging {source} as {target}"))
}

/// `host:5000/name:tag` -> (`host:5000/name`, `tag`); a missing tag is `latest`.
pub fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

/// `(name, hex)` of a reference pinned to a digest (`repo@sha256:<64 hex>`,
/// `repo:tag@sha256:…`): what a registry serves unchanged whatever its tags
/// do since. None for a tag, or for anything that only looks like a digest.
pub fn pinned_digest(reference: &str) -> Option<(&str, &str)> {
    let (name, hex) = reference.split_once("@sha256:")?;
    let is_hex = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (!name.is_empty() && is_hex).then_some((name, hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_reference_names_a_whole_digest() {
        let hex = "ab".repeat(32);
        assert_eq!(
            pinned_digest(&format!("reg:5000/app:v1@sha256:{hex}")),
            Some(("reg:5000/app:v1", hex.as_str()))
        );
        for unpinned in [
            "app:v1",
            "sha256:abc",
            "app@sha256:abc",
            &format!("@sha256:{hex}"),
        ] {
            assert_eq!(pinned_digest(unpinned), None, "{unpinned}");
        }
    }

    #[test]
    fn references_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_reference("127.0.0.1:5000/app:abc"),
            ("127.0.0.1:5000/app", "abc")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(split_reference("app:1.0"), ("app", "1.0"));
    }

    #[test]
    fn tags_and_repos_are_validated() {
        assert!(is_valid_tag("v1.2.3_rc-1"));
        assert!(!is_valid_tag("-x") && !is_valid_tag("a/b") && !is_valid_tag(""));
        assert!(is_valid_repo("registry.example.com:5000/team/app"));
        assert!(!is_valid_repo("App"));
    }
}
