//! Blue-green on Kubernetes: the overlay's Deployment becomes two,
//! `<deployment>-blue` and `<deployment>-green`, told apart by the
//! `xtask.colour` label in their selectors. The Service selects the live
//! colour; `<service>-preview` selects the one being deployed. Traffic moves
//! in one apply of the Service; the HorizontalPodAutoscaler follows it. The
//! colour being filled is never the HPA's target, so its apply carries
//! spec.replicas: the count the HPA gave the live colour (`autoscaling`).
use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{api_code, KubeTarget};
use crate::environment::KubeSettings;

pub const COLOUR_LABEL: &str = "xtask.colour";

pub fn other(colour: &str) -> &'static str {
    if colour == "blue" {
        "green"
    } else {
        "blue"
    }
}

/// The rendered objects for `colour` being deployed while `serving` gets the
/// Service's traffic: the Deployment renamed and coloured, the Service and
/// the autoscaler on `serving`, and a preview Service on `colour`.
pub fn coloured(
    objects: &[Value],
    settings: &KubeSettings,
    colour: &str,
    serving: &str,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let mut object = object.clone();
        match kind {
            "Deployment" if name == settings.deployment => {
                object["metadata"]["name"] = json!(format!("{name}-{colour}"));
                object["spec"]["selector"]["matchLabels"][COLOUR_LABEL] = json!(colour);
                object["spec"]["template"]["metadata"]["labels"][COLOUR_LABEL] = json!(colour);
            }
            "Service" if name == settings.service => {
                let mut preview = object.clone();
                preview["metadata"]["name"] = json!(format!("{name}-preview"));
                preview["spec"]["selector"][COLOUR_LABEL] = json!(colour);
                object["spec"]["selector"][COLOUR_LABEL] = json!(serving);
                out.push(object);
                object = preview;
            }
            "HorizontalPodAutoscaler"
                if object["spec"]["scaleTargetRef"]["name"] == settings.deployment.as_str() =>
            {
                object["spec"]["scaleTargetRef"]["name"] =
                    json!(format!("{}-{serving}", settings.deployment));
            }
            _ => {}
        }
        out.push(object);
    }
    Ok(out)
}

/// What moves traffic: the Service and the autoscaler, with `serving` live.
pub fn switch_objects(
    objects: &[Value],
    settings: &KubeSettings,
    serving: &str,
) -> Result<Vec<Value>> {
    Ok(coloured(objects, settings, serving, serving)?
        .into_iter()
        .filter(|o| {
            (o["kind"] == "Service" && o["metadata"]["name"] == settings.service.as_str())
                || o["kind"] == "HorizontalPodAutoscaler"
        })
        .collect())
}

impl KubeTarget {
    pub fn colour_deployment(&self, colour: &str) -> String {
        format!("{}-{colour}", self.settings.deployment)
    }

    /// The colour the Service routes to now; None when it has no colour yet.
    pub async fn live_colour(&self) -> Result<Option<String>> {
        let services: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(self.client.clone(), &self.settings.namespace);
        let found = services
            .get_opt(&self.settings.service)
            .await
            .with_context(|| format!("reading Service {}", self.settings.service))?;
        Ok(found
            .and_then(|s| s.spec?.selector?.get(COLOUR_LABEL).cloned())
            .filter(|c| c == "blue" || c == "green"))
    }

    /// Sets a Deployment's replicas (a merge patch: the rest of its spec stays
    /// xtask's under server-side apply). A Deployment that is not there is fine.
    pub async fn scale(&self, name: &str, replicas: i32) -> Result<()> {
        let patch = kube::api::Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        match self
            .deployments()
            .patch(name, &kube::api::PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("scaling Deployment {name} to {replicas}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colouring_renames_the_deployment_and_splits_the_service() {
        let settings = KubeSettings {
            overlay: "o".into(),
            namespace: "ns".into(),
            context: None,
            deployment: "app".into(),
            service: "web".into(),
            public_url: None,
        };
        let objects = vec![
            json!({ "kind": "Deployment", "metadata": { "name": "app" },
                "spec": { "selector": { "matchLabels": { "a": "b" } }, "template": { "metadata": { "labels": { "a": "b" } } } } }),
            json!({ "kind": "Service", "metadata": { "name": "web" }, "spec": { "selector": { "a": "b" } } }),
            json!({ "kind": "HorizontalPodAutoscaler", "metadata": { "name": "app" }, "spec": { "scaleTargetRef": { "name": "app" } } }),
        ];
        let out = coloured(&objects, &settings, "green", "blue").unwrap();
        assert_eq!(out[0]["metadata"]["name"], "app-green");
        assert_eq!(
            out[0]["spec"]["selector"]["matchLabels"][COLOUR_LABEL],
            "green"
        );
        assert_eq!(out[1]["spec"]["selector"][COLOUR_LABEL], "blue");
        assert_eq!(out[2]["metadata"]["name"], "web-preview");
        assert_eq!(out[2]["spec"]["selector"][COLOUR_LABEL], "green");
        assert_eq!(out[3]["spec"]["scaleTargetRef"]["name"], "app-blue");
        let switch = switch_objects(&objects, &settings, "green").unwrap();
        assert_eq!(switch.len(), 2);
        assert_eq!(switch[0]["spec"]["selector"][COLOUR_LABEL], "green");
        assert_eq!(switch[1]["spec"]["scaleTargetRef"]["name"], "app-green");
    }
}
