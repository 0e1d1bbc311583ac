//! The Deployment's replica count when a HorizontalPodAutoscaler scales it.
//! A forced server-side apply of `spec.replicas` would put the file's number
//! back on every deploy and undo the autoscaler's work, so with an HPA
//! targeting the Deployment the apply leaves the field out and the count a
//! release waits for is the one the HPA chose. Two server-side apply rules
//! shape this:
//! - a field the applier owned and now leaves out is removed, and the API
//!   server defaults `spec.replicas` to 1: while `xtask` still owns it (it
//!   created the Deployment, or an older xtask forced it) it is first handed
//!   to a second field manager with the live value, as Kubernetes documents
//!   for moving a Deployment under an HPA;
//! - a Deployment created without the field starts at 1 pod until the HPA's
//!   next sync, so a new one is created at the HPA's `minReplicas` instead.
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::{json, Value};

use super::{api_code, manifests::FIELD_MANAGER, KubeTarget};
use crate::{deploy::release::Release, environment::Strategy};

/// Holds `spec.replicas` for the moment xtask lets go of it, until the HPA
/// writes the field (which makes the HPA its owner).
pub const HANDOVER_MANAGER: &str = "xtask-hpa-handover";

/// The `minReplicas` of a rendered HPA whose `scaleTargetRef` is Deployment
/// `name` (1 when unset, as the API server defaults it); None without one.
pub fn hpa_floor(objects: &[Value], name: &str) -> Option<i32> {
    objects
        .iter()
        .find(|o| {
            let target = &o["spec"]["scaleTargetRef"];
            o["kind"] == "HorizontalPodAutoscaler"
                && target["kind"] == "Deployment"
                && target["name"] == name
        })
        .map(|hpa| hpa["spec"]["minReplicas"].as_i64().unwrap_or(1) as i32)
}

/// What the apply does with `spec.replicas`, and so how many pods a release runs.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Replicas {
    /// Sent in the apply: no HPA, or a Deployment the HPA is not scaling yet.
    Set(i32),
    /// Left out of the apply: the HPA scales the live Deployment to this many.
    LeftToHpa(i32),
}

impl Replicas {
    pub fn count(self) -> usize {
        match self {
            Replicas::Set(n) | Replicas::LeftToHpa(n) => n.max(0) as usize,
        }
    }
}

/// `file` is `deploy.replicas`; `floor` the HPA's minReplicas, if one targets
/// the Deployment; `live` the Deployment's spec.replicas, if it exists. At 0
/// the HPA does not scale it (someone scaled it down), so the floor is set.
pub fn replicas(file: usize, floor: Option<i32>, live: Option<i32>) -> Replicas {
    match (floor, live) {
        (None, _) => Replicas::Set(file as i32),
        (Some(_), Some(n)) if n > 0 => Replicas::LeftToHpa(n),
        (Some(min), _) => Replicas::Set(min.max(1)),
    }
}

/// Whether `manager` owns the Deployment's spec.replicas through an apply:
/// leaving the field out of its next apply would then reset it to 1.
pub fn applies_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry.operation.as_deref() == Some("Apply")
                && entry
                    .fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
        })
}

/// The rendered Deployment without spec.replicas: the body that leaves it to the HPA.
pub fn without_replicas(deployment: &Value) -> Value {
    let mut out = deployment.clone();
    if let Some(spec) = out["spec"].as_object_mut() {
        spec.remove("replicas");
    }
    out
}

/// The handover apply's whole body: nothing but the live count.
pub fn handover_body(name: &str, namespace: &str, replicas: i32) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "replicas": replicas } })
}

impl KubeTarget {
    /// The replica count of a release as the cluster will run it, when an
    /// HPA scales the Deployment: what the HPA chose for the Deployment that
    /// serves now (the live colour's, on blue-green, so the new colour starts
    /// as big as the one it replaces), else its floor.
    pub(super) async fn autoscaled_replicas(&self, release: &mut Release) -> Result<()> {
        let objects = super::kustomize::render(&self.settings.overlay)?;
        let Some(floor) = hpa_floor(&objects, &self.settings.deployment) else {
            return Ok(());
        };
        let serving = match release.strategy {
            Strategy::BlueGreen => self
                .live_colour()
                .await?
                .map(|c| self.colour_deployment(&c)),
            _ => None,
        };
        let name = serving.unwrap_or_else(|| self.settings.deployment.clone());
        let live = self.live_replicas(&name).await?;
        release.replicas = replicas(release.replicas, Some(floor), live).count();
        Ok(())
    }

