//! Release hooks on the Docker target against a real PostgreSQL that the
//! environment's containers reach at their network's gateway (password
//! login from that subnet only): `pre_deploy = ["migrate", "up"]` runs the
//! app's own embedded migrations once, in the new image, with the release's
//! secrets, before any instance takes traffic. A failing migration, a hook
//! past its timeout and a deploy killed during its hook leave no container,
//! no traffic moved and nothing for a person to clean up.
#[path = "../../app/tests/support/postgres.rs"]
mod postgres;
mod support;

use std::time::Duration;

use postgres::Postgres;
use support::deploy_env::TestEnv;
use xtask::{backup::pg, targets::Target};

const PASSWORD: &str = "hook-pw-7f3a";

/// Database `name` owned by role `app`; its URL as the containers reach it.
async fn database(pg: &Postgres, gateway: &str, name: &str) -> String {
    let admin = pg::Conn::from_url(&pg.url())
        .unwrap()
        .client()
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN \
             CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'; END IF; END $$"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER app"))
        .await
        .unwrap();
    format!("postgres://app:{PASSWORD}@{gateway}:{}/{name}", pg.port)
}

/// The same database from this machine.
fn local(url: &str, pg: &Postgres) -> String {
    let name = url.rsplit('/').next().unwrap();
    format!("postgres://app:{PASSWORD}@127.0.0.1:{}/{name}", pg.port)
}

