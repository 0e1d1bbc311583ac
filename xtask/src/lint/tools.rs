//! The linters users of GitHub, Docker and Kubernetes run themselves:
//! actionlint on the workflows, hadolint on the Dockerfiles, checkov on the
//! workflows, the Dockerfiles and the rendered Kubernetes overlays. They come
//! from a pinned virtualenv (`venv::LINTERS`). A finding fails lint unless
//! `infrastructure/lint-waivers.toml` waives it with a reason; a waiver that
//! matches nothing fails too, so fixed problems do not stay waived.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    waivers::{load_waivers, WAIVERS},
    Outcome,
};
use crate::{image::context, venv};

/// How findings in the Dockerfile `cargo xtask build` generates are named.
pub const GENERATED_DOCKERFILE: &str = "xtask/src/image/context.rs (generated Dockerfile)";

#[derive(Debug, Clone)]
pub struct Finding {
    pub tool: &'static str,
    pub rule: String,
    /// Repository path of the file (a Kubernetes overlay: its folder).
    pub file: String,
    pub line: Option<u64>,
    pub message: String,
}

impl Finding {
    pub fn describe(&self) -> String {
        let line = self.line.map_or(String::new(), |l| format!(":{l}"));
        format!("{}{line}: {} {}", self.file, self.rule, self.message)
    }
}

/// Files by the name findings use (a repository path) and where they are read.
type Named = Vec<(String, PathBuf)>;

/// What the tools read in the tree at `root`, by the name findings use.
struct Inputs {
    workflows: Vec<(String, PathBuf)>,
    dockerfiles: Vec<(String, PathBuf)>,
    overlays: Vec<(String, PathBuf)>,
}

fn inputs(root: &Path, scratch: &Path) -> Result<Inputs> {
    let name = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let workflows = super::files(&root.join(".github/workflows"), "", ".yml")
        .into_iter()
        .map(|p| (name(&p), p))
        .collect();
    let mut dockerfiles: Vec<(String, PathBuf)> =
        super::files(&root.join("infrastructure/docker"), "Dockerfile", "")
            .into_iter()
            .map(|p| (name(&p), p))
            .collect();
    let generated = scratch.join("generated/Dockerfile");
    std::fs::create_dir_all(generated.parent().expect("has a parent"))?;
    let labels = context::oci_labels("0.0.0", "lint", "1970-01-01T00:00:00Z");
    std::fs::write(&generated, context::dockerfile(&labels))
        .with_context(|| format!("writing {}", generated.display()))?;
    dockerfiles.push((GENERATED_DOCKERFILE.to_owned(), generated));
    let overlays = super::subdirs(&root.join("infrastructure/kubernetes/overlays"))
        .into_iter()
        .map(|p| (name(&p), p))
        .collect();
    Ok(Inputs {
        workflows,
        dockerfiles,
        overlays,
    })
}

/// One outcome per tool and file, and one for the waiver file.
pub fn check_tree(root: &Path) -> Vec<Outcome> {
    match run(root) {
        Ok(outcomes) => outcomes,
        Err(e) => vec![Outcome {
            check: "actionlint, hadolint, checkov",
            file: venv::LINTERS.requirements.into(),
            ok: false,
            error: Some(format!("{e:#}")),
        }],
    }
}

