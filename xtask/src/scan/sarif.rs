//! SARIF 2.1.0 for GitHub code scanning: one rule per finding id, one result per finding.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ScanReport, Severity};

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub ranks security alerts by this CVSS-like number.
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "7.5",
        Severity::Medium => "5.0",
        Severity::Low => "2.0",
        Severity::Info => "0.0",
    }
}

/// Findings point at the file a fix goes in: the lockfile for dependencies,
/// the image definition for everything else.
fn artifact(source: &str) -> &'static str {
    match source {
        "rustsec" => "Cargo.lock",
        _ => "xtask/src/image/context.rs",
    }
}

pub fn render(report: &ScanReport) -> Value {
    let mut rules: BTreeMap<&str, Value> = BTreeMap::new();
    for f in &report.findings {
        rules.entry(f.id.as_str()).or_insert_with(|| {
            json!({
                "id": f.id,
                "shortDescription": { "text": f.title },
                "defaultConfiguration": { "level": level(f.severity) },
                "properties": { "security-severity": security_severity(f.severity), "tags": ["security", f.source] },
            })
        });
    }
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": { "text": format!("{} ({}): {}", f.title, f.location, f.detail) },
                "locations": [{
                    "physicalLocation": { "artifactLocation": { "uri": artifact(&f.source) } },
                    "logicalLocations": [{ "name": f.location, "kind": "resource" }],
                }],
                "properties": { "severity": f.severity.as_str(), "image": report.image },
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "cargo-xtask-scan",
                "informationUri": env!("CARGO_PKG_REPOSITORY"),
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.into_values().collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    })
}
