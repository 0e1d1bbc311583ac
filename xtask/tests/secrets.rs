//! No secret value anywhere it could leak from, on the Docker target: a
//! deploy whose `app.secrets` carry marker values (a database URL whose
//! password is a marker, and a token), of an image pulled from the engine's
//! registry with its password (the third marker), is run through its
//! pre_deploy hook and its instances; then the push's and the command's
//! stdout, stderr and `--json`, the
//! history and status, every container's `docker inspect` (environment and
//! labels included), every process's argv while the deploy runs, and the
//! image's config and layer history are searched for the markers. The app
//! still gets them: it reaches PostgreSQL with the file's URL. A secret
//! passed with `--env` (the fourth marker, by name from the environment and
//! by its token shape) is refused before anything is recorded, and its
//! value is in no output, history or container.
#[path = "../../app/tests/support/postgres.rs"]
mod postgres;
mod support;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use postgres::Postgres;
use support::deploy_env::TestEnv;
use xtask::{backup::pg, targets::Target};

const DB_MARKER: &str = "dbpw-marker-5c1e9a";
const TOKEN_MARKER: &str = "token-marker-77d0b2";
/// Shaped like a GitHub token, as a secret passed with `--env` would be.
const ENV_MARKER: &str = "ghp_envmarker5d31c0a9e7b2f4680000000000000";

/// Every process's argv that holds a marker, sampled until `stop`.
fn watch_argv(
    markers: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeSet<String>> {
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(argv) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                if markers.iter().any(|m| argv.contains(m)) {
                    seen.insert(argv);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        seen
    })
}

