//! What a release applies: the overlay rendered by `kubectl kustomize` and
//! read into k8s-openapi types (the same code `cargo xtask lint` checks it
//! with), with the release's image, replicas, variables and labels set here
//! in Rust, then sent with server-side apply as field manager `xtask`.
use anyhow::{bail, Context, Result};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, EnvVar, Namespace, Secret, Service, ServiceAccount},
        networking::v1::{Ingress, NetworkPolicy},
        policy::v1::PodDisruptionBudget,
    },
    Resource,
};
use kube::{
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    Api,
};
use serde_json::Value;

use super::KubeTarget;
use crate::deploy::release::Release;

pub const RELEASE_LABEL: &str = "xtask.release";
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
pub const FIELD_MANAGER: &str = "xtask";

/// The overlay's objects, in kustomize's order, with the Deployment set up for `release`.
pub fn render(target: &KubeTarget, release: &Release) -> Result<Vec<Value>> {
    let s = &target.settings;
    let mut objects = super::kustomize::render(&s.overlay)?;
    let mut found_deployment = false;
    let mut found_service = false;
    for object in &mut objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if kind != "Namespace" {
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
            if namespace != s.namespace {
                bail!(
                    "{}: renders {kind} {name} in namespace {namespace:?}, but target.namespace = {:?}; make them agree",
                    s.overlay.display(),
                    s.namespace
                );
            }
        }
        if kind == "Service" && name == s.service {
            found_service = true;
        }
        if kind == "Deployment" && name == s.deployment {
            found_deployment = true;
            *object = for_release(object, release)?;
        }
    }
    if !found_deployment || !found_service {
        bail!(
            "{}: renders no Deployment {:?} (target.deployment) or no Service {:?} (target.service)",
            s.overlay.display(),
            s.deployment,
            s.service
        );
    }
    Ok(objects)
}

/// A label value from an image tag: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

fn image_tag(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let without_digest = last.split('@').next().unwrap_or(last);
    without_digest
        .split_once(':')
        .map_or("latest", |(_, tag)| tag)
}

/// The Deployment with the release's image on its first container, its variables,
/// replicas (the autoscaler's count when one scales it: `autoscaling`), and the
/// labels that tie pods to the release.
fn for_release(object: &Value, release: &Release) -> Result<Value> {
    let mut deployment: Deployment =
        serde_json::from_value(object.clone()).context("reading the rendered Deployment")?;
    let version = label_value(image_tag(&release.image));
    let labels = deployment
        .metadata
        .labels
        .get_or_insert_with(Default::default);
    labels.insert(VERSION_LABEL.into(), version.clone());
    let annotations = deployment
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    // What `kubectl rollout history` shows for the revision this makes.
    annotations.insert(
        "kubernetes.io/change-cause".into(),
        format!("xtask {} {}", release.id, release.image),
    );
    let spec = deployment
        .spec
        .as_mut()
        .context("the Deployment has no spec")?;
    spec.replicas = Some(release.replicas as i32);
    let template_meta = spec.template.metadata.get_or_insert_with(Default::default);
    let template_labels = template_meta.labels.get_or_insert_with(Default::default);
    template_labels.insert(VERSION_LABEL.into(), version);
    // Every release changes the pod template, so each one is its own ReplicaSet
    // and revision: rollback finds it, and status can name the release of each pod.
    template_labels.insert(RELEASE_LABEL.into(), release.id.clone());
    let pod = spec
        .template
        .spec
        .as_mut()
        .context("the Deployment has no pod spec")?;
    let container = pod
        .containers
        .first_mut()
        .context("the Deployment has no container")?;
    // The digest a restored release recorded, else its tag: a tag moved since
    // must not change what a rollback runs.
    container.image = Some(release.runnable_image().to_owned());
    let env = container.env.get_or_insert_with(Vec::new);
    for (name, value) in &release.env {
        let var = EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        };
        match env.iter_mut().find(|v| v.name == *name) {
            Some(existing) => *existing = var,
            None => env.push(var),
        }
    }
    Ok(serde_json::to_value(&deployment)?)
}

/// The API path of a rendered object's kind (plural, group), and whether it is namespaced.
fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    fn of<K: Resource>(namespaced: bool) -> (ApiResource, bool) {
        (
            ApiResource {
                group: K::GROUP.into(),
                version: K::VERSION.into(),
                api_version: K::API_VERSION.into(),
                kind: K::KIND.into(),
                plural: K::URL_PATH_SEGMENT.into(),
            },
            namespaced,
        )
    }
    let all = [
        of::<Namespace>(false),
        of::<ServiceAccount>(true),
        of::<ConfigMap>(true),
        of::<Secret>(true),
        of::<Service>(true),
        of::<Deployment>(true),
        of::<Ingress>(true),
        of::<NetworkPolicy>(true),
        of::<HorizontalPodAutoscaler>(true),
        of::<PodDisruptionBudget>(true),
    ];
    all.into_iter()
        .find(|(r, _)| r.api_version == api_version && r.kind == kind)
}

impl KubeTarget {
    /// Server-side apply, forced: xtask owns the fields it sets, even ones a
    /// `kubectl edit` took over since (the overlay is the source of truth).
    pub async fn apply(&self, object: &Value) -> Result<()> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (resource, namespaced) = resource_of(api_version, kind)
            .with_context(|| format!("{kind} {name}: not a kind the Kubernetes target applies"))?;
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), &self.settings.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_follow_the_label_rules() {
        assert_eq!(
            label_value(image_tag("reg:5000/app:0.1.0-abc")),
            "0.1.0-abc"
        );
        assert_eq!(image_tag("app@sha256:ff"), "latest");
        assert_eq!(label_value("-x+y-"), "x_y");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }
}
