//! `cargo xtask lint`: every infrastructure file checked by the program that
//! reads it in production (haproxy, nginx, promtool, amtool, docker-compose, kubectl),
//! plus typed checks where those programs are lenient, plus the linters users
//! run themselves (actionlint, hadolint, checkov; see `tools`). One module per
//! kind of file; each check takes a path so tests can run it on a broken copy.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::{report, setup, workspace};

pub mod compose;
pub mod dashboard;
pub mod dockerfile;
pub mod haproxy;
pub mod kubernetes;
pub mod nginx;
pub mod prometheus;
pub mod tools;
pub mod waivers;
pub mod workflows;

/// One check of one file.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub check: &'static str,
    pub file: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// `cargo xtask lint [--json]`.
pub fn run(json: bool) -> Result<ExitCode> {
    let outcomes = lint(json)?;
    Ok(if outcomes.iter().all(|o| o.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Installs the tools, runs every check, reports; `Err` only when lint could not run.
pub fn lint(json: bool) -> Result<Vec<Outcome>> {
    setup::ensure(setup::LINT)?;
    let root = workspace::root();
    let outcomes = check_tree(&root);
    if json {
        report::print_json(&outcomes);
    } else {
        let mut table = report::Table::new("cargo xtask lint", &["check", "file", "result"]);
        for o in &outcomes {
            table.row(vec![
                o.check.into(),
                o.file.clone(),
                if o.ok { "ok" } else { "FAILED" }.into(),
            ]);
        }
        for o in outcomes.iter().filter(|o| !o.ok) {
            let message = o.error.as_deref().unwrap_or_default();
            report::error(message);
            eprintln!("\n{}: {}\n{message}", o.check, o.file);
        }
        table.emit();
    }
    Ok(outcomes)
}

/// For `cargo xtask ci`: lint as a step that fails when any check fails.
pub fn ci_step() -> Result<()> {
    let failed: Vec<String> = lint(false)?
        .into_iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{} ({})", o.file, o.check))
        .collect();
    if !failed.is_empty() {
        bail!("lint failed for {}", failed.join(", "));
    }
    Ok(())
}

/// A check of one file or folder; `Err` names it and says what is wrong.
pub type Check = fn(&Path) -> Result<()>;

/// Every check on every infrastructure file under `root`.
pub fn check_tree(root: &Path) -> Vec<Outcome> {
    let infra = root.join("infrastructure");
    let monitoring = infra.join("monitoring");
    let kube = infra.join("kubernetes");
    let mut plan: Vec<(&'static str, PathBuf, Check)> = vec![
        (
            "dockerfile",
            infra.join("docker/Dockerfile"),
            dockerfile::check,
        ),
        (
            "nginx -t",
            infra.join("nginx/nginx.conf.template"),
            nginx::check,
        ),
        (
            "haproxy -c",
            infra.join("balancer/haproxy.cfg.template"),
            haproxy::check,
        ),
        (
            "haproxy -c compose",
            infra.join("balancer/haproxy.cfg.template"),
            haproxy::check_compose,
        ),
        (
            "promtool check config",
            monitoring.join("prometheus.yml"),
            prometheus::check_config,
        ),
        (
            "promtool check rules",
            monitoring.join("alerts.yml"),
            prometheus::check_rules,
        ),
        (
            "promtool test rules",
            monitoring.join("alerts.test.yml"),
            prometheus::check_rule_tests,
        ),
        (
            "amtool check-config",
            monitoring.join("alertmanager.yml"),
            prometheus::check_alertmanager,
        ),
    ];
    for file in files(&infra.join("docker"), "docker-compose", ".yml") {
        plan.push(("docker-compose config", file, compose::check));
    }
    plan.push((
        "kubectl kustomize",
        kube.join("base"),
        kubernetes::check_kustomization,
    ));
    for dir in subdirs(&kube.join("overlays")) {
        plan.push(("kubectl kustomize", dir, kubernetes::check_kustomization));
    }
    for file in files(&kube.join("base"), "", ".template.yaml") {
        plan.push(("k8s manifest", file, kubernetes::check_manifest_file));
    }
    plan.push((
        "k8s manifest",
        kube.join("deployer-role.yaml"),
        kubernetes::check_manifest_file,
    ));
    for file in files(&monitoring.join("grafana/dashboards"), "", ".json") {
        plan.push(("dashboard PromQL", file, dashboard::check));
    }
    for file in files(&root.join(".github/workflows"), "", ".yml") {
        plan.push(("workflow commands", file, workflows::check));
    }
    let mut outcomes: Vec<Outcome> = plan
        .into_iter()
        .map(|(check, path, run)| {
            let result = run(&path);
            Outcome {
                check,
                file: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                ok: result.is_ok(),
                error: result.err().map(|e| format!("{e:#}")),
            }
        })
        .collect();
    outcomes.extend(tools::check_tree(root));
    outcomes
}

/// Files in `dir` named `prefix*suffix`, sorted so output is stable.
fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// Runs a tool; on failure the error names `file`, the command, and what it said.
pub(crate) fn tool(file: &Path, program: &str, args: &[&str]) -> Result<String> {
    let output = duct::cmd(program, args)
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("{}: running {program}", file.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{}: `{program} {}` failed ({}):\n{}{}",
            file.display(),
            args.join(" "),
            output.status,
            stderr.trim_end(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\n{}", stdout.trim_end())
            }
        );
    }
    Ok(stdout)
}

pub(crate) fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))
}