fn run(root: &Path) -> Result<Vec<Outcome>> {
    let venv = venv::LINTERS.ensure()?;
    let waivers = load_waivers(root)?;
    // No leading dot: checkov skips Kubernetes files under hidden folders.
    let scratch = tempfile::Builder::new()
        .prefix("xtask-lint-")
        .tempdir()
        .context("creating a scratch folder for lint")?;
    let inputs = inputs(root, scratch.path())?;
    let mut plan: Vec<(&'static str, Named, Result<Vec<Finding>>)> = vec![
        (
            "actionlint",
            inputs.workflows.clone(),
            actionlint(root, &venv, &inputs.workflows),
        ),
        (
            "hadolint",
            inputs.dockerfiles.clone(),
            hadolint(root, &venv, &inputs.dockerfiles),
        ),
    ];
    let checkov_inputs: Named = [&inputs.workflows, &inputs.dockerfiles, &inputs.overlays]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    plan.push((
        "checkov",
        checkov_inputs,
        checkov(&venv, scratch.path(), &inputs),
    ));
    let mut used = vec![false; waivers.len()];
    let mut outcomes = Vec::new();
    for (tool, files, result) in plan {
        let findings = match result {
            Ok(findings) => findings,
            Err(e) => {
                outcomes.push(Outcome {
                    check: tool,
                    file: "(all its files)".into(),
                    ok: false,
                    error: Some(format!("{e:#}")),
                });
                continue;
            }
        };
        // A finding on a file we did not name (a mapping gap) must fail, not vanish.
        let unknown: Vec<String> = findings
            .iter()
            .filter(|f| !files.iter().any(|(name, _)| name == &f.file))
            .map(Finding::describe)
            .collect();
        if !unknown.is_empty() {
            outcomes.push(Outcome {
                check: tool,
                file: "(unmapped files)".into(),
                ok: false,
                error: Some(format!(
                    "{tool} reported files lint did not give it:\n  {}",
                    unknown.join("\n  ")
                )),
            });
        }
        for (file, _) in &files {
            let open: Vec<String> = findings
                .iter()
                .filter(|f| &f.file == file)
                .filter(|f| match waivers.iter().position(|w| w.matches(f)) {
                    Some(i) => {
                        used[i] = true;
                        false
                    }
                    None => true,
                })
                .map(Finding::describe)
                .collect();
            outcomes.push(Outcome {
                check: tool,
                file: file.clone(),
                ok: open.is_empty(),
                error: (!open.is_empty()).then(|| {
                    format!("{file}: {} finding(s) of {tool}, fix them or waive them in {WAIVERS} with the reason:\n  {}", open.len(), open.join("\n  "))
                }),
            });
        }
    }
    let stale: Vec<String> = waivers
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(w, _)| format!("{} {} in {}", w.tool, w.rule, w.files.join(", ")))
        .collect();
    outcomes.push(Outcome {
        check: "lint waivers",
        file: WAIVERS.into(),
        ok: stale.is_empty(),
        error: (!stale.is_empty()).then(|| {
            format!(
                "{WAIVERS}: these waivers match no finding any more, remove them: {}",
                stale.join("; ")
            )
        }),
    });
    Ok(outcomes)
}

