//! The digest the cluster pulled for a release, so a rollback runs that
//! image and not whatever its tag names by then. Known only once pods ran
//! it: the kubelet reports it per container as `status.containerStatuses[]
//! .imageID`. Recorded as the release's `image_id` (`<repo>@sha256:<hex>`)
//! only when every pod of the release reports the same one.
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api};

use super::{manifests::RELEASE_LABEL, KubeTarget};

/// `repo@sha256:<64 hex>` from an imageID as runtimes report it
/// (`docker-pullable://repo@sha256:…` under dockershim, `repo@sha256:…`
/// under containerd). A bare `sha256:…` (or `docker://sha256:…`) is None:
/// it is what a runtime reports for an image it did not pull by reference,
/// and may be the image's config id, which no registry serves.
pub fn digest_reference(image_id: &str) -> Option<String> {
    let reference = image_id.split_once("://").map_or(image_id, |(_, r)| r);
    let (repo, hex) = crate::image::pinned_digest(reference)?;
    Some(format!("{repo}@sha256:{}", hex.to_ascii_lowercase()))
}

/// The one digest reference all `pods` run in their first container (the
/// one a release sets the image of); None if any has none yet, or they differ.
pub fn agreed(pods: &[Pod]) -> Option<String> {
    let mut found = pods.iter().map(|pod| {
        let name = &pod.spec.as_ref()?.containers.first()?.name;
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let status = statuses.iter().find(|s| s.name == *name)?;
        digest_reference(&status.image_id)
    });
    let first = found.next()??;
    found.all(|d| d.as_ref() == Some(&first)).then_some(first)
}

impl KubeTarget {
    /// The digest reference the pods of `release` run, if they agree on one.
    pub(super) async fn pulled_digest(&self, release: &str) -> Result<Option<String>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!("{RELEASE_LABEL}={release}")))
            .await
            .with_context(|| format!("listing the pods of {release} (the image they pulled)"))?;
        Ok(agreed(&list.items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4b7ef1e5c9e2a5f3e3f0a3a8f5d1c2b4a6e8d0c2b4a6e8d0c2b4a6e8d0c2b4a6";

    #[test]
    fn digest_references_are_taken_from_every_runtime_form() {
        let pinned = format!("reg:5000/app@sha256:{HEX}");
        assert_eq!(digest_reference(&pinned), Some(pinned.clone()));
        assert_eq!(
            digest_reference(&format!("docker-pullable://reg:5000/app@sha256:{HEX}")),
            Some(pinned)
        );
        assert_eq!(digest_reference(&format!("sha256:{HEX}")), None);
        assert_eq!(digest_reference(&format!("docker://sha256:{HEX}")), None);
        assert_eq!(digest_reference("app@sha256:abc"), None, "too short");
        assert_eq!(digest_reference(&format!("@sha256:{HEX}")), None);
        assert_eq!(digest_reference(""), None, "not pulled yet");
    }

    fn pod(image_id: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "spec": { "containers": [{ "name": "app" }, { "name": "sidecar" }] },
            "status": { "containerStatuses": [
                { "name": "sidecar", "imageID": format!("proxy@sha256:{}", "0".repeat(64)),
                  "image": "proxy", "ready": true, "restartCount": 0 },
                { "name": "app", "imageID": image_id, "image": "app:1", "ready": true, "restartCount": 0 }
            ] }
        }))
        .unwrap()
    }

    #[test]
    fn a_digest_counts_only_when_every_pod_runs_it() {
        let a = format!("app@sha256:{HEX}");
        let b = format!("app@sha256:{}", "1".repeat(64));
        assert_eq!(agreed(&[pod(&a), pod(&a)]), Some(a.clone()));
        assert_eq!(agreed(&[pod(&a), pod(&b)]), None);
        assert_eq!(agreed(&[pod(&a), pod("")]), None);
        assert_eq!(agreed(&[]), None);
    }
}
