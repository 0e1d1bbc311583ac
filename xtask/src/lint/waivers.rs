//! `infrastructure/lint-waivers.toml`: the findings of actionlint, hadolint
//! and checkov the project keeps, each with the reason why.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::tools::Finding;

pub const WAIVERS: &str = "infrastructure/lint-waivers.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaiverFile {
    #[serde(default)]
    waiver: Vec<Waiver>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    pub tool: String,
    pub rule: String,
    pub files: Vec<String>,
    pub reason: String,
}

impl Waiver {
    pub fn matches(&self, f: &Finding) -> bool {
        self.tool == f.tool && self.rule == f.rule && self.files.contains(&f.file)
    }
}

pub fn load_waivers(root: &Path) -> Result<Vec<Waiver>> {
    let path = root.join(WAIVERS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let file: WaiverFile = toml::from_str(&super::read(&path)?).with_context(|| {
        format!(
            "{}: not a waiver file ([[waiver]] tool, rule, files, reason)",
            path.display()
        )
    })?;
    for w in &file.waiver {
        if !["actionlint", "hadolint", "checkov"].contains(&w.tool.as_str()) {
            bail!(
                "{}: waiver of {}: tool `{}` is not actionlint, hadolint or checkov",
                path.display(),
                w.rule,
                w.tool
            );
        }
        if w.reason.trim().len() < 20 {
            bail!(
                "{}: waiver of {} says too little about why: write the reason",
                path.display(),
                w.rule
            );
        }
    }
    Ok(file.waiver)
}
