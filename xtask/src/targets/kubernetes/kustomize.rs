//! Kubernetes manifests: rendered by `kubectl kustomize` (what the target
//! applies, and what `lint` checks), then every object read into its
//! k8s-openapi type. Those
//! types ignore unknown fields, so each object is also written back and
//! compared: a field that does not survive the round trip is one the API
//! server would reject or silently drop (a typo like `replica:`).
use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount},
        networking::v1::{Ingress, NetworkPolicy},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
    Resource,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// Renders a kustomization and returns its objects, each checked against its
/// typed schema. The Kubernetes target deploys exactly what this returns.
pub fn render(dir: &Path) -> Result<Vec<Value>> {
    if which::which("kubectl").is_err() {
        bail!(
            "{}: kubectl is not on PATH; install kubectl (1.32, https://kubernetes.io/docs/tasks/tools/) to render kustomizations",
            dir.display()
        );
    }
    let output = duct::cmd!("kubectl", "kustomize", dir)
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("{}: running kubectl kustomize", dir.display()))?;
    if !output.status.success() {
        bail!(
            "{}: `kubectl kustomize` failed ({}):\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    parse_documents(dir, &String::from_utf8_lossy(&output.stdout))
}

/// Every YAML document in `text` is a known, fully typed Kubernetes object.
pub fn check_documents(origin: &Path, text: &str) -> Result<()> {
    parse_documents(origin, text).map(|_| ())
}

fn parse_documents(origin: &Path, text: &str) -> Result<Vec<Value>> {
    let mut problems = Vec::new();
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document)
            .with_context(|| format!("{}: not valid YAML", origin.display()))?;
        if value.is_null() {
            continue;
        }
        if let Err(e) = check_object(&value) {
            problems.push(format!("{e:#}"));
        }
        objects.push(value);
    }
    if objects.is_empty() {
        bail!("{}: renders no Kubernetes objects", origin.display());
    }
    if !problems.is_empty() {
        bail!("{}: {}", origin.display(), problems.join("; "));
    }
    Ok(objects)
}

/// One object, by apiVersion and kind, against its typed schema.
pub fn check_object(value: &Value) -> Result<()> {
    let api_version = value["apiVersion"].as_str().unwrap_or("");
    let kind = value["kind"].as_str().unwrap_or("");
    let name = value["metadata"]["name"].as_str().unwrap_or("?");
    let label = format!("{kind} {name}");
    match (api_version, kind) {
        _ if matches::<Namespace>(api_version, kind) => typed::<Namespace>(&label, value),
        _ if matches::<ServiceAccount>(api_version, kind) => {
            typed::<ServiceAccount>(&label, value)
        }
        _ if matches::<ConfigMap>(api_version, kind) => typed::<ConfigMap>(&label, value),
        _ if matches::<Secret>(api_version, kind) => typed::<Secret>(&label, value),
        _ if matches::<Service>(api_version, kind) => typed::<Service>(&label, value),
        _ if matches::<Deployment>(api_version, kind) => typed::<Deployment>(&label, value),
        _ if matches::<Ingress>(api_version, kind) => typed::<Ingress>(&label, value),
        _ if matches::<NetworkPolicy>(api_version, kind) => typed::<NetworkPolicy>(&label, value),
        _ if matches::<HorizontalPodAutoscaler>(api_version, kind) => {
            typed::<HorizontalPodAutoscaler>(&label, value)
        }
        _ if matches::<PodDisruptionBudget>(api_version, kind) => {
            typed::<PodDisruptionBudget>(&label, value)
        }
        // The deployer's Role (infrastructure/kubernetes/deployer-role.yaml), not the app's.
        _ if matches::<Role>(api_version, kind) => typed::<Role>(&label, value),
        _ if matches::<RoleBinding>(api_version, kind) => typed::<RoleBinding>(&label, value),
        _ => bail!(
            "{label}: `{api_version}` `{kind}` is not a kind this lint knows; add its k8s-openapi type to xtask/src/lint/kubernetes.rs"
        ),
    }
}

fn matches<T: Resource>(api_version: &str, kind: &str) -> bool {
    T::API_VERSION == api_version && T::KIND == kind
}

fn typed<T: DeserializeOwned + Serialize>(label: &str, value: &Value) -> Result<()> {
    let object: T = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| anyhow::anyhow!("{label}: field `{}`: {}", e.path(), e.inner()))?;
    let back = serde_json::to_value(&object).context("serialising a typed object")?;
    let mut lost = Vec::new();
    unknown_fields(value, &back, "", &mut lost);
    if !lost.is_empty() {
        bail!("{label}: unknown field(s) {}", lost.join(", "));
    }
    Ok(())
}

/// Paths present in `original` but missing from `round_trip`.
pub fn unknown_fields(original: &Value, round_trip: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    Some(other) => unknown_fields(value, other, &here, out),
                    // null is "not set" to the API server as well.
                    None if value.is_null() => {}
                    None => out.push(format!("`{here}`")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
