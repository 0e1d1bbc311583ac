//! Old images of an environment's repository, removed so a host that
//! deploys often does not fill its disk (kamal#403). Kept, whatever their
//! age: every image a kept release runs (the active one and every rollback
//! target), every image newer than the oldest kept release (a build not
//! deployed yet), and every image a container still uses (the engine
//! refuses those). The records are volumes and are never touched.
use std::collections::HashSet;

use anyhow::{Context, Result};
use bollard::{
    models::ImageSummary,
    query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder},
    Docker,
};
use serde::Serialize;

use crate::deploy::release::Release;

#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    /// Image references removed (or, on a dry run, that would be).
    pub removed: Vec<String>,
    /// Images of the repository kept, with why.
    pub kept: Vec<(String, String)>,
}

/// What kept releases run: image ids (Docker, and a swarm image only the
/// manager has), or the digests swarm releases are pinned to
/// (`<repo>:<tag>@sha256:…`), which name no image id.
struct KeptIds<'a> {
    ids: HashSet<&'a str>,
    digests: HashSet<&'a str>,
}

impl<'a> KeptIds<'a> {
    fn of(kept: &'a [Release]) -> Self {
        let recorded = kept.iter().map(|r| r.image_id.as_str());
        let (pinned, ids): (Vec<&str>, Vec<&str>) = recorded
            .filter(|id| !id.is_empty())
            .partition(|id| id.contains('@'));
        KeptIds {
            ids: ids.into_iter().collect(),
            digests: pinned
                .iter()
                .filter_map(|p| p.split_once('@'))
                .map(|(_, d)| d)
                .collect(),
        }
    }

    /// Whether a kept release runs `image`: by id, or by a digest the engine
    /// recorded for it on a pull or push.
    fn run(&self, image: &ImageSummary) -> bool {
        self.ids.contains(image.id.as_str())
            || image
                .repo_digests
                .iter()
                .filter_map(|d| d.split_once('@'))
                .any(|(_, digest)| self.digests.contains(digest))
    }
}

/// Removes the images of `repo` in this engine that no kept release uses.
pub async fn prune_images(
    docker: &Docker,
    repo: &str,
    kept: &[Release],
    dry_run: bool,
) -> Result<Pruned> {
    let kept_ids = KeptIds::of(kept);
    let kept_refs: HashSet<&str> = kept.iter().map(|r| r.image.as_str()).collect();
    let filters =
        std::collections::HashMap::from([("reference".to_owned(), vec![repo.to_owned()])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .with_context(|| format!("listing the images of {repo}"))?;
    // An image newer than the oldest kept release may be a build not deployed yet.
    let oldest_kept = images
        .iter()
        .filter(|i| kept_ids.run(i))
        .map(|i| i.created)
        .min();
    let mut pruned = Pruned::default();
    for image in images {
        let tags: Vec<String> = image
            .repo_tags
            .iter()
            .filter(|t| t.rsplit_once(':').is_some_and(|(r, _)| r == repo))
            .cloned()
            .collect();
        let label = tags.first().cloned().unwrap_or_else(|| image.id.clone());
        let why = if kept_ids.run(&image) || tags.iter().any(|t| kept_refs.contains(t.as_str())) {
            Some("a kept release runs it")
        } else if oldest_kept.is_none_or(|oldest| image.created > oldest) {
            Some("newer than the oldest kept release")
        } else if image.containers > 0 {
            Some("a container uses it")
        } else {
            None
        };
        if let Some(why) = why {
            pruned.kept.push((label, why.to_owned()));
            continue;
        }
        for tag in tags {
            if !dry_run {
                let options = RemoveImageOptionsBuilder::default().build();
                match docker.remove_image(&tag, Some(options), None).await {
                    Ok(_) => {}
                    // In use by a container after all (the engine is the judge): kept.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        ..
                    }) => {
                        pruned.kept.push((tag, "a container uses it".into()));
                        continue;
                    }
                    Err(e) => return Err(e).with_context(|| format!("removing image {tag}")),
                }
            }
            pruned.removed.push(tag);
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn release(image_id: &str) -> Release {
        let mut r = crate::deploy::release::History::default().begin_preview("app:v1");
        r.image_id = image_id.into();
        r
    }

    fn image(id: &str, repo_digests: &[String]) -> ImageSummary {
        ImageSummary {
            id: id.into(),
            repo_digests: repo_digests.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_release_pinned_to_a_digest_keeps_the_image_with_that_digest() {
        let kept = [
            release(&format!("reg:5000/app:v1@{D1}")),
            release("sha256:local"),
        ];
        let kept = KeptIds::of(&kept);
        assert!(kept.run(&image("sha256:pulled", &[format!("reg:5000/app@{D1}")])));
        assert!(kept.run(&image("sha256:local", &[])));
        assert!(!kept.run(&image("sha256:other", &["reg:5000/app@sha256:22".into()])));
    }
}
