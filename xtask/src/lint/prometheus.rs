//! Prometheus and Alertmanager files, checked by promtool and amtool; plus
//! a coverage rule promtool cannot express: every alert has a test in which
//! it fires and one in which it stays silent.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde_yaml_ng::Value;

pub fn check_config(file: &Path) -> Result<()> {
    super::tool(
        file,
        "promtool",
        &["check", "config", &file.to_string_lossy()],
    )
    .map(drop)
}

pub fn check_rules(file: &Path) -> Result<()> {
    super::tool(
        file,
        "promtool",
        &["check", "rules", &file.to_string_lossy()],
    )
    .map(drop)
}

pub fn check_alertmanager(file: &Path) -> Result<()> {
    super::tool(file, "amtool", &["check-config", &file.to_string_lossy()]).map(drop)
}

/// `promtool test rules`, then coverage of every alert in the tested rule files.
pub fn check_rule_tests(file: &Path) -> Result<()> {
    super::tool(
        file,
        "promtool",
        &["test", "rules", &file.to_string_lossy()],
    )?;
    let tests = yaml(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut alerts = BTreeSet::new();
    for rule_file in strings(&tests["rule_files"]) {
        alerts.extend(alert_names(&dir.join(rule_file))?);
    }
    let coverage = coverage(&tests);
    let mut problems = Vec::new();
    for alert in &alerts {
        match coverage.iter().find(|c| &c.alert == alert) {
            None => problems.push(format!("alert `{alert}` has no test")),
            Some(c) if !c.fires => {
                problems.push(format!("alert `{alert}` is never expected to fire"))
            }
            Some(c) if !c.silent => problems.push(format!(
                "alert `{alert}` has no case where it must stay silent (exp_alerts: [])"
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", file.display(), problems.join("; "));
    }
    Ok(())
}

/// Alert names defined in a rules file.
pub fn alert_names(rules: &Path) -> Result<Vec<String>> {
    let doc = yaml(rules)?;
    let groups = doc["groups"]
        .as_sequence()
        .with_context(|| format!("{}: no `groups` list", rules.display()))?;
    Ok(groups
        .iter()
        .filter_map(|g| g["rules"].as_sequence())
        .flatten()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect())
}

pub struct Coverage {
    pub alert: String,
    pub fires: bool,
    pub silent: bool,
}

/// Per alert name in `alert_rule_test`: is there a case expecting it to
/// fire, and one expecting nothing?
pub fn coverage(tests: &Value) -> Vec<Coverage> {
    let mut out: Vec<Coverage> = Vec::new();
    let cases = tests["tests"].as_sequence().into_iter().flatten();
    for case in cases
        .filter_map(|t| t["alert_rule_test"].as_sequence())
        .flatten()
    {
        let Some(alert) = case["alertname"].as_str() else {
            continue;
        };
        let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
        let index = match out.iter().position(|c| c.alert == alert) {
            Some(i) => i,
            None => {
                out.push(Coverage {
                    alert: alert.to_owned(),
                    fires: false,
                    silent: false,
                });
                out.len() - 1
            }
        };
        if expected > 0 {
            out[index].fires = true;
        } else {
            out[index].silent = true;
        }
    }
    out
}

pub fn yaml(file: &Path) -> Result<Value> {
    serde_yaml_ng::from_str(&super::read(file)?)
        .with_context(|| format!("{}: not valid YAML", file.display()))
}

fn strings(v: &Value) -> Vec<PathBuf> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(PathBuf::from))
        .collect()
}
