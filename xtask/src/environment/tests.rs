use super::*;

pub(super) const GOOD: &str = r#"
[target]
kind = "docker"
[image]
repo = "xtask-app"
[deploy]
replicas = 3
strategy = "rolling"
[health]
interval_ms = 200
timeout_ms = 1000
success_threshold = 2
failure_threshold = 3
deadline_seconds = 60
drain_seconds = 1
verify_seconds = 2
[balancer]
https_port = 18443
http_port = 18080
"#;

pub(super) fn parse_str(text: &str) -> Result<Environment> {
    parse(Path::new("infrastructure/environments/dev.toml"), text)
}

#[test]
fn a_good_file_parses_with_defaults() {
    let env = parse_str(GOOD).unwrap();
    assert_eq!(env.name, "dev");
    assert_eq!(env.file.deploy.keep_releases, 5);
    assert_eq!(env.file.health.path, "/ready");
    assert_eq!(env.public_url(), "https://127.0.0.1:18443");
}

#[test]
fn unknown_and_missing_fields_name_the_file_and_field() {
    let err = parse_str(&GOOD.replace("replicas = 3", "replica = 3"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dev.toml") && err.contains("replica"), "{err}");
    let err = parse_str(&GOOD.replace("timeout_ms = 1000\n", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dev.toml") && err.contains("timeout_ms"),
        "{err}"
    );
}

#[test]
fn bad_values_name_the_field_and_the_fix() {
    let err = parse_str(&GOOD.replace("replicas = 3", "replicas = 0"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dev.toml: deploy.replicas = 0: must be between 1 and 50"),
        "{err}"
    );
    let err = parse_str(&GOOD.replace("\"rolling\"", "\"canary\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("canary") && err.contains("strategy"), "{err}");
    let err = parse_str(&GOOD.replace("[health]", "[app.env]\nBIND = \"1\"\n[health]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("app.env.BIND"), "{err}");
}

const KUBE: &str = r#"
[target]
kind = "kubernetes"
overlay = "infrastructure/kubernetes/overlays/staging"
namespace = "app-staging"
deployment = "app"
service = "app"
[image]
repo = "xtask-app"
[deploy]
replicas = 2
strategy = "rolling"
[health]
interval_ms = 200
timeout_ms = 1000
success_threshold = 2
failure_threshold = 3
deadline_seconds = 60
drain_seconds = 1
verify_seconds = 2
"#;

#[test]
fn a_kubernetes_target_needs_its_fields_and_no_balancer() {
    let env = parse_str(KUBE).unwrap();
    let kube = env.kube().unwrap();
    assert!(kube.overlay.is_absolute());
    assert_eq!(kube.namespace, "app-staging");
    assert_eq!(env.public_url(), "", "no public_url: no HTTP gate");
    let err = parse_str(&KUBE.replace("namespace = \"app-staging\"\n", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dev.toml: target.namespace is missing"),
        "{err}"
    );
    let err = parse_str(&KUBE.replace("deployment = \"app\"", "deployment = \"App_1\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("target.deployment = \"App_1\""), "{err}");
    let err = parse_str(&format!(
        "{KUBE}[balancer]\nhttps_port = 1\nhttp_port = 2\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("[balancer] is for kind = \"docker\""), "{err}");
    let err = parse_str(&format!("{KUBE}[app.secrets]\nDB = \"env:X\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("app.secrets") && err.contains("Secret"),
        "{err}"
    );
}

#[test]
fn a_docker_target_refuses_kubernetes_fields_and_needs_a_balancer() {
    let err = parse_str(&GOOD.replace("kind = \"docker\"", "kind = \"docker\"\nnamespace = \"x\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[target]")
            && err.contains("unknown field `namespace`, expected one of `host`"),
        "{err}"
    );
    let without = &GOOD[..GOOD.find("[balancer]").unwrap()];
    let err = parse_str(without).unwrap_err().to_string();
    assert!(err.contains("[balancer] is missing"), "{err}");
}

#[test]
fn every_shipped_environment_file_parses() {
    let dir = workspace::root().join("infrastructure/environments");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let env = parse(&path, &std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{e:#}"));
            kinds.push(env.file.target.kind());
        }
    }
    for kind in [
        TargetKind::Docker,
        TargetKind::Swarm,
        TargetKind::Kubernetes,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} environment shipped");
    }
}

#[test]
fn swarm_settings_have_defaults_and_bad_ones_are_named() {
    let swarm = GOOD.replace("kind = \"docker\"", "kind = \"swarm\"");
    let env = parse_str(&swarm).unwrap();
    assert_eq!(env.swarm().monitor_seconds, 5.0);
    assert_eq!(env.swarm().healthcheck_interval_ms, 1000);
    let err = parse_str(&format!("{swarm}[swarm]\nmemory_mb = 2\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("swarm.memory_mb = 2: must be between 6 and 4194304"),
        "{err}"
    );
    let err = parse_str(&format!("{swarm}[swarm]\ncpu = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `cpu`"), "{err}");
    let err = parse_str(&format!("{GOOD}[swarm]\ncpus = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[swarm] is for kind = \"swarm\""), "{err}");
    let without = &swarm[..swarm.find("[balancer]").unwrap()];
    let err = parse_str(without).unwrap_err().to_string();
    assert!(
        err.contains("[balancer] is missing: a swarm target"),
        "{err}"
    );
}

#[test]
fn selectors_are_names_or_paths() {
    assert!(resolve_path("staging").ends_with("infrastructure/environments/staging.toml"));
    assert_eq!(resolve_path("/tmp/x.toml"), PathBuf::from("/tmp/x.toml"));
}

#[test]
fn a_copy_of_a_shipped_environment_elsewhere_is_an_environment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("staging.toml");
    std::fs::copy(resolve_path("staging"), &copy).unwrap();
    let env = load(copy.to_str().unwrap()).unwrap();
    assert!(
        env.name.starts_with("staging-") && env.name.len() == "staging-".len() + 8,
        "{}",
        env.name
    );
    assert_ne!(env.scope(), load("staging").unwrap().scope());
    assert_eq!(load("staging").unwrap().name, "staging");
    let other = dir.path().join("scratch.toml");
    std::fs::copy(resolve_path("staging"), &other).unwrap();
    assert_eq!(
        load(other.to_str().unwrap()).unwrap().name,
        "scratch",
        "no shipped scratch: its own name"
    );
}

#[test]
fn a_canary_needs_rising_steps_to_100_a_decisive_query_and_a_docker_target() {
    let canary = GOOD.replace("\"rolling\"", "\"canary\"")
        + "[canary]\nsteps = [10, 50, 100]\nprometheus_url = \"http://127.0.0.1:9090\"\n[[canary.analysis]]\nname = \"errors\"\nquery = \"x\"\nmax = 0.05\n";
    parse_str(&canary).unwrap();
    let err = parse_str(&canary.replace("[10, 50, 100]", "[50, 10]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("canary.steps = [50, 10]: must rise"), "{err}");
    let err = parse_str(&canary.replace("max = 0.05", "max = 0.05\ndry_run = true"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("canary.analysis"), "{err}");
    let err = parse_str(&canary.replace("max = 0.05", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("canary.analysis.errors") && err.contains("max or min"),
        "{err}"
    );
    let err = parse_str(&GOOD.replace(
        "[health]",
        "[canary]\nsteps = [100]\nprometheus_url = \"http://p\"\n[health]",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("[canary] is for deploy.strategy = \"canary\""),
        "{err}"
    );
}

#[test]
fn the_app_fault_knobs_are_refused_unless_the_file_allows_them() {
    let knob = GOOD.replace("[health]", "[app.env]\nAPP_ERROR_RATE = \"0.2\"\n[health]");
    let err = parse_str(&knob).unwrap_err().to_string();
    assert!(
        err.contains("app.env.APP_ERROR_RATE") && err.contains("debug_knobs = true"),
        "{err}"
    );
    parse_str(&knob.replace("[app.env]", "[app]\ndebug_knobs = true\n[app.env]")).unwrap();
}

/// A number the code would overflow on (a clock plus a huge duration, a
/// sum of counts) or wait on for ever is refused when the file is read,
/// naming the file, the field and the range.
#[test]
fn every_count_and_duration_is_bounded_naming_file_field_and_range() {
    let huge = "9223372036854775807";
    let with = |field: &str, value: &str| {
        let text = if GOOD.contains(&format!("\n{field} = ")) {
            let start = GOOD.find(&format!("\n{field} = ")).unwrap() + 1;
            let end = start + GOOD[start..].find('\n').unwrap();
            format!("{}{field} = {value}{}", &GOOD[..start], &GOOD[end..])
        } else {
            let section = if field == "api_rate" {
                "[balancer]"
            } else if ["lock_ttl_seconds", "keep_releases", "surge"].contains(&field) {
                "[deploy]"
            } else {
                "[health]"
            };
            GOOD.replace(section, &format!("{section}\n{field} = {value}"))
        };
        parse_str(&text)
    };
    for (section, field, range) in [
        ("deploy", "lock_ttl_seconds", "between 60 and 86400"),
        ("deploy", "keep_releases", "between 2 and 1000"),
        ("deploy", "surge", "between 1 and 50"),
        ("deploy", "replicas", "between 1 and 50"),
        ("health", "interval_ms", "between 10 and 600000"),
        ("health", "timeout_ms", "between 1 and 600000"),
        ("health", "initial_delay_ms", "between 0 and 3600000"),
        ("health", "deadline_seconds", "between 1 and 86400"),
    ] {
        let err = with(field, huge).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "dev.toml: {section}.{field} = {huge}: must be {range}"
            )),
            "{field}: {err}"
        );
    }
    let err = with("api_rate", "4294967295").unwrap_err().to_string();
    assert!(
        err.contains("dev.toml: balancer.api_rate = 4294967295: must be between 1 and 1000000"),
        "{err}"
    );
    for (field, value, range) in [
        ("success_threshold", "4294967295", "between 1 and 1000"),
        ("failure_threshold", "0", "between 1 and 1000"),
        ("drain_seconds", "nan", "between 0 and 600"),
        ("verify_seconds", "inf", "between 0 and 600"),
    ] {
        let err = with(field, value).unwrap_err().to_string();
        assert!(
            err.contains(&format!("dev.toml: health.{field} = ")) && err.contains(range),
            "{field}: {err}"
        );
    }
    // Out of the type's range is a parse error naming the file and the field.
    let err = with("lock_ttl_seconds", "99999999999999999999")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dev.toml") && err.contains("lock_ttl_seconds"),
        "{err}"
    );
    let swarm = GOOD.replace("kind = \"docker\"", "kind = \"swarm\"");
    for (field, range) in [
        ("memory_mb", "between 6 and 4194304"),
        ("healthcheck_interval_ms", "between 100 and 600000"),
    ] {
        let err = parse_str(&format!("{swarm}[swarm]\n{field} = {huge}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("swarm.{field} = {huge}: must be {range}")),
            "{err}"
        );
    }
    with("initial_delay_ms", "0").unwrap();
}

#[test]
fn backup_is_optional_and_checked_field_by_field_without_echoing_a_url() {
    assert!(parse_str(GOOD).unwrap().file.backup.is_none());
    let with = |table: &str| parse_str(&format!("{GOOD}\n[backup]\n{table}\n"));
    let env = with("dir = \"backups\"\ndatabase_url = \"env:XTASK_TEST_DB_URL\"").unwrap();
    assert_eq!(env.file.backup.as_ref().unwrap().keep, 7, "default keep");

    let err = with("dir = \"b\"\nkeep = 0\ndatabase_url = \"env:X\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backup.keep = 0: must be between 1 and 1000"),
        "{err}"
    );
    let err = with("dir = \"\"\ndatabase_url = \"env:X\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("backup.dir"), "{err}");
    let err = with("dir = \"b\"\ndatabase_url = \"postgres://app:s3cret@db/app\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backup.database_url = …: must be \"env:VARIABLE\""),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let err = with("dir = \"b\"\ndatabase_url = \"file:relative\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("absolute path"), "{err}");
    let err = with("dir = \"b\"\ndatabase_url = \"env:X\"\nbucket = \"s3://x\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bucket"), "unknown fields are named: {err}");
    let err = with("database_url = \"env:X\"").unwrap_err().to_string();
    assert!(err.contains("dir"), "missing fields are named: {err}");

    // Resolving: the settings carry the URL, their Debug never shows it.
    std::env::set_var("XTASK_TEST_DB_URL", "postgres://app:s3cret@127.0.0.1:1/app");
    let settings = env.backup().unwrap();
    assert!(settings.dir.ends_with("backups/dev"));
    assert!(!format!("{settings:?}").contains("s3cret"));
    std::env::set_var("XTASK_TEST_DB_URL", "mysql://app:s3cret@db/app");
    let err = env.backup().unwrap_err().to_string();
    assert!(
        err.contains("not a postgres:// URL") && !err.contains("s3cret"),
        "{err}"
    );
    std::env::remove_var("XTASK_TEST_DB_URL");
    let err = parse_str(GOOD).unwrap().backup().unwrap_err().to_string();
    assert!(err.contains("no [backup] table"), "{err}");
}

#[test]
fn a_rollback_in_a_canary_environment_goes_back_at_once() {
    use crate::deploy::{draft_release, release::History, Options, Source};
    let canary = GOOD.replace("\"rolling\"", "\"canary\"")
        + "[canary]\nsteps = [10, 50, 100]\nprometheus_url = \"http://127.0.0.1:9090\"\n[[canary.analysis]]\nname = \"errors\"\nquery = \"x\"\nmax = 0.05\n";
    let env = parse_str(&canary).unwrap();
    let mut history = History::default();
    let options = Options {
        strategy: None,
        quiet: true,
        command: "test".into(),
        ..Default::default()
    };
    for image in ["app:1", "app:2"] {
        let source = Source::Image {
            image: image.into(),
            overrides: Default::default(),
        };
        let release = draft_release(&env, &history, source, &options).unwrap();
        assert_eq!(release.strategy, Strategy::Canary);
        let id = history.begin(release);
        history.activate(&id, "now");
    }
    let back = draft_release(&env, &history, Source::Restore { to: None }, &options).unwrap();
    assert_eq!(back.image, "app:1");
    assert_eq!(
        back.strategy,
        Strategy::BlueGreen,
        "no steps on the way back"
    );
}

#[test]
fn a_fleet_lists_its_hosts_once_each_and_only_on_a_docker_target() {
    let fleet =
        |hosts: &str| GOOD.replace("kind = \"docker\"", &format!("kind = \"docker\"\n{hosts}"));
    let env = parse_str(&fleet(
        r#"hosts = ["ssh://deploy@10.0.0.1", "ssh://deploy@10.0.0.2:2222"]"#,
    ))
    .unwrap();
    assert_eq!(env.engine_hosts().len(), 2);
    assert_eq!(env.engine_host(), None);

    let cases = [
        (
            fleet(
                r#"host = "ssh://a@h1"
hosts = ["ssh://a@h2"]"#,
            ),
            "target.host",
            "either host",
        ),
        (
            fleet(r#"hosts = ["http://h1"]"#),
            "target.hosts[0]",
            "ssh://user@host",
        ),
        (
            fleet(r#"hosts = ["ssh://a@h1", "ssh://a@h1"]"#),
            "target.hosts[1]",
            "listed twice",
        ),
        (
            fleet(r#"hosts = ["ssh://a@h1"]"#).replace("\"rolling\"", "\"canary\""),
            "deploy.strategy",
            "not built yet",
        ),
        (
            fleet(r#"hosts = ["ssh://a@h1"]"#).replace("kind = \"docker\"", "kind = \"swarm\""),
            "target.hosts",
            "one manager",
        ),
    ];
    for (text, field, fix) in cases {
        let err = format!("{:#}", parse_str(&text).unwrap_err());
        assert!(err.contains(field) && err.contains(fix), "{field}: {err}");
    }
}

#[test]
fn balancer_nodes_are_other_engines_of_a_swarm_each_once() {
    let swarm = |target: &str| {
        GOOD.replace(
            "kind = \"docker\"",
            &format!("kind = \"swarm\"\nhost = \"ssh://m@h1\"\n{target}"),
        )
    };
    let env = parse_str(&swarm(r#"balancer_nodes = ["ssh://m@h2", "ssh://m@h3"]"#)).unwrap();
    assert_eq!(env.balancer_nodes().len(), 2);
    let cases = [
        (
            GOOD.replace(
                "kind = \"docker\"",
                "kind = \"docker\"\nbalancer_nodes = [\"ssh://a@h2\"]",
            ),
            "target.balancer_nodes",
            "for swarm targets",
        ),
        (
            swarm(r#"balancer_nodes = ["ssh://m@h1"]"#),
            "target.balancer_nodes",
            "is target.host",
        ),
        (
            swarm(r#"balancer_nodes = ["ssh://m@h2", "ssh://m@h2"]"#),
            "target.balancer_nodes[1]",
            "listed twice",
        ),
        (
            swarm(r#"balancer_nodes = ["h2"]"#),
            "target.balancer_nodes[0]",
            "ssh://user@host",
        ),
        (
            swarm(r#"balancer_nodes = ["ssh://m@h2"]"#).replace("\"rolling\"", "\"canary\""),
            "deploy.strategy",
            "not built yet",
        ),
    ];
    for (text, field, fix) in cases {
        let err = format!("{:#}", parse_str(&text).unwrap_err());
        assert!(err.contains(field) && err.contains(fix), "{field}: {err}");
    }
}

#[test]
fn hooks_name_their_command_and_a_bounded_timeout() {
    let with = |hooks: &str| format!("{GOOD}{hooks}");
    let env = parse_str(&with(
        "[hooks.pre_deploy]\ncommand = [\"migrate\", \"up\"]\n",
    ))
    .unwrap();
    let hook = env.hooks().pre_deploy.unwrap();
    assert_eq!((hook.timeout_seconds, hook.backup_first), (300, true));
    let cases = [
        (
            "[hooks.pre_deploy]\ncommand = []\n",
            "hooks.pre_deploy.command",
        ),
        (
            "[hooks.post_deploy]\ncommand = [\"\"]\n",
            "hooks.post_deploy.command",
        ),
        (
            "[hooks.pre_deploy]\ncommand = [\"migrate\"]\ntimeout_seconds = 0\n",
            "hooks.pre_deploy.timeout_seconds",
        ),
        (
            "[hooks.pre_deploy]\ncmd = [\"migrate\"]\n",
            "unknown field `cmd`",
        ),
    ];
    for (hooks, named) in cases {
        let err = format!("{:#}", parse_str(&with(hooks)).unwrap_err());
        assert!(err.contains(named), "{named}: {err}");
    }
}

#[test]
fn verify_paths_are_real_distinct_paths() {
    let with = |paths: &str| {
        parse_str(&GOOD.replace(
            "verify_seconds = 2",
            &format!("verify_seconds = 2\nverify_paths = {paths}"),
        ))
    };
    let env = with(r#"["/items", "/version"]"#).unwrap();
    assert_eq!(env.file.health.verify_paths, ["/items", "/version"]);
    for (paths, field, fix) in [
        (
            r#"["items"]"#,
            "health.verify_paths[0] = items",
            "must be a path starting with /",
        ),
        (
            r#"["/items", "/a b"]"#,
            "health.verify_paths[1] = /a b",
            "no spaces",
        ),
        (
            r#"["/items", "/items"]"#,
            "health.verify_paths[1] = /items",
            "already probed",
        ),
        (
            r#"["/ready"]"#,
            "health.verify_paths[0] = /ready",
            "health.path",
        ),
    ] {
        let err = with(paths).unwrap_err().to_string();
        assert!(
            err.contains(&format!("dev.toml: {field}")) && err.contains(fix),
            "{err}"
        );
    }
}