fn assert_clean(markers: &[String], what: &str, text: &str) {
    for marker in markers {
        assert!(!text.contains(marker), "a secret value in {what}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_value_in_output_history_inspect_labels_argv_or_image_layers() {
    let _serial = support::SERIAL.lock().await;
    let (docker, state) = support::docker().await;
    let state = state.expect("this test needs the registry of `cargo xtask engine start`");
    let password = state.registry_credentials().unwrap().password;
    let markers = vec![
        DB_MARKER.to_owned(),
        TOKEN_MARKER.to_owned(),
        ENV_MARKER.to_owned(),
        password,
    ];
    let check = |what: &str, text: &str| assert_clean(&markers, what, text);
    support::balancer_image(&docker).await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let local_v2 = support::second_image(&docker).await;

    // v2 from the registry: pushed, its registry tag removed here, so the
    // deploy pulls it with the registry's password.
    let pushed = support::xtask(&[
        "push",
        &local_v2,
        "--registry",
        &state.registry.address,
        "--json",
    ]);
    check("push", &format!("{pushed:?}"));
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
    let v2 = report["reference"].as_str().unwrap().to_owned();
    docker
        .remove_image(
            &v2,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
        .unwrap();

    let env = TestEnv::new("marker", "rolling", 0);
    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{first}\n{stderr}");

    // A database the containers reach, with the marker as its password.
    let (gw, subnet) = env.gateway(&docker).await;
    let pg = Postgres::start_reachable_from(&gw, &subnet);
    let admin = pg::Conn::from_url(&pg.url())
        .unwrap()
        .client()
        .await
        .unwrap();
    for statement in [
        format!("CREATE ROLE app LOGIN PASSWORD '{DB_MARKER}'"),
        "CREATE DATABASE markerdb OWNER app".to_owned(),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let url_file = env.path.with_extension("db-url");
    let url = format!("postgres://app:{DB_MARKER}@{gw}:{}/markerdb", pg.port);
    std::fs::write(&url_file, &url).unwrap();
    let token_file = env.path.with_extension("token");
    std::fs::write(&token_file, TOKEN_MARKER).unwrap();
    env.append(&format!(
        "[app.secrets]\nDATABASE_URL = \"file:{}\"\nAPI_TOKEN = \"file:{}\"\n[hooks.pre_deploy]\ncommand = [\"migrate\", \"up\"]\ntimeout_seconds = 60\n",
        url_file.display(),
        token_file.display()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_argv(markers.clone(), stop.clone());
    let deploy = env.xtask(&["deploy", "--image", &v2, "--json"]);
    stop.store(true, Ordering::Relaxed);
    let argv = watcher.join().unwrap();
    let stdout = String::from_utf8_lossy(&deploy.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&deploy.stderr).into_owned();
    assert!(deploy.status.success(), "{stdout}\n{stderr}");
    assert!(
        argv.is_empty(),
        "a secret value in a process's argv: {argv:?}"
    );
    check("the deploy's --json", &stdout);
    check("the deploy's stderr", &stderr);
    for args in [
        &["history", "--json"][..],
        &["history"],
        &["status", "--json"],
        &["status"],
    ] {
        let out = env.xtask(args);
        check(&format!("{args:?}"), &String::from_utf8_lossy(&out.stdout));
        check(&format!("{args:?}"), &String::from_utf8_lossy(&out.stderr));
    }

    // A secret passed with --env: by name (its value from the environment,
    // so not in argv) and by the shape of its value under an innocent name.
    // Both refused before anything is recorded, and never echoed.
    let before = env.xtask(&["history", "--json"]).stdout;
    for (var, value_from_env) in [("GITHUB_TOKEN", true), ("NOTE", false)] {
        let arg = match value_from_env {
            true => var.to_owned(),
            false => format!("{var}={ENV_MARKER}"),
        };
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "deploy",
                "--image",
                &v2,
                "--json",
                "--env",
                &arg,
                "-e",
                env.arg(),
            ])
            .env(var, ENV_MARKER)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--env {var} must be refused: {stderr}"
        );
        assert!(
            stderr.contains(&format!("{var} looks like a secret")),
            "{stderr}"
        );
        assert_clean(
            &[ENV_MARKER.to_owned()],
            "a refused --env's stdout",
            &String::from_utf8_lossy(&out.stdout),
        );
        assert_clean(
            &[ENV_MARKER.to_owned()],
            "a refused --env's stderr",
            &stderr,
        );
    }
    assert_eq!(
        env.xtask(&["history", "--json"]).stdout,
        before,
        "nothing recorded"
    );

    // The app has them: it reaches the database through the file's URL.
    let client = env.target().await.public_client().unwrap();
    let detailed = client
        .get(format!("{}/health/detailed", env.public_url()))
        .send()
        .await
        .unwrap();
    assert!(detailed.status().is_success());
    let body = detailed.text().await.unwrap();
    check("/health/detailed", &body);
    let checks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(checks["checks"]["postgres"]["status"], "up", "{body}");

    // Every container of the environment, as `docker inspect` shows it.
    let containers = env.containers(&docker, None).await;
    assert!(
        containers.len() >= 4,
        "instances and the balancer: {containers:?}"
    );
    let mut files = 0;
    for c in containers {
        let inspect = docker
            .inspect_container(c.id.as_deref().unwrap(), None)
            .await
            .unwrap();
        let shown = serde_json::to_string(&inspect).unwrap();
        check("docker inspect", &shown);
        let vars = inspect.config.and_then(|c| c.env).unwrap_or_default();
        if vars
            .iter()
            .any(|v| v == "DATABASE_URL_FILE=/run/secrets/DATABASE_URL")
        {
            files += 1;
            assert!(vars
                .iter()
                .any(|v| v == "API_TOKEN_FILE=/run/secrets/API_TOKEN"));
        }
        assert!(
            !vars.iter().any(|v| v.starts_with("DATABASE_URL=")),
            "{vars:?}"
        );
    }
    assert_eq!(files, 3, "each instance gets its secrets as files");

    // The image: its config and every layer's history.
    let image = docker.inspect_image(&v2).await.unwrap();
    check(
        "the image's config",
        &serde_json::to_string(&image).unwrap(),
    );
    let layers = docker.image_history(&v2).await.unwrap();
    check(
        "the image's layers",
        &serde_json::to_string(&layers).unwrap(),
    );
    let _ = env.xtask(&["down"]);
}
