//! The schema the app owns: plain SQL files in `app/migrations/`, embedded
//! in the binary (the shell-less image holds nothing else), applied one
//! transaction each and recorded in `schema_migrations`. `app migrate
//! up|down|status` runs them; a session advisory lock keeps two runners
//! (two instances starting, two deploys) from applying the same one twice.
use serde::Serialize;
use tokio_postgres::{types::ToSql, Client};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $name,
            up: include_str!(concat!("../migrations/", $file, ".up.sql")),
            down: include_str!(concat!("../migrations/", $file, ".down.sql")),
        }
    };
}

/// Every migration, oldest first. A new one: two files and one line here
/// (a unit test fails when a file in `app/migrations/` is not listed).
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "create_items", "0001_create_items"),
    migration!(2, "items_created_at_index", "0002_items_created_at_index"),
    migration!(3, "items_note", "0003_items_note"),
];

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Any number: the same for every runner of this schema.
const LOCK_KEY: i64 = 0x7874_6173_6b5f_6d69; // "xtask_mi"

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

#[derive(Debug, Serialize)]
pub struct Applied {
    pub version: i64,
    pub name: String,
    pub applied_at: String,
}

#[derive(Debug, Serialize)]
pub struct Status {
    /// The highest applied version (0: none).
    pub current: i64,
    /// The newest version this binary carries.
    pub latest: i64,
    pub applied: Vec<Applied>,
    /// Known to this binary, not applied.
    pub pending: Vec<i64>,
    /// Applied, unknown to this binary: a newer release migrated the database.
    pub unknown: Vec<i64>,
}

/// An error that says which migration failed and PostgreSQL's reason; never the URL.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(tokio_postgres::error::ErrorPosition::Original(at)) = db.position() {
                text.push_str(&format!(" at character {at}"));
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

async fn applied(client: &Client) -> Result<Vec<Applied>, String> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    if !exists {
        return Ok(vec![]);
    }
    let rows = client
        .query(
            "SELECT version, name, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(rows
        .iter()
        .map(|r| Applied {
            version: r.get(0),
            name: r.get(1),
            applied_at: r.get(2),
        })
        .collect())
}

pub async fn status(client: &Client) -> Result<Status, String> {
    let applied = applied(client).await?;
    let done = |v: i64| applied.iter().any(|a| a.version == v);
    let pending = MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !done(*v))
        .collect();
    let unknown = applied
        .iter()
        .map(|a| a.version)
        .filter(|v| !MIGRATIONS.iter().any(|m| m.version == *v))
        .collect();
    Ok(Status {
        current: applied.iter().map(|a| a.version).max().unwrap_or(0),
        latest: latest(),
        applied,
        pending,
        unknown,
    })
}

/// Holds the migration lock for the session while `work` runs.
async fn locked<T>(
    client: &mut Client,
    work: impl AsyncFnOnce(&mut Client) -> Result<T, String>,
) -> Result<T, String> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| format!("taking the migration lock: {}", describe(&e)))?;
    let result = async {
        client
            .batch_execute(CREATE_TABLE)
            .await
            .map_err(|e| format!("creating schema_migrations: {}", describe(&e)))?;
        work(client).await
    }
    .await;
    // Closing the session frees it too; unlocking keeps a reused client clean.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

/// Applies every pending migration up to `to` (default: all), oldest first,
/// each in its own transaction with its record. Returns the versions applied.
pub async fn up(client: &mut Client, to: Option<i64>) -> Result<Vec<i64>, String> {
    apply(client, MIGRATIONS, to.unwrap_or_else(latest)).await
}

async fn apply(client: &mut Client, migrations: &[Migration], to: i64) -> Result<Vec<i64>, String> {
    locked(client, async |client: &mut Client| {
        let done: Vec<i64> = applied(client).await?.iter().map(|a| a.version).collect();
        let mut ran = vec![];
        for m in migrations
            .iter()
            .filter(|m| m.version <= to && !done.contains(&m.version))
        {
            let record = (
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&m.version as &(dyn ToSql + Sync), &m.name][..],
            );
            in_one_transaction(client, m, m.up, record, "migration").await?;
            ran.push(m.version);
        }
        Ok(ran)
    })
    .await
}