/// Runs a virtualenv program, accepting exit codes in `ok`; returns stdout.
fn output(program: &Path, args: &[String], dir: &Path, ok: &[i32]) -> Result<String> {
    let out = duct::cmd(program, args)
        .dir(dir)
        // checkov asks a web service for guidelines unless told not to.
        .env("BC_SKIP_MAPPING", "TRUE")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {}", program.display()))?;
    let code = out.status.code().unwrap_or(-1);
    if !ok.contains(&code) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "`{} {}` failed ({}):\n{}",
            program.display(),
            args.join(" "),
            out.status,
            tail.join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn actionlint(root: &Path, venv: &Path, workflows: &[(String, PathBuf)]) -> Result<Vec<Finding>> {
    let mut args: Vec<String> = vec!["-no-color".into(), "-format".into(), "{{json .}}".into()];
    let config = root.join(".github/actionlint.yaml");
    if config.exists() {
        args.extend(["-config-file".into(), config.display().to_string()]);
    }
    args.extend(workflows.iter().map(|(_, p)| p.display().to_string()));
    let text = output(&venv.join("bin/actionlint"), &args, root, &[0, 1])?;
    let names: BTreeMap<String, &String> = workflows
        .iter()
        .map(|(n, p)| (p.display().to_string(), n))
        .collect();
    let items: Vec<Value> =
        serde_json::from_str(text.trim()).context("reading actionlint's JSON")?;
    Ok(items
        .iter()
        .map(|i| Finding {
            tool: "actionlint",
            rule: i["kind"].as_str().unwrap_or("?").into(),
            file: name_of(&names, i["filepath"].as_str().unwrap_or("")),
            line: i["line"].as_u64(),
            message: i["message"].as_str().unwrap_or("").into(),
        })
        .collect())
}

fn hadolint(root: &Path, venv: &Path, dockerfiles: &[(String, PathBuf)]) -> Result<Vec<Finding>> {
    let mut args: Vec<String> = vec!["--format".into(), "json".into(), "--no-fail".into()];
    let config = root.join(".hadolint.yaml");
    if config.exists() {
        args.extend(["--config".into(), config.display().to_string()]);
    }
    args.extend(dockerfiles.iter().map(|(_, p)| p.display().to_string()));
    let text = output(&venv.join("bin/hadolint"), &args, root, &[0])?;
    let names: BTreeMap<String, &String> = dockerfiles
        .iter()
        .map(|(n, p)| (p.display().to_string(), n))
        .collect();
    let items: Vec<Value> = serde_json::from_str(text.trim()).context("reading hadolint's JSON")?;
    Ok(items
        .iter()
        .map(|i| Finding {
            tool: "hadolint",
            rule: i["code"].as_str().unwrap_or("?").into(),
            file: name_of(&names, i["file"].as_str().unwrap_or("")),
            line: i["line"].as_u64(),
            message: format!(
                "({}) {}",
                i["level"].as_str().unwrap_or("?"),
                i["message"].as_str().unwrap_or("")
            ),
        })
        .collect())
}

/// Falls back to the tool's own path, so an unmapped finding still names a file.
fn name_of(names: &BTreeMap<String, &String>, path: &str) -> String {
    names
        .get(path)
        .map_or_else(|| path.to_owned(), |n| (*n).clone())
}

/// One checkov run over a staged copy: workflows where checkov looks for
/// them, each Dockerfile in its own folder, each overlay rendered by kubectl.
fn checkov(venv: &Path, scratch: &Path, inputs: &Inputs) -> Result<Vec<Finding>> {
    let stage = scratch.join("checkov");
    let mut names: BTreeMap<String, &String> = BTreeMap::new();
    let put = |relative: &str, text: &str| -> Result<()> {
        let path = stage.join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("staging {}", path.display()))
    };
    for (name, path) in &inputs.workflows {
        let relative = format!(
            ".github/workflows/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        put(&relative, &super::read(path)?)?;
        names.insert(format!("/{relative}"), name);
    }
    for (i, (name, path)) in inputs.dockerfiles.iter().enumerate() {
        let relative = format!("docker/{i}/Dockerfile");
        put(&relative, &super::read(path)?)?;
        names.insert(format!("/{relative}"), name);
    }
    for (i, (name, dir)) in inputs.overlays.iter().enumerate() {
        let rendered = super::tool(dir, "kubectl", &["kustomize", &dir.to_string_lossy()])?;
        let relative = format!("kubernetes/{i}.yaml");
        put(&relative, &rendered)?;
        names.insert(format!("/{relative}"), name);
    }
    let args: Vec<String> = [
        "--directory",
        &stage.to_string_lossy(),
        "--framework",
        "kubernetes",
        "dockerfile",
        "github_actions",
        "--output",
        "json",
        "--quiet",
        "--compact",
        "--skip-download",
        "--soft-fail",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let text = output(&venv.join("bin/checkov"), &args, scratch, &[0])?;
    let start = text.find(['[', '{']).context("checkov printed no JSON")?;
    let parsed: Value = serde_json::from_str(&text[start..]).context("reading checkov's JSON")?;
    let reports = match parsed {
        Value::Array(list) => list,
        one => vec![one],
    };
    let mut findings = Vec::new();
    for report in &reports {
        for c in report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            findings.push(Finding {
                tool: "checkov",
                rule: c["check_id"].as_str().unwrap_or("?").into(),
                file: name_of(&names, c["file_path"].as_str().unwrap_or("")),
                line: c["file_line_range"][0].as_u64(),
                message: format!(
                    "{} ({})",
                    c["check_name"].as_str().unwrap_or(""),
                    c["resource"].as_str().unwrap_or("")
                ),
            });
        }
        for file in report["results"]["parsing_errors"]
            .as_array()
            .into_iter()
            .flatten()
        {
            findings.push(Finding {
                tool: "checkov",
                rule: "parsing-error".into(),
                file: name_of(
                    &names,
                    &format!(
                        "/{}",
                        file.as_str()
                            .unwrap_or("")
                            .trim_start_matches(&*stage.to_string_lossy())
                            .trim_start_matches('/')
                    ),
                ),
                line: None,
                message: "checkov could not parse this file".into(),
            });
        }
    }
    Ok(findings)
}
