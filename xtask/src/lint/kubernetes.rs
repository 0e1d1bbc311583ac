//! Kubernetes manifests, checked with exactly the rendering and typed
//! schemas the Kubernetes target deploys with (`targets::kubernetes::kustomize`),
//! and one rule of this project: no Ingress routes the app's internal
//! endpoints (`/metrics`, `/health/detailed`) to the internet. The app
//! serves them on its one port, for Prometheus and operators inside the
//! cluster; an Ingress lists the public paths instead of `/`.
use std::path::Path;

use anyhow::{bail, Result};
use serde_json::Value;

pub use crate::targets::kubernetes::kustomize::{
    check_documents, check_object, render, unknown_fields,
};

/// The app's paths that must never be routed from outside the cluster.
pub const INTERNAL_PATHS: [&str; 2] = ["/metrics", "/health/detailed"];

pub fn check_kustomization(dir: &Path) -> Result<()> {
    let objects = render(dir)?;
    let problems: Vec<String> = objects.iter().flat_map(internal_routes).collect();
    if !problems.is_empty() {
        bail!("{}: {}", dir.display(), problems.join("; "));
    }
    Ok(())
}

/// A manifest outside any kustomization (the secret template).
pub fn check_manifest_file(file: &Path) -> Result<()> {
    check_documents(file, &super::read(file)?)
}

/// Each path of an Ingress that would route an internal endpoint.
pub fn internal_routes(object: &Value) -> Vec<String> {
    if object["kind"] != "Ingress" {
        return vec![];
    }
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    let rules = object["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut problems = vec![];
    for path in rules
        .iter()
        .flat_map(|r| r["http"]["paths"].as_array().cloned().unwrap_or_default())
    {
        let (Some(rule), kind) = (path["path"].as_str(), path["pathType"].as_str()) else {
            continue;
        };
        for internal in INTERNAL_PATHS {
            if routes(rule, kind.unwrap_or("Prefix"), internal) {
                problems.push(format!(
                    "Ingress {name} routes {internal} to the internet (path {rule:?}, pathType {}): list the public paths instead (see infrastructure/kubernetes/base/ingress.yaml)",
                    kind.unwrap_or("Prefix")
                ));
            }
        }
    }
    problems
}

/// Whether an Ingress path of `kind` matches `request`, as Kubernetes
/// defines it: Exact is equality; Prefix (and, conservatively,
/// ImplementationSpecific) matches whole path elements.
fn routes(rule: &str, kind: &str, request: &str) -> bool {
    if kind == "Exact" {
        return rule == request;
    }
    let elements = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (rule, request) = (elements(rule), elements(request));
    request.starts_with(&rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(paths: &[(&str, &str)]) -> Value {
        let paths: Vec<Value> = paths
            .iter()
            .map(|(p, k)| serde_json::json!({"path": p, "pathType": k}))
            .collect();
        serde_json::json!({"kind": "Ingress", "metadata": {"name": "app"},
            "spec": {"rules": [{"http": {"paths": paths}}]}})
    }

    #[test]
    fn a_catch_all_or_covering_prefix_is_named_and_public_paths_pass() {
        let everything = internal_routes(&ingress(&[("/", "Prefix")]));
        assert_eq!(everything.len(), 2, "{everything:?}");
        assert!(everything[0].contains("routes /metrics"));
        let health = internal_routes(&ingress(&[("/health", "Prefix")]));
        assert_eq!(health.len(), 1);
        assert!(health[0].contains("/health/detailed"));
        let public = ingress(&[
            ("/items", "Prefix"),
            ("/version", "Exact"),
            ("/health", "Exact"),
            ("/metricsfoo", "Prefix"),
        ]);
        assert!(internal_routes(&public).is_empty());
    }
}
