//! What a swarm release runs: its image pinned to the registry's manifest
//! digest, `<repo>:<tag>@sha256:…`, as `docker service create` pins it.
//! Nodes pull by reference and swarm starts tasks long after a deploy (a
//! crash, a drained node, a rollback), so a bare tag would run whatever it
//! names by then: a moved `latest`, a version pushed again.
//!
//! An image no registry has (built on the manager for a single-node swarm)
//! has no digest to pin: it runs the manager's local image id instead, which
//! no other node can pull, as it could not pull the tag either. An image
//! whose reference names a registry must be pinned: failing to ask that
//! registry fails the deploy rather than run an unpinned tag.
use anyhow::{bail, Context, Result};
use bollard::models::ImageInspect;

use super::SwarmTarget;
use crate::{deploy::release::Release, registry::registry_of};

/// `image` pinned to `digest`: its tag (`latest` when it names none) kept
/// for people, the digest for the engine, any earlier digest replaced.
pub fn pinned(image: &str, digest: &str) -> String {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    let (repo, tag) = crate::image::split_reference(name);
    format!("{repo}:{tag}@{digest}")
}

/// Whether `reference` already names a digest: nothing moves under it.
pub fn is_pinned(reference: &str) -> bool {
    crate::image::pinned_digest(reference).is_some()
}

/// The digest the local image has in `image`'s repository, from the engine's
/// record of where it was pulled from or pushed to (`RepoDigests`).
pub fn local_digest(image: &str, inspect: &ImageInspect) -> Option<String> {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    let (repo, _) = crate::image::split_reference(name);
    let wanted = normalized(repo);
    inspect
        .repo_digests
        .iter()
        .flatten()
        .filter_map(|d| d.split_once('@'))
        .find(|(r, _)| normalized(r) == wanted)
        .map(|(_, digest)| digest.to_owned())
}

/// Docker Hub's short names and long ones compare equal (`app`,
/// `docker.io/library/app`); the engine records them either way.
fn normalized(repo: &str) -> String {
    let repo = repo.trim_start_matches("docker.io/");
    match repo.contains('/') {
        true => repo.to_owned(),
        false => format!("library/{repo}"),
    }
}

impl SwarmTarget {
    /// `admit`'s image part: a rollback keeps what its release ran; a new
    /// release asks the registry for the digest its tag names now.
    pub(super) async fn pin(&self, release: &mut Release) -> Result<()> {
        if release.restores.is_some() && !release.image_id.is_empty() {
            return self.keep_recorded(release).await;
        }
        release.image_id = match is_pinned(&release.image) {
            true => release.image.clone(),
            false => self.resolve(&release.image).await?,
        };
        Ok(())
    }

    /// A restore runs the recorded pin. A release recorded before pins
    /// holds the manager's image id, which other nodes cannot pull: the
    /// digest that image has in the registry pins it, when it has one.
    async fn keep_recorded(&self, release: &mut Release) -> Result<()> {
        if is_pinned(&release.image_id) {
            return Ok(());
        }
        let Ok(inspect) = self.docker.inspect_image(&release.image_id).await else {
            bail!(
                "release {}: it ran image {} ({}), which is no longer in the manager's engine and was never pinned to a registry digest; deploy it again by reference",
                release.restores.as_deref().unwrap_or_default(),
                release.image_id,
                release.image
            );
        };
        if let Some(digest) = local_digest(&release.image, &inspect) {
            release.image_id = pinned(&release.image, &digest);
        }
        Ok(())
    }

    /// The registry's digest for `image` (with the credentials the nodes
    /// pull with), else, for an image that names no registry, the manager's
    /// local image id.
    async fn resolve(&self, image: &str) -> Result<String> {
        let auth = self.registry_auth(image)?;
        let asked = self.docker.inspect_registry_image(image, auth).await;
        let error = match asked {
            Ok(found) => match found.descriptor.digest {
                Some(digest) => return Ok(pinned(image, &digest)),
                None => anyhow::anyhow!("the engine reported no digest"),
            },
            Err(e) => anyhow::Error::new(e),
        };
        if let Some(registry) = registry_of(image) {
            return Err(error.context(format!(
                "resolving {image} to a digest at {registry}: tasks must run what was verified, not whatever the tag names when swarm starts them; push it there first"
            )));
        }
        let local = self.docker.inspect_image(image).await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "image {image}: no registry has it ({error:#}) and neither has the manager's engine: build, pull or push it first"
            ))
        })?;
        local
            .id
            .with_context(|| format!("inspecting image {image}: the engine reported no id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn a_pin_keeps_the_tag_for_people_and_adds_the_digest() {
        assert_eq!(
            pinned("127.0.0.1:5000/app:v1", D1),
            format!("127.0.0.1:5000/app:v1@{D1}")
        );
        assert_eq!(pinned("app", D1), format!("app:latest@{D1}"));
        assert_eq!(
            pinned(&format!("app:v1@{D1}"), D2),
            format!("app:v1@{D2}"),
            "an earlier digest is replaced, not stacked"
        );
        assert!(is_pinned(&pinned("app:v1", D1)));
        assert!(!is_pinned("sha256:abc"), "a local image id is no pin");
    }

    #[test]
    fn the_local_digest_is_the_one_recorded_for_the_images_repository() {
        let inspect = ImageInspect {
            repo_digests: Some(vec![
                format!("127.0.0.1:5000/other@{D2}"),
                format!("127.0.0.1:5000/app@{D1}"),
            ]),
            ..Default::default()
        };
        assert_eq!(
            local_digest("127.0.0.1:5000/app:v1", &inspect).as_deref(),
            Some(D1)
        );
        assert_eq!(local_digest("app:v1", &inspect), None);
        let hub = ImageInspect {
            repo_digests: Some(vec![format!("nginx@{D2}")]),
            ..Default::default()
        };
        assert_eq!(
            local_digest("docker.io/library/nginx:1", &hub).as_deref(),
            Some(D2)
        );
    }
}
