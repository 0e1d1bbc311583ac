//! `cargo xtask lint` passes on the tree, and each kind of check catches a
//! realistic breakage in a copy of the real file, naming the file and the problem.
use std::path::{Path, PathBuf};

use anyhow::Result;
use xtask::{lint, workspace};

fn repo(path: &str) -> PathBuf {
    workspace::root().join(path)
}

/// Copies `files` (repository paths) into a fresh temp dir, keeping names.
fn copy(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        let name = Path::new(file).file_name().unwrap();
        std::fs::copy(repo(file), dir.path().join(name)).unwrap();
    }
    dir
}

/// Replaces `from` with `to` in `file`; the text must be there, so a change
/// to the real file cannot turn a test into one that breaks nothing.
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
fn assert_fails(result: Result<()>, file: &Path, problem: &str) {
    let message = format!("{:#}", result.expect_err("the broken copy must fail lint"));
    assert!(
        message.contains(&file.display().to_string()),
        "message does not name {}:\n{message}",
        file.display()
    );
    assert!(
        message.contains(problem),
        "message does not say {problem:?}:\n{message}"
    );
}

#[test]
fn lint_passes_on_the_tree_and_covers_every_kind_of_file() {
    lint::lint(true).expect("lint runs");
    let outcomes = lint::check_tree(&workspace::root());
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{}: {}", o.file, o.error.as_deref().unwrap_or("")))
        .collect();
    assert!(
        failed.is_empty(),
        "lint fails on the tree:\n{}",
        failed.join("\n")
    );
    for check in [
        "dockerfile",
        "nginx -t",
        "haproxy -c",
        "haproxy -c compose",
        "promtool check config",
        "promtool check rules",
        "promtool test rules",
        "amtool check-config",
        "docker-compose config",
        "kubectl kustomize",
        "k8s manifest",
        "dashboard PromQL",
        "workflow commands",
        "actionlint",
        "hadolint",
        "checkov",
        "lint waivers",
    ] {
        assert!(
            outcomes.iter().any(|o| o.check == check),
            "no `{check}` check ran"
        );
    }
    let compose = outcomes
        .iter()
        .filter(|o| o.check == "docker-compose config")
        .count();
    assert_eq!(compose, 3, "dev, test and prod compose files");
    let kustomize = outcomes
        .iter()
        .filter(|o| o.check == "kubectl kustomize")
        .count();
    assert_eq!(kustomize, 3, "base, staging and production");
}

#[test]
fn nginx_unknown_directive_is_named() {
    let dir = copy(&["infrastructure/nginx/nginx.conf.template"]);
    let file = dir.path().join("nginx.conf.template");
    edit(&file, "least_conn;", "least_connections;");
    assert_fails(
        lint::nginx::check(&file),
        &file,
        "unknown directive \"least_connections\"",
    );
}

#[test]
fn nginx_unknown_placeholder_is_named() {
    let dir = copy(&["infrastructure/nginx/nginx.conf.template"]);
    let file = dir.path().join("nginx.conf.template");
    edit(&file, "{{api_rate}}", "{{api_rte}}");
    assert_fails(
        lint::nginx::check(&file),
        &file,
        "unknown placeholder `{{api_rte}}`",
    );
}

#[test]
fn prometheus_config_bad_duration_is_named() {
    let dir = copy(&[
        "infrastructure/monitoring/prometheus.yml",
        "infrastructure/monitoring/alerts.yml",
    ]);
    let file = dir.path().join("prometheus.yml");
    edit(&file, "scrape_interval: 15s", "scrape_interval: 15 seconds");
    assert_fails(
        lint::prometheus::check_config(&file),
        &file,
        "not a valid duration string",
    );
}

#[test]
fn alert_rule_with_broken_promql_is_named() {
    let dir = copy(&["infrastructure/monitoring/alerts.yml"]);
    let file = dir.path().join("alerts.yml");
    edit(
        &file,
        "expr: up{job=\"app\"} == 0",
        "expr: up{job=\"app\" == 0",
    );
    assert_fails(
        lint::prometheus::check_rules(&file),
        &file,
        "could not parse expression",
    );
}

#[test]
fn alert_threshold_change_fails_its_unit_test() {
    let dir = copy(&[
        "infrastructure/monitoring/alerts.yml",
        "infrastructure/monitoring/alerts.test.yml",
    ]);
    edit(&dir.path().join("alerts.yml"), "> 0.05", "> 0.5");
    let file = dir.path().join("alerts.test.yml");
    assert_fails(
        lint::prometheus::check_rule_tests(&file),
        &file,
        "alertname: AppHighErrorRate",
    );
}

