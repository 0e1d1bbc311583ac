//! PostgreSQL for backups: the connection (a secret URL that never reaches
//! argv, a log or an error), the client tools (`pg_dump`, `pg_restore`,
//! Debian's `postgresql-client`) and the per-table row counts and checksums
//! a backup's manifest records and `verify` compares.
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio_postgres::{config::Host, Client};

/// A database to back up or restore into. Built from the URL once; what
/// the client tools get is PG* variables and a 0600 password file.
#[derive(Clone)]
pub struct Conn {
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.describe())
    }
}

/// One table's contents, as the manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    pub rows: i64,
    /// `hash64x2:A.B`: two 64-bit hashes of each row's text, each summed over the rows.
    pub checksum: String,
}

pub type Tables = BTreeMap<String, TableStats>;

impl Conn {
    /// Parses the URL; an error never carries it.
    pub fn from_url(url: &str) -> Result<Conn> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("the database URL must be a postgres:// URL");
        }
        let config = tokio_postgres::Config::from_str(url).map_err(|_| {
            anyhow::anyhow!(
                "the database URL is not a valid postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DB)"
            )
        })?;
        if config.get_hosts().is_empty() {
            bail!("the database URL names no host (postgres://USER:PASSWORD@HOST:PORT/DB)");
        }
        if config.get_dbname().is_none() {
            bail!("the database URL names no database (postgres://USER:PASSWORD@HOST:PORT/DB)");
        }
        Ok(Conn { config })
    }

    /// The same server and user, another database (verify's scratch one).
    pub fn with_dbname(&self, dbname: &str) -> Conn {
        let mut config = self.config.clone();
        config.dbname(dbname);
        Conn { config }
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    /// For messages: user, host, port and database; never the password.
    pub fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            self.config.get_user().unwrap_or("?"),
            self.dbname()
        )
    }

    pub async fn client(&self) -> Result<Client> {
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {}: {}", self.describe(), describe(&e)))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The client tool `program` set up to reach this database: PG*
    /// variables (the caller's own PG* removed) and, when the URL has a
    /// password, a 0600 password file that lives as long as the returned guard.
    pub fn command(
        &self,
        program: &Path,
    ) -> Result<(tokio::process::Command, Option<tempfile::NamedTempFile>)> {
        let mut command = tokio::process::Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        let hosts = self.config.get_hosts();
        let host = hosts
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        command.env("PGHOST", host);
        let ports = self.config.get_ports();
        if !ports.is_empty() {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            command.env("PGPORT", ports.join(","));
        }
        if let Some(user) = self.config.get_user() {
            command.env("PGUSER", user);
        }
        command.env("PGDATABASE", self.dbname());
        command.env("PGAPPNAME", "xtask-backup");
        if let Some(timeout) = self.config.get_connect_timeout() {
            command.env("PGCONNECT_TIMEOUT", timeout.as_secs().max(1).to_string());
        }
        command.env(
            "PGSSLMODE",
            match self.config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => "disable",
                tokio_postgres::config::SslMode::Require => "require",
                _ => "prefer",
            },
        );
        let passfile = match self.config.get_password() {
            None => None,
            Some(password) => {
                // tempfile creates it 0600, readable by this user only.
                let mut file = tempfile::Builder::new()
                    .prefix("xtask-pgpass-")
                    .tempfile()
                    .context("creating the temporary password file")?;
                let password = String::from_utf8_lossy(password)
                    .replace('\\', "\\\\")
                    .replace(':', "\\:");
                writeln!(file, "*:*:*:*:{password}")
                    .context("writing the temporary password file")?;
                file.flush()?;
                command.env("PGPASSFILE", file.path());
                Some(file)
            }
        };
        command.stdin(std::process::Stdio::null());
        Ok((command, passfile))
    }

    /// Runs a client tool to completion; its stderr is in the error (never the password).
    pub async fn run(&self, program: &Path, args: &[&str]) -> Result<String> {
        let (mut command, _passfile) = self.command(program)?;
        let name = program
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let out = command
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {name}"))?;
        let stderr = self.scrub(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("{name} failed ({}): {}", out.status, stderr.trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Any trace of the password taken out of a tool's output.
    pub fn scrub(&self, text: &str) -> String {
        match self.config.get_password().map(String::from_utf8_lossy) {
            Some(password) if !password.is_empty() => text.replace(password.as_ref(), "***"),
            _ => text.to_owned(),
        }
    }
}

/// A tokio-postgres error: PostgreSQL's message, never the connection settings.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// `pg_dump`, `pg_restore`: on PATH or in Debian's versioned folder (newest first).
pub fn tool(program: &str) -> Result<PathBuf> {
    if let Ok(found) = which::which(program) {
        return Ok(found);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(program))
        .filter(|p| p.is_file())
        .collect();
    versioned.sort();
    versioned.pop().with_context(|| {
        format!("`{program}` is not installed: apt-get install postgresql-client (Debian's PostgreSQL client tools)")
    })
}

/// User tables, as quoted `schema.table` names.
pub async fn tables(client: &impl tokio_postgres::GenericClient) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
               AND schemaname NOT LIKE 'pg\\_temp%' AND schemaname NOT LIKE 'pg\\_toast%'
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("listing tables: {}", describe(&e)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Row count and checksum of every user table, as `client` sees them (in a
/// snapshot transaction: exactly what a dump with that snapshot holds).
pub async fn table_stats(client: &impl tokio_postgres::GenericClient) -> Result<Tables> {
    // A row's text depends on these settings: the same everywhere we compare.
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
             SET extra_float_digits = 3; SET bytea_output = 'hex'",
        )
        .await
        .map_err(|e| anyhow::anyhow!("setting output formats: {}", describe(&e)))?;
    let mut stats = Tables::new();
    for table in tables(client).await? {
        // Every column, as the row's text, hashed with two seeds; the
        // hashes summed as numeric (no overflow): no sort, no memory per
        // row, independent of the rows' physical order. hashtextextended is
        // the hash partitioning relies on, so it is stable across versions.
        let sql = format!(
            "SELECT count(*)::bigint,
                    coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text
                    || '.' || coalesce(sum(hashtextextended(t::text, 1)::numeric), 0)::text
             FROM {table} t"
        );
        let row = client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(|e| anyhow::anyhow!("reading {table}: {}", describe(&e)))?;
        stats.insert(
            table,
            TableStats {
                rows: row.get(0),
                checksum: format!("hash64x2:{}", row.get::<_, String>(1)),
            },
        );
    }
    Ok(stats)
}

/// The app's schema version (`schema_migrations`, `app migrate`), if it has one.
pub async fn schema_version(client: &impl tokio_postgres::GenericClient) -> Result<Option<i64>> {
    let row = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| anyhow::anyhow!("looking for schema_migrations: {}", describe(&e)))?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .map_err(|e| anyhow::anyhow!("reading schema_migrations: {}", describe(&e)))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_reaches_tools_in_a_0600_file_never_in_argv_or_env() {
        use std::os::unix::fs::PermissionsExt;
        let conn =
            Conn::from_url("postgres://app:s3c%3Ar%5Cet@db.internal:6543/appdb?connect_timeout=5")
                .unwrap();
        assert_eq!(conn.describe(), "app@db.internal:6543/appdb");
        assert!(!format!("{conn:?}").contains("s3c"));
        let (command, passfile) = conn.command(Path::new("/usr/bin/pg_dump")).unwrap();
        let command = command.as_std();
        assert_eq!(command.get_args().count(), 0);
        let env: BTreeMap<String, Option<String>> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(
            env.values().flatten().all(|v| !v.contains("s3c")),
            "{env:?}"
        );
        assert_eq!(env["PGHOST"].as_deref(), Some("db.internal"));
        assert_eq!(env["PGPORT"].as_deref(), Some("6543"));
        assert_eq!(env["PGDATABASE"].as_deref(), Some("appdb"));
        assert_eq!(env["PGCONNECT_TIMEOUT"].as_deref(), Some("5"));
        let passfile = passfile.expect("a password file");
        assert_eq!(
            env["PGPASSFILE"].as_deref(),
            Some(passfile.path().to_str().unwrap())
        );
        let mode = std::fs::metadata(passfile.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(passfile.path()).unwrap(),
            "*:*:*:*:s3c\\:r\\\\et\n",
            "escaped as libpq reads it"
        );
        assert_eq!(
            conn.scrub("password s3c:r\\et rejected"),
            "password *** rejected"
        );
        for bad in ["mysql://a:s3cret@h/d", "postgres://a:s3cret@h:99999/d"] {
            let err = Conn::from_url(bad).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