/// Reverts applied migrations, newest first, down to version `to` (0: all).
/// Refuses when the newest applied one is unknown to this binary: only the
/// release that carries it knows how to undo it.
pub async fn down(client: &mut Client, to: i64) -> Result<Vec<i64>, String> {
    locked(client, async |client: &mut Client| {
        let applied = applied(client).await?;
        let mut ran = vec![];
        for a in applied.iter().rev().filter(|a| a.version > to) {
            let Some(m) = MIGRATIONS.iter().find(|m| m.version == a.version) else {
                return Err(format!(
                    "the database is at version {} ({}), which this binary does not carry: run `app migrate down` with the release that applied it",
                    a.version, a.name
                ));
            };
            let record = (
                "DELETE FROM schema_migrations WHERE version = $1",
                &[&m.version as &(dyn ToSql + Sync)][..],
            );
            in_one_transaction(client, m, m.down, record, "reverting migration").await?;
            ran.push(m.version);
        }
        Ok(ran)
    })
    .await
}

/// A migration's SQL and its record in `schema_migrations` in one
/// transaction: a failure leaves neither, and names the migration.
async fn in_one_transaction(
    client: &mut Client,
    m: &Migration,
    sql: &str,
    (record, params): (&str, &[&(dyn ToSql + Sync)]),
    what: &str,
) -> Result<(), String> {
    let failed = |e: tokio_postgres::Error| {
        format!(
            "{what} {} ({}) failed and was rolled back: {}",
            m.version,
            m.name,
            describe(&e)
        )
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.batch_execute(sql).await.map_err(failed)?;
    tx.execute(record, params).await.map_err(failed)?;
    tx.commit().await.map_err(failed)
}

/// Connects for a migration run: no timeout of ours (a migration takes what it takes).
/// A server still starting (SQLSTATE 57P03) is waited for, up to 30 s.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (client, connection) = loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok(pair) => break pair,
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("connecting to DATABASE_URL: {}", describe(&e))),
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("app migrate: connection lost: {}", describe(&e));
        }
    });
    Ok(client)
}

/// The tests' throwaway PostgreSQL cluster (`app/tests/support/postgres.rs`).
#[cfg(test)]
#[path = "../tests/support/postgres.rs"]
mod test_postgres;

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_postgres as postgres;

    #[tokio::test]
    async fn a_failing_migration_is_rolled_back_whole_and_the_version_stays() {
        let pg = postgres::Postgres::start();
        let config = crate::deps::parse_postgres_url(&pg.url()).unwrap();
        let mut client = connect(&config).await.unwrap();
        let broken = [
            Migration { version: 1, name: "good", up: "CREATE TABLE good (id int)", down: "DROP TABLE good" },
            Migration {
                version: 2,
                name: "bad",
                up: "CREATE TABLE half (id int); INSERT INTO good VALUES (1); SELECT no_such_column FROM good",
                down: "",
            },
        ];
        let err = apply(&mut client, &broken, 2).await.unwrap_err();
        assert!(err.starts_with("migration 2 (bad) failed and was rolled back: ERROR: column \"no_such_column\" does not exist"), "{err}");
        let version: i64 = client
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, 1, "the version stays where it was");
        let half: bool = client
            .query_one("SELECT to_regclass('half') IS NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(half, "nothing of the failed migration remains");
        let rows: i64 = client
            .query_one("SELECT count(*) FROM good", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0);
        // The lock was released: another run takes it at once.
        assert_eq!(
            apply(&mut client, &broken[..1], 2).await.unwrap(),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn versions_rise_and_every_file_in_migrations_is_embedded() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut expected: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|m| {
                let stem = format!("{:04}_{}", m.version, m.name);
                [format!("{stem}.down.sql"), format!("{stem}.up.sql")]
            })
            .collect();
        expected.sort();
        assert_eq!(
            files, expected,
            "every migration file is listed in MIGRATIONS, named NNNN_name.up|down.sql"
        );
        assert!(MIGRATIONS
            .iter()
            .all(|m| !m.up.trim().is_empty() && !m.down.trim().is_empty()));
    }
}