#[test]
fn alert_without_a_test_is_named() {
    let dir = copy(&[
        "infrastructure/monitoring/alerts.yml",
        "infrastructure/monitoring/alerts.test.yml",
    ]);
    let rules = dir.path().join("alerts.yml");
    edit(
        &rules,
        "  - name: app\n    rules:\n",
        "  - name: app\n    rules:\n      - alert: AppUntested\n        expr: vector(1) == 0\n",
    );
    let file = dir.path().join("alerts.test.yml");
    assert_fails(
        lint::prometheus::check_rule_tests(&file),
        &file,
        "alert `AppUntested` has no test",
    );
}

#[test]
fn every_alert_has_a_firing_and_a_silent_test_case() {
    let alerts =
        lint::prometheus::alert_names(&repo("infrastructure/monitoring/alerts.yml")).unwrap();
    assert!(
        alerts.len() >= 5,
        "error rate, latency, down, memory, readiness: {alerts:?}"
    );
    let tests = lint::prometheus::yaml(&repo("infrastructure/monitoring/alerts.test.yml")).unwrap();
    let coverage = lint::prometheus::coverage(&tests);
    for alert in &alerts {
        let c = coverage
            .iter()
            .find(|c| &c.alert == alert)
            .unwrap_or_else(|| panic!("{alert} is not in alerts.test.yml"));
        assert!(c.fires, "{alert} never appears in a non-empty exp_alerts");
        assert!(c.silent, "{alert} has no exp_alerts: [] case");
    }
}

#[test]
fn alertmanager_undefined_receiver_is_named() {
    let dir = copy(&["infrastructure/monitoring/alertmanager.yml"]);
    let file = dir.path().join("alertmanager.yml");
    edit(
        &file,
        "    - receiver: on-call-pager",
        "    - receiver: on-call-pagr",
    );
    assert_fails(
        lint::prometheus::check_alertmanager(&file),
        &file,
        "undefined receiver \"on-call-pagr\"",
    );
}

#[test]
fn compose_misspelled_key_is_named() {
    let dir = copy(&["infrastructure/docker/docker-compose.test.yml"]);
    let file = dir.path().join("docker-compose.test.yml");
    edit(
        &file,
        "    healthcheck:\n      test: [\"CMD\", \"pg_isready\"",
        "    healthchek:\n      test: [\"CMD\", \"pg_isready\"",
    );
    assert_fails(
        lint::compose::check(&file),
        &file,
        "Unsupported config option for services.postgres: 'healthchek'",
    );
}

#[test]
fn compose_latest_image_and_public_dev_port_are_named() {
    let dir = copy(&["infrastructure/docker/docker-compose.yml"]);
    let file = dir.path().join("docker-compose.yml");
    edit(&file, "image: redis:7.4.1-bookworm", "image: redis:latest");
    assert_fails(
        lint::compose::check(&file),
        &file,
        "image `redis:latest` uses `latest`",
    );
    edit(&file, "image: redis:latest", "image: redis:7.4.1-bookworm");
    edit(
        &file,
        "\"127.0.0.1:${POSTGRES_PORT:-5432}:5432\"",
        "\"5432:5432\"",
    );
    assert_fails(
        lint::compose::check(&file),
        &file,
        "service `postgres`: port",
    );
}

#[test]
fn compose_haproxy_image_of_another_series_than_lint_checks_is_named() {
    let dir = copy(&["infrastructure/docker/docker-compose.yml"]);
    let file = dir.path().join("docker-compose.yml");
    edit(
        &file,
        "image: haproxy:2.6-bookworm",
        "image: haproxy:2.60-bookworm",
    );
    assert_fails(
        lint::compose::check(&file),
        &file,
        "service `balancer`: image `haproxy:2.60-bookworm` is not the HAProxy series lint checks its config with (2.6",
    );
}

