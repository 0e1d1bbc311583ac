//! Grafana dashboards: every PromQL expression parsed by promtool, by
//! writing them as recording rules into a temporary rules file. Grafana's
//! own variables are not PromQL, so they are replaced first.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A query in a dashboard and where it is, for messages.
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

pub fn check(file: &Path) -> Result<()> {
    let dashboard: Value = serde_json::from_str(&super::read(file)?)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    let queries = queries(&dashboard);
    if queries.is_empty() {
        bail!("{}: no panel has a PromQL `expr`", file.display());
    }
    let variables: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({ "record": format!("dashboard:query_{i}"), "expr": promql(&q.expr, &variables) }))
        .collect();
    let dir = tempfile::tempdir().context("creating a temp dir for promtool")?;
    let rules_file = dir.path().join("dashboard-queries.yml");
    let text =
        serde_yaml_ng::to_string(&json!({ "groups": [{ "name": "dashboard", "rules": rules }] }))?;
    std::fs::write(&rules_file, text).context("writing the dashboard queries as rules")?;
    if let Err(e) = super::tool(
        file,
        "promtool",
        &["check", "rules", &rules_file.to_string_lossy()],
    ) {
        let message = format!("{e:#}");
        // promtool names the failing rule by its record name; say which panel that is.
        let culprits: Vec<String> = queries
            .iter()
            .enumerate()
            // Quoted, so `query_1` does not also match `query_10`.
            .filter(|(i, _)| message.contains(&format!("\"dashboard:query_{i}\"")))
            .map(|(_, q)| format!("panel `{}` query {}: {}", q.panel, q.ref_id, q.expr))
            .collect();
        bail!(
            "{message}\nin {}",
            if culprits.is_empty() {
                "an unknown panel".to_owned()
            } else {
                culprits.join("\n")
            }
        );
    }
    Ok(())
}

/// Every `targets[].expr` of every panel, including panels inside rows.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    collect(dashboard["panels"].as_array(), &mut out);
    out
}

fn collect(panels: Option<&Vec<Value>>, out: &mut Vec<Query>) {
    for panel in panels.into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(Query {
                    panel: title.clone(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
        collect(panel["panels"].as_array(), out);
    }
}

/// Grafana's interval macros become a real duration; dashboard variables
/// (used inside label matchers) become a regex that matches anything.
pub fn promql(expr: &str, variables: &[String]) -> String {
    let mut out = expr.to_owned();
    for (macro_name, value) in [
        ("__rate_interval", "5m"),
        ("__interval", "1m"),
        ("__range", "1h"),
    ] {
        out = out
            .replace(&format!("${{{macro_name}}}"), value)
            .replace(&format!("${macro_name}"), value);
    }
    // Longest names first, so `$instance_group` is not cut by `$instance`.
    let mut names: Vec<&String> = variables.iter().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("[[{name}]]"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    out
}