    async fn live_replicas(&self, name: &str) -> Result<Option<i32>> {
        let found = self
            .deployments()
            .get_opt(name)
            .await
            .with_context(|| format!("reading Deployment {name}"))?;
        Ok(found.map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1)))
    }

    /// spec.replicas to the handover manager, not forced: a conflict means
    /// the HPA changed the count since it was read, and so owns it already.
    pub(super) async fn hand_over_replicas(&self, replicas: i32) -> Result<()> {
        let name = &self.settings.deployment;
        let body = handover_body(name, &self.settings.namespace, replicas);
        let params = PatchParams::apply(HANDOVER_MANAGER);
        match self.deployments().patch(name, &params, &Patch::Apply(&body)).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!("handing spec.replicas of Deployment {name} from {FIELD_MANAGER} to {HANDOVER_MANAGER}")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(kind: &str, name: &str, min: Option<i32>) -> Value {
        let mut spec =
            json!({ "scaleTargetRef": { "apiVersion": "apps/v1", "kind": kind, "name": name } });
        if let Some(min) = min {
            spec["minReplicas"] = json!(min);
        }
        json!({ "kind": "HorizontalPodAutoscaler", "metadata": { "name": "x" }, "spec": spec })
    }

    #[test]
    fn only_an_hpa_naming_the_deployment_counts() {
        let deployment = json!({ "kind": "Deployment", "metadata": { "name": "app" } });
        assert_eq!(hpa_floor(std::slice::from_ref(&deployment), "app"), None);
        assert_eq!(
            hpa_floor(&[hpa("Deployment", "other", Some(2))], "app"),
            None
        );
        assert_eq!(
            hpa_floor(&[hpa("StatefulSet", "app", Some(2))], "app"),
            None
        );
        assert_eq!(
            hpa_floor(&[deployment, hpa("Deployment", "app", Some(3))], "app"),
            Some(3)
        );
        assert_eq!(hpa_floor(&[hpa("Deployment", "app", None)], "app"), Some(1));
    }

    #[test]
    fn the_file_count_applies_only_without_an_hpa() {
        assert_eq!(replicas(4, None, Some(7)), Replicas::Set(4));
        assert_eq!(
            replicas(4, Some(2), None),
            Replicas::Set(2),
            "created at the floor"
        );
        assert_eq!(replicas(4, Some(2), Some(5)), Replicas::LeftToHpa(5));
        assert_eq!(
            replicas(4, Some(2), Some(0)),
            Replicas::Set(2),
            "scaled to 0: not the HPA's"
        );
        assert_eq!(Replicas::LeftToHpa(5).count(), 5);
    }

    #[test]
    fn ownership_is_read_from_the_apply_entries_of_managed_fields() {
        let owned = |manager: &str, operation: &str, fields: Value| -> Deployment {
            serde_json::from_value(json!({ "metadata": { "name": "app", "managedFields": [
                { "manager": manager, "operation": operation, "apiVersion": "apps/v1",
                  "fieldsType": "FieldsV1", "fieldsV1": fields }] } }))
            .unwrap()
        };
        let replicas = json!({ "f:spec": { "f:replicas": {}, "f:template": {} } });
        let template = json!({ "f:spec": { "f:template": {} } });
        assert!(applies_replicas(
            &owned("xtask", "Apply", replicas.clone()),
            "xtask"
        ));
        assert!(!applies_replicas(
            &owned("xtask", "Apply", template),
            "xtask"
        ));
        assert!(!applies_replicas(
            &owned("kube-controller-manager", "Update", replicas.clone()),
            "xtask"
        ));
        assert!(!applies_replicas(
            &owned("xtask", "Update", replicas),
            "xtask"
        ));
    }

    #[test]
    fn the_bodies_leave_out_or_carry_only_the_count() {
        let d = json!({ "kind": "Deployment", "spec": { "replicas": 2, "template": {} } });
        assert_eq!(
            without_replicas(&d),
            json!({ "kind": "Deployment", "spec": { "template": {} } })
        );
        let h = handover_body("app", "ns", 5);
        assert_eq!(h["spec"], json!({ "replicas": 5 }));
        assert_eq!(h["metadata"]["namespace"], "ns");
    }
}
