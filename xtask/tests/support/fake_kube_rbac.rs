//! The fake API server's authorizer: each request becomes the (verb, API
//! group, resource[/subresource]) RBAC judges, the way the API server's
//! request info names it (GET of one object = get, of a collection = list,
//! with watch=true = watch; POST create, PUT update, PATCH patch, DELETE
//! delete), and is allowed only if a rule of the deployer's Role
//! (infrastructure/kubernetes/deployer-role.yaml) grants it; otherwise the
//! answer is 403, as from a cluster with that Role bound. Namespaces,
//! resourceNames and bindings are not modelled: the Role uses neither
//! resourceNames nor wildcards, and `rbac.rs` checks that it does not.
use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::Role;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: String,
    pub group: String,
    /// `pods/log` for a subresource.
    pub resource: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (apiGroup {:?})",
            self.verb, self.resource, self.group
        )
    }
}

/// What RBAC checks for a request. `/api/v1/namespaces/NAME` is the Namespace object itself.
pub fn access(method: &str, path: &str, query: &str) -> Access {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.first() {
        Some(&"api") => ("", parts.get(2..).unwrap_or_default()),
        _ => (
            parts.get(1).copied().unwrap_or_default(),
            parts.get(3..).unwrap_or_default(),
        ),
    };
    let rest = match rest {
        ["namespaces", _, inner @ ..] if !inner.is_empty() => inner,
        _ => rest,
    };
    let resource = rest.first().copied().unwrap_or_default();
    let named = rest.len() > 1;
    let watch = query.split('&').any(|p| p == "watch=true");
    let verb = match method {
        "GET" if named => "get",
        "GET" if watch => "watch",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if named => "delete",
        "DELETE" => "deletecollection",
        other => other,
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    Access {
        verb: verb.into(),
        group: group.into(),
        resource,
    }
}

pub const ROLE_FILE: &str = "infrastructure/kubernetes/deployer-role.yaml";

/// The Role document of the deployer's manifest, as k8s-openapi reads it.
pub fn deployer_role() -> Role {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(ROLE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let role = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "Role")
        .unwrap_or_else(|| panic!("{ROLE_FILE} has no Role"));
    serde_json::from_value(role).unwrap()
}

/// Every (verb, group, resource) the Role's rules grant, one by one.
pub fn grants(role: &Role) -> BTreeSet<Access> {
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert(Access {
                        verb: verb.clone(),
                        group: group.clone(),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
    out
}
