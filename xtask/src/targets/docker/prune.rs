//! Old images of an environment's repository, removed so a host that
//! deploys often does not fill its disk (kamal#403). Kept, whatever their
//! age: every image a kept release runs (the active one and every rollback
//! target), every image newer than the oldest kept release (a build not
//! deployed yet), and every image a container still uses (the engine
//! refuses those). The records are volumes and are never touched.
use std::collections::HashSet;

use anyhow::{Context, Result};
use bollard::{
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

/// Removes the images of `repo` in this engine that no kept release uses.
pub async fn prune_images(
    docker: &Docker,
    repo: &str,
    kept: &[Release],
    dry_run: bool,
) -> Result<Pruned> {
    let kept_ids: HashSet<&str> = kept
        .iter()
        .map(|r| r.image_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
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
        .filter(|i| kept_ids.contains(i.id.as_str()))
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
        let why = if kept_ids.contains(image.id.as_str())
            || tags.iter().any(|t| kept_refs.contains(t.as_str()))
        {
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
