//! The linters users run (actionlint, hadolint, checkov) inside `cargo xtask
//! lint`: on a copy of the tree with a workflow, a Dockerfile and a manifest
//! broken, each finding fails the outcome of its file and names it; a waiver
//! that no longer matches anything fails too.
use std::path::Path;

use xtask::{
    lint::{self, tools},
    workspace,
};

/// Copies the files the tools read into `to`, keeping repository paths.
fn copy_tree(to: &Path) {
    let root = workspace::root();
    let mut files = vec![
        ".github/actionlint.yaml".to_owned(),
        "infrastructure/docker/Dockerfile".to_owned(),
        lint::waivers::WAIVERS.to_owned(),
    ];
    for dir in [
        ".github/workflows",
        "infrastructure/kubernetes/base",
        "infrastructure/kubernetes/overlays/production",
        "infrastructure/kubernetes/overlays/staging",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name();
            files.push(format!("{dir}/{}", name.to_string_lossy()));
        }
    }
    for file in files {
        let target = to.join(&file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(root.join(&file), target).unwrap();
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains(from),
        "{} no longer contains {from:?}: update this test",
        file.display()
    );
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[track_caller]
fn failed<'a>(outcomes: &'a [lint::Outcome], check: &str, file: &str) -> &'a str {
    let outcome = outcomes
        .iter()
        .find(|o| o.check == check && o.file == file)
        .unwrap_or_else(|| panic!("no {check} outcome for {file}: {outcomes:#?}"));
    assert!(!outcome.ok, "{check} passed the broken {file}");
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.contains(file),
        "the error does not name {file}:\n{error}"
    );
    error
}

#[test]
fn each_tool_names_the_broken_file_and_the_rule() {
    let copy = tempfile::tempdir().unwrap();
    let root = copy.path();
    copy_tree(root);
    // The runtime GitHub removed (actionlint), a relative WORKDIR (hadolint
    // DL3000), a container allowed to gain privileges (checkov CKV_K8S_20).
    edit(
        &root.join(".github/workflows/ci.yml"),
        "actions/checkout@v5",
        "actions/checkout@v4",
    );
    edit(
        &root.join("infrastructure/docker/Dockerfile"),
        "WORKDIR /src",
        "WORKDIR src",
    );
    edit(
        &root.join("infrastructure/kubernetes/base/deployment.yaml"),
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
    );
    let outcomes = tools::check_tree(root);

    let error = failed(&outcomes, "actionlint", ".github/workflows/ci.yml");
    assert!(
        error.contains("node20") && error.contains("actions/checkout@v4"),
        "{error}"
    );
    let error = failed(&outcomes, "hadolint", "infrastructure/docker/Dockerfile");
    assert!(error.contains("DL3000"), "{error}");
    for overlay in ["production", "staging"] {
        let file = format!("infrastructure/kubernetes/overlays/{overlay}");
        let error = failed(&outcomes, "checkov", &file);
        assert!(
            error.contains("CKV_K8S_20") && error.contains("Deployment."),
            "{error}"
        );
    }
    // The files left alone still pass: a finding lands on its own file only.
    for (check, file) in [
        ("actionlint", ".github/workflows/cd.yml"),
        ("checkov", ".github/workflows/rollback.yml"),
        ("hadolint", tools::GENERATED_DOCKERFILE),
        ("lint waivers", lint::waivers::WAIVERS),
    ] {
        let o = outcomes
            .iter()
            .find(|o| o.check == check && o.file == file)
            .unwrap();
        assert!(o.ok, "{check} {file}: {:?}", o.error);
    }
}

#[test]
fn a_waiver_that_matches_nothing_fails_and_is_named() {
    let copy = tempfile::tempdir().unwrap();
    let root = copy.path();
    copy_tree(root);
    let waivers = root.join(lint::waivers::WAIVERS);
    let mut text = std::fs::read_to_string(&waivers).unwrap();
    text.push_str("\n[[waiver]]\ntool = \"hadolint\"\nrule = \"DL3007\"\nfiles = [\"infrastructure/docker/Dockerfile\"]\nreason = \"kept after the fix, which must be noticed\"\n");
    std::fs::write(&waivers, text).unwrap();
    let outcomes = tools::check_tree(root);
    let error = failed(&outcomes, "lint waivers", lint::waivers::WAIVERS);
    assert!(error.contains("hadolint DL3007"), "{error}");
    let not_waivers: Vec<&lint::Outcome> = outcomes
        .iter()
        .filter(|o| !o.ok && o.check != "lint waivers")
        .collect();
    assert!(not_waivers.is_empty(), "{not_waivers:#?}");
}
