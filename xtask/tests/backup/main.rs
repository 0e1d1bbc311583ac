//! `cargo xtask backup` against a real PostgreSQL started by the test (the
//! app's throwaway-cluster helper), with the app's own migrations applied
//! and a password-protected, non-superuser role as the app would use.
mod moto;
mod offsite;
#[path = "../../../app/tests/support/postgres.rs"]
mod postgres;

use std::path::Path;

use postgres::Postgres;
use xtask::backup::{self, pg, Backups};

const PASSWORD: &str = "s3cret-pw";

/// The app's database: role `app` (CREATEDB, for verify's scratch database),
/// database `appdb`, the app's migrations from `app/migrations/`, `rows` items.
async fn app_database(pg: &Postgres, rows: i64) -> String {
    let admin = pg::Conn::from_url(&pg.url())
        .unwrap()
        .client()
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE app LOGIN CREATEDB PASSWORD '{PASSWORD}'"
        ))
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE appdb OWNER app")
        .await
        .unwrap();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{}/appdb", pg.port);
    let client = pg::Conn::from_url(&url).unwrap().client().await.unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/migrations");
    let mut ups: Vec<_> = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".up.sql"))
        .collect();
    ups.sort();
    client
        .batch_execute("CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .unwrap();
    for (i, up) in ups.iter().enumerate() {
        client
            .batch_execute(&std::fs::read_to_string(up).unwrap())
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, 'm')",
                &[&(i as i64 + 1)],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, $1::bigint) g",
            &[&rows],
        )
        .await
        .unwrap();
    url
}

fn backups(url: &str, dir: &Path, keep: usize) -> Backups {
    Backups {
        environment: "test".into(),
        dir: dir.to_path_buf(),
        keep,
        conn: pg::Conn::from_url(url).unwrap(),
        offsite: None,
    }
}

async fn stats(url: &str) -> pg::Tables {
    let client = pg::Conn::from_url(url).unwrap().client().await.unwrap();
    pg::table_stats(&client).await.unwrap()
}

async fn sql(url: &str, statement: &str) {
    let client = pg::Conn::from_url(url).unwrap().client().await.unwrap();
    client.batch_execute(statement).await.unwrap();
}