async fn query_i64(url: &str, sql: &str) -> i64 {
    let client = pg::Conn::from_url(url).unwrap().client().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn hook_containers(docker: &bollard::Docker, env: &TestEnv) -> usize {
    env.containers(docker, Some("hook")).await.len()
}

/// Points the environment's DATABASE_URL secret (a file) at `url` and sets its pre_deploy hook.
fn configure(env: &TestEnv, url: &str, timeout_seconds: u64) {
    configure_command(env, url, timeout_seconds, "[\"migrate\", \"up\"]");
}

fn configure_command(env: &TestEnv, url: &str, timeout_seconds: u64, command: &str) {
    let secret = env.path.with_extension("db-url");
    std::fs::write(&secret, url).unwrap();
    let text = std::fs::read_to_string(&env.path).unwrap();
    let base = text.split("\n[app.secrets]").next().unwrap().to_owned();
    std::fs::write(
        &env.path,
        format!(
            "{base}\n[app.secrets]\nDATABASE_URL = \"file:{}\"\n[hooks.pre_deploy]\ncommand = {command}\ntimeout_seconds = {timeout_seconds}\n",
            secret.display()
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pre_deploy_migrates_once_before_traffic_and_a_failing_slow_or_killed_hook_moves_none() {
    let _serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    support::balancer_image(&docker).await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    let env = TestEnv::new("hooks", "rolling", 0);
    let (ok, first, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{first}\n{stderr}");
    let (gw, subnet) = env.gateway(&docker).await;
    let pg = Postgres::start_reachable_from(&gw, &subnet);

    // The schema up to version 2, made by the hook of the first release
    // that names the database; rows written before the next deploy.
    let url = database(&pg, &gw, "appdb").await;
    let db = local(&url, &pg);
    configure_command(&env, &url, 60, "[\"migrate\", \"up\", \"--to\", \"2\"]");
    let (ok, made, stderr) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(ok, "{made}\n{stderr}");
    let hooks = &made["release"]["hooks"];
    assert_eq!(hooks[0]["hook"], "pre_deploy", "{made}");
    assert_eq!(hooks[0]["outcome"], "passed", "{made}");
    assert!(
        !hooks[0]["output"].as_str().unwrap().contains(PASSWORD),
        "no secret in the stored output: {hooks}"
    );
    assert_eq!(
        query_i64(&db, "SELECT max(version) FROM schema_migrations").await,
        2
    );
    let client = pg::Conn::from_url(&db).unwrap().client().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO items (name) SELECT 'before ' || g FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();

    // The migration that adds a column (3, additive), run by the next
    // deploy's hook under keep-alive load and while the app takes writes.
    configure(&env, &url, 60);
    let public = env.target().await.public_client().unwrap();
    let load = env.load(public.clone()).await;
    let writer = Writer::start(public, format!("{}/items", env.public_url()));
    let (ok, migrated, stderr) = env.xtask_json(&["deploy", "--image", &v1]);
    assert!(ok, "{migrated}\n{stderr}");
    let (written, write_errors) = writer.stop().await;
    assert!(
        write_errors.is_empty(),
        "writes during the deploy: {write_errors:?}"
    );
    assert!(
        written > 10,
        "the app took writes during the deploy: {written}"
    );
    assert_eq!(
        query_i64(&db, "SELECT max(version) FROM schema_migrations").await,
        3
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'note'"
        )
        .await,
        1,
        "the column is there"
    );
    let after = Writer::start(
        env.target().await.public_client().unwrap(),
        format!("{}/items", env.public_url()),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written_after, after_errors) = after.stop().await;
    assert!(
        after_errors.is_empty() && written_after > 0,
        "{after_errors:?}"
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM items").await,
        50 + written as i64 + written_after as i64,
        "rows written before, during and after the migration are all there"
    );
    let served = migrated["release"]["id"].clone();
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(report.ok > 100);

    // A migration with an SQL error: failed before any traffic moved, the
    // error in the report and the history, the schema version unchanged.
    let broken = database(&pg, &gw, "brokendb").await;
    let broken_local = local(&broken, &pg);
    pg::Conn::from_url(&broken_local)
        .unwrap()
        .client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE items (id int)")
        .await
        .unwrap();
    configure(&env, &broken, 60);
    let (ok, failed, _) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(!ok);
    let reason = failed["release"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("pre_deploy (migrate up) exited with"),
        "{reason}"
    );
    assert!(reason.contains("no traffic moved"), "{reason}");
    assert!(
        failed["failure_logs"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "the hook's output is the failure's log: {failed}"
    );
    let history = env.xtask_json(&["history"]).1;
    let recorded = history
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == failed["release"]["id"])
        .unwrap();
    assert!(recorded["hooks"][0]["output"]
        .as_str()
        .unwrap()
        .contains("already exists"));
    assert_eq!(
        query_i64(&broken_local, "SELECT count(*) FROM schema_migrations").await,
        0,
        "the failed migration was rolled back whole: no version recorded"
    );
    assert_eq!(hook_containers(&docker, &env).await, 0);
    let status = env.xtask_json(&["status"]).1;
    assert_eq!(status["active_release"]["id"], served, "{status}");

    // A hook past its timeout: the migration waits on a lock held here.
    configure(&env, &url, 2);
    let blocker = pg::Conn::from_url(&db).unwrap().client().await.unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (ok, slow, _) = env.xtask_json(&["deploy", "--image", &v2]);
    assert!(!ok);
    assert!(
        slow["release"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{slow}"
    );
    assert_eq!(
        hook_containers(&docker, &env).await,
        0,
        "the timed-out hook is removed"
    );

    // The deploy killed while its hook waits: the next command cleans up.
    configure(&env, &url, 60);
    let mut child = env.spawn_deploy(&v2);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hook_containers(&docker, &env).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hook container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        hook_containers(&docker, &env).await,
        1,
        "left by the killed run"
    );
    let (_, after, stderr) = env.xtask_json(&["status"]);
    assert_eq!(hook_containers(&docker, &env).await, 0, "{after}\n{stderr}");
    assert!(after["lock"].is_null(), "the lock is free again: {after}");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM schema_migrations").await,
        3
    );
}

/// POSTs items through the public URL, one after another, until stopped.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Writer {
    fn start(client: reqwest::Client, url: String) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut written, mut errors) = (0u64, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let body = serde_json::json!({ "name": format!("written {written}") });
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 201 => written += 1,
                    Ok(r) => errors.push(format!("HTTP {}", r.status())),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (written, errors)
        });
        Writer { stop, task }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The app image relabelled as a release whose migrations go up to
/// `version`, `additive` of them tolerated by older releases.
async fn schema_image(
    docker: &bollard::Docker,
    base: &str,
    version: i64,
    additive: &str,
) -> String {
    let reference = format!(
        "xtask-test-app:schema{version}-{}",
        additive.replace(',', "_")
    );
    let tar = xtask::image::context::tar(
        &format!(
            "FROM {base}\nLABEL xtask.schema=\"{version}\" xtask.schema.additive=\"{additive}\"\n"
        ),
        &[],
    )
    .unwrap();
    xtask::image::build_context(docker, tar, std::slice::from_ref(&reference), true)
        .await
        .unwrap();
    reference
}

/// A rollback to a release that needs an older schema is refused with the
/// fix named and nothing changed; `--migrate-down` reverts the newer
/// migration in the active release's image first; a rollback across a
/// migration marked additive needs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_to_an_older_schema_is_refused_unless_migrated_down() {
    let _serial = support::SERIAL.lock().await;
    let (docker, _) = support::docker().await;
    support::balancer_image(&docker).await;
    let base = support::built_image(&docker).await.tags[0].clone();
    let old = schema_image(&docker, &base, 1, "").await;
    let new = schema_image(&docker, &base, 2, "").await;
    let tolerant = schema_image(&docker, &base, 2, "2").await;
    let env = TestEnv::new("schema", "rolling", 0);
    assert!(env.xtask_json(&["deploy", "--image", &old]).0);
    let (gw, subnet) = env.gateway(&docker).await;
    let pg = Postgres::start_reachable_from(&gw, &subnet);
    let url = database(&pg, &gw, "schemadb").await;
    let db = local(&url, &pg);
    let version = || {
        query_i64(
            &db,
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
        )
    };

    configure_command(&env, &url, 60, "[\"migrate\", \"up\", \"--to\", \"1\"]");
    let (ok, r2, stderr) = env.xtask_json(&["deploy", "--image", &old]);
    assert!(ok, "{r2}\n{stderr}");
    assert_eq!(r2["release"]["schema"]["version"], 1, "{r2}");
    configure_command(&env, &url, 60, "[\"migrate\", \"up\", \"--to\", \"2\"]");
    let (ok, r3, stderr) = env.xtask_json(&["deploy", "--image", &new]);
    assert!(ok, "{r3}\n{stderr}");
    assert_eq!(version().await, 2);

    let refused = env.xtask(&["rollback"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("needs schema 1")
            && stderr.contains("--migrate-down")
            && stderr.contains("--restore BACKUP")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(version().await, 2);
    let status = env.xtask_json(&["status"]).1;
    assert_eq!(status["active_release"]["id"], r3["release"]["id"]);

    let (ok, down, stderr) = env.xtask_json(&["rollback", "--migrate-down"]);
    assert!(ok, "{down}\n{stderr}");
    assert_eq!(down["release"]["restores"], r2["release"]["id"]);
    assert_eq!(
        down["release"]["hooks"][0]["hook"], "migrate_down",
        "{down}"
    );
    assert_eq!(version().await, 1, "reverted by r3's own down migration");

    // --restore: a backup taken at schema 1 brings the database back
    // before the rollback to a release that needs it.
    let backups = tempfile::tempdir().unwrap();
    let local_url = env.path.with_extension("local-url");
    std::fs::write(&local_url, &db).unwrap();
    let backup_table = format!(
        "[backup]\ndir = \"{}\"\ndatabase_url = \"file:{}\"\n",
        backups.path().display(),
        local_url.display()
    );
    env.append(&backup_table);
    let (ok, taken, stderr) = env.xtask_json(&["backup", "create"]);
    assert!(ok, "{taken}\n{stderr}");
    assert_eq!(taken["manifest"]["schema_version"], 1, "{taken}");
    let backup = taken["manifest"]["id"].as_str().unwrap().to_owned();
    let (ok, again, stderr) = env.xtask_json(&["deploy", "--image", &new]);
    assert!(ok, "{again}\n{stderr}");
    assert_eq!(version().await, 2);
    let (ok, restored, stderr) = env.xtask_json(&["rollback", "--restore", &backup]);
    assert!(ok, "{restored}\n{stderr}");
    assert_eq!(version().await, 1, "the backup's schema is back");
    let text = std::fs::read_to_string(&env.path).unwrap();
    std::fs::write(&env.path, text.replace(&backup_table, "")).unwrap();

    let (ok, r5, stderr) = env.xtask_json(&["deploy", "--image", &tolerant]);
    assert!(ok, "{r5}\n{stderr}");
    assert_eq!(version().await, 2);
    let (ok, free, stderr) = env.xtask_json(&["rollback"]);
    assert!(ok, "across an additive migration: {free}\n{stderr}");
    assert!(free["release"]["hooks"].is_null(), "{free}");
    assert_eq!(version().await, 2, "the additive migration stays");
}