/// A copy of the whole kubernetes tree: overlays refer to ../../base.
fn copy_kubernetes() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo("infrastructure/kubernetes"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn kubernetes_unknown_field_is_named() {
    let dir = copy_kubernetes();
    let kube = dir.path().join("kubernetes");
    edit(
        &kube.join("base/deployment.yaml"),
        "  replicas: 2\n",
        "  replica: 2\n",
    );
    let overlay = kube.join("overlays/staging");
    assert_fails(
        lint::kubernetes::check_kustomization(&overlay),
        &overlay,
        "Deployment app: unknown field(s) `spec.replica`",
    );
}

#[test]
fn kubernetes_wrong_type_is_named_with_its_path() {
    let dir = copy_kubernetes();
    let kube = dir.path().join("kubernetes");
    edit(
        &kube.join("base/hpa.yaml"),
        "  maxReplicas: 10",
        "  maxReplicas: ten",
    );
    let base = kube.join("base");
    assert_fails(
        lint::kubernetes::check_kustomization(&base),
        &base,
        "HorizontalPodAutoscaler app: field `spec.maxReplicas`",
    );
}

#[test]
fn an_ingress_that_would_route_metrics_is_named() {
    let dir = copy_kubernetes();
    let kube = dir.path().join("kubernetes");
    edit(
        &kube.join("base/ingress.yaml"),
        "          - path: /items\n",
        "          - path: /\n",
    );
    let overlay = kube.join("overlays/production");
    assert_fails(
        lint::kubernetes::check_kustomization(&overlay),
        &overlay,
        "routes /metrics to the internet (path \"/\", pathType Prefix)",
    );
}

#[test]
fn kustomize_missing_resource_is_named() {
    let dir = copy_kubernetes();
    let kube = dir.path().join("kubernetes");
    std::fs::remove_file(kube.join("base/pdb.yaml")).unwrap();
    let overlay = kube.join("overlays/production");
    assert_fails(
        lint::kubernetes::check_kustomization(&overlay),
        &overlay,
        "pdb.yaml",
    );
}

#[test]
fn dashboard_broken_promql_names_the_panel() {
    let dir = copy(&["infrastructure/monitoring/grafana/dashboards/app.json"]);
    let file = dir.path().join("app.json");
    edit(&file, "sum(up{", "sum(up({");
    assert_fails(lint::dashboard::check(&file), &file, "panel `Instances up`");
}

#[test]
fn dashboard_grafana_variables_become_promql() {
    let vars = vec!["instance".to_owned()];
    assert_eq!(
        lint::dashboard::promql("rate(x{instance=~\"$instance\"}[$__rate_interval])", &vars),
        "rate(x{instance=~\".*\"}[5m])"
    );
}

#[test]
fn workflow_calling_a_missing_command_is_named() {
    let dir = copy(&[".github/workflows/ci.yml"]);
    let file = dir.path().join("ci.yml");
    edit(
        &file,
        "\"PATH=$PATH\" cargo xtask ci",
        "\"PATH=$PATH\" cargo xtask deploi -e prod",
    );
    assert_fails(
        lint::workflows::check(&file),
        &file,
        "`cargo xtask deploi -e prod` is not a valid command",
    );
}

#[test]
fn workflow_subcommands_and_flags_are_checked_too() {
    let parse = |s: &str| {
        lint::workflows::parse(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    };
    assert!(parse("engine status --json").is_ok());
    assert!(parse("lint --json").is_ok());
    assert!(parse("engine restart").is_err());
    assert!(parse("lint --yaml").is_err());
    assert_eq!(
        lint::workflows::xtask_calls(
            "cargo xtask engine start && cargo xtask lint --json # why\necho done"
        ),
        vec![vec!["engine", "start"], vec!["lint", "--json"]]
    );
}

#[test]
fn dockerfile_root_user_and_unpinned_base_are_named() {
    let dir = copy(&["infrastructure/docker/Dockerfile"]);
    let file = dir.path().join("Dockerfile");
    edit(&file, "USER 65532:65532", "USER root");
    edit(
        &file,
        "FROM rust:1.95.0-bookworm AS builder",
        "FROM rust AS builder",
    );
    let message = format!("{:#}", lint::dockerfile::check(&file).unwrap_err());
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(
        message.contains("USER root runs the app as root"),
        "{message}"
    );
    assert!(
        message.contains("base image `rust` has no tag"),
        "{message}"
    );
}

#[test]
fn dockerfile_missing_healthcheck_and_typo_are_named() {
    let dir = copy(&["infrastructure/docker/Dockerfile"]);
    let file = dir.path().join("Dockerfile");
    edit(&file, "HEALTHCHECK --interval", "HEALTHCHEK --interval");
    let message = format!("{:#}", lint::dockerfile::check(&file).unwrap_err());
    assert!(
        message.contains("unknown instruction `HEALTHCHEK`"),
        "{message}"
    );
    assert!(message.contains("no HEALTHCHECK"), "{message}");
}