async fn names(url: &str) -> Vec<(i64, String)> {
    let client = pg::Conn::from_url(url).unwrap().client().await.unwrap();
    client
        .query("SELECT id, name FROM items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn create_then_rows_deleted_then_restore_brings_every_row_back() {
    let pg = Postgres::start();
    let url = app_database(&pg, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(&url, dir.path(), 5);
    let before = names(&url).await;

    let created = backup::create(&b, Some("r-test".into())).await.unwrap();
    let m = &created.manifest;
    assert_eq!(m.schema_version, Some(3));
    assert_eq!(m.release.as_deref(), Some("r-test"));
    assert_eq!(m.database, "appdb");
    assert_eq!(m.tables["public.items"].rows, 1000);
    assert_eq!(m.tables["public.schema_migrations"].rows, 3);
    assert_eq!(m.tables, stats(&url).await);
    let (sha, size) = backup::store::sha256_file(&created.path).unwrap();
    assert_eq!((sha, size), (m.sha256.clone(), m.size_bytes));
    let manifest_text = std::fs::read_to_string(dir.path().join(format!("{}.json", m.id))).unwrap();
    assert!(!manifest_text.contains(PASSWORD), "{manifest_text}");

    // One value changed: same count, another checksum.
    sql(&url, "UPDATE items SET name = 'x' WHERE id = 5").await;
    let changed = stats(&url).await;
    assert_eq!(changed["public.items"].rows, 1000);
    assert_ne!(
        changed["public.items"].checksum,
        m.tables["public.items"].checksum
    );

    // Data lost and changed after the backup.
    sql(
        &url,
        "DELETE FROM items WHERE id % 2 = 0; UPDATE items SET name = 'changed' WHERE id < 10; INSERT INTO items (name) VALUES ('after the backup')",
    )
    .await;
    assert_ne!(names(&url).await, before);

    let damaged = stats(&url).await;
    let restored = backup::restore(&b, &m.id, true).await.unwrap();
    assert!(restored.passed, "{restored:#?}");
    // The database as it was just before is a backup too: the restore can be undone.
    let safety = restored.safety_backup.clone().expect("a safety backup");
    let entries = backup::list(&b).unwrap();
    let before_restore = entries.iter().find(|e| e.manifest.id == safety).unwrap();
    assert_eq!(before_restore.manifest.tables, damaged);
    assert!(before_restore
        .manifest
        .note
        .as_deref()
        .unwrap()
        .contains(&m.id));
    assert_eq!(names(&url).await, before, "every row back, as it was");
    assert_eq!(stats(&url).await, m.tables, "checksums equal");
    // The sequence came back too: the next id follows the restored rows.
    let client = b.conn.client().await.unwrap();
    let next: i64 = client
        .query_one("INSERT INTO items (name) VALUES ('next') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 1001);
}

#[tokio::test]
async fn a_truncated_or_unreadable_backup_is_refused_and_the_database_is_untouched() {
    let pg = Postgres::start();
    let url = app_database(&pg, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(&url, dir.path(), 5);
    let created = backup::create(&b, None).await.unwrap();
    sql(&url, "DELETE FROM items WHERE id > 250").await;
    let now = stats(&url).await;

    // Truncated: the size and sha256 no longer match the manifest.
    let bytes = std::fs::read(&created.path).unwrap();
    std::fs::write(&created.path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!(
        "{:#}",
        backup::restore(&b, "latest", true).await.unwrap_err()
    );
    assert!(err.contains("refusing to restore"), "{err}");
    assert!(err.contains("truncated or corrupt"), "{err}");
    assert!(err.contains("the database was not touched"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert_eq!(stats(&url).await, now, "untouched");

    // A file whose manifest matches but that pg_restore cannot read.
    let garbage = b"PGDMP this is not a custom-format archive".repeat(10);
    std::fs::write(&created.path, &garbage).unwrap();
    let manifest_path = dir.path().join(format!("{}.json", created.manifest.id));
    let mut manifest = created.manifest.clone();
    manifest.sha256 = backup::store::sha256_file(&created.path).unwrap().0;
    manifest.size_bytes = garbage.len() as u64;
    backup::store::write_manifest(&manifest_path, &manifest).unwrap();
    let err = format!(
        "{:#}",
        backup::restore(&b, &manifest.id, true).await.unwrap_err()
    );
    assert!(
        err.contains("pg_restore cannot read its table of contents"),
        "{err}"
    );
    assert!(err.contains("the database was not touched"), "{err}");
    assert_eq!(stats(&url).await, now, "untouched");
    assert_eq!(
        backup::list(&b).unwrap().len(),
        1,
        "refused before any safety backup"
    );
}

#[tokio::test]
async fn verify_passes_on_a_good_file_and_fails_on_a_corrupt_one() {
    let pg = Postgres::start();
    let url = app_database(&pg, 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(&url, dir.path(), 5);
    let created = backup::create(&b, None).await.unwrap();

    let good = backup::verify(&b, "latest").await.unwrap();
    assert!(good.passed, "{good:#?}");
    let names: Vec<&str> = good.checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "sha256",
        "pg_restore --list",
        "restore into a scratch database",
        "table public.items",
        "table public.schema_migrations",
        "schema version",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }

    // One byte flipped in the middle of the data.
    let mut bytes = std::fs::read(&created.path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&created.path, &bytes).unwrap();
    let bad = backup::verify(&b, &created.manifest.id).await.unwrap();
    assert!(!bad.passed);
    let failed: Vec<_> = bad.checks.iter().filter(|c| !c.ok).collect();
    assert!(failed[0].detail.contains("sha256"), "{bad:#?}");

    // No scratch database left behind.
    let client = b.conn.client().await.unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'xtask_verify_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_backup_taken_under_concurrent_writes_matches_its_manifest() {
    let pg = Postgres::start();
    let url = app_database(&pg, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(&url, dir.path(), 5);
    let writer_url = url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let writer = tokio::spawn(async move {
        let client = pg::Conn::from_url(&writer_url)
            .unwrap()
            .client()
            .await
            .unwrap();
        let mut written = 0;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            client
                .execute("INSERT INTO items (name) VALUES ('during')", &[])
                .await
                .unwrap();
            written += 1;
        }
        written
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let created = backup::create(&b, None).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0);
    // The manifest and the dump are one snapshot: the scratch restore matches it exactly.
    let checked = backup::verify(&b, &created.manifest.id).await.unwrap();
    assert!(checked.passed, "{checked:#?}");
}

#[tokio::test]
async fn retention_keeps_the_newest_n() {
    let pg = Postgres::start();
    let url = app_database(&pg, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let b = backups(&url, dir.path(), 2);
    let mut ids = vec![];
    for _ in 0..4 {
        ids.push(backup::create(&b, None).await.unwrap().manifest.id);
    }
    let kept: Vec<String> = backup::list(&b)
        .unwrap()
        .into_iter()
        .map(|e| e.manifest.id)
        .collect();
    assert_eq!(kept, vec![ids[3].clone(), ids[2].clone()], "newest first");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    files.sort();
    let mut want: Vec<String> = ids[2..]
        .iter()
        .flat_map(|id| [format!("{id}.dump"), format!("{id}.json")])
        .collect();
    want.sort();
    assert_eq!(files, want);
}

/// The command line end to end, from an environment file: the URL comes
/// from the variable `[backup] database_url` names and is never printed.
#[tokio::test]
async fn the_command_line_creates_lists_and_verifies_without_printing_the_url() {
    let pg = Postgres::start();
    let url = app_database(&pg, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let table = format!(
        "[backup]\ndir = \"{}\"\nkeep = 3\ndatabase_url = \"env:XTASK_BACKUP_TEST_URL\"\n",
        dir.path().join("store").display()
    );
    let env_file = env_file(dir.path(), "backuptest", &table);
    let vars = [("XTASK_BACKUP_TEST_URL", url.as_str())];
    let xtask = |args: &[&str]| run_cli(&env_file, args, &vars, &[PASSWORD]);
    let (code, text) = xtask(&["backup", "create", "--release", "r-cli"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("public.items") && text.contains("100 rows"),
        "{text}"
    );
    let (code, text) = xtask(&["backup", "list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("r-cli"), "{text}");
    let (code, text) = xtask(&["backup", "verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("passed"), "{text}");
    let (code, text) = xtask(&["backup", "restore", "latest"]);
    assert_eq!(code, Some(1));
    assert!(text.contains("pass --yes"), "{text}");
    let (code, text) = xtask(&["backup", "restore", "latest", "--yes", "--json"]);
    assert_eq!(code, Some(0), "{text}");
}

/// The shipped dev environment plus `table`, written as `<name>.toml` in `dir`.
fn env_file(dir: &Path, name: &str, table: &str) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infrastructure/environments/dev.toml"),
    )
    .unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("{shipped}\n{table}")).unwrap();
    path
}

/// `cargo xtask <args> -e <env_file>` with `vars` set; its exit code and
/// output, which must not contain any of `never_shown`.
fn run_cli(
    env_file: &Path,
    args: &[&str],
    vars: &[(&str, &str)],
    never_shown: &[&str],
) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("-e")
        .arg(env_file)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in never_shown {
        assert!(!text.contains(secret), "{text}");
    }
    (out.status.code(), text)
}
