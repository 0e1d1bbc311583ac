//! Checks of the service's dependencies: PostgreSQL (required: the service
//! cannot answer without it) and Redis (a cache: down means degraded, not
//! unready). PostgreSQL keeps one connection between checks: a probe every
//! 100 ms from each balancer must not cost the database a new session (a
//! fork, authentication) each time. A broken or stuck one is dropped and
//! the check connects again at once, so a restarted database is seen as up.
use std::{str::FromStr, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::time::{timeout, Instant};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn parse_postgres_url(url: &str) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a postgres:// URL".to_owned());
    }
    tokio_postgres::Config::from_str(url).map_err(|_| {
        "not a valid postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DB)".to_owned()
    })
}

pub fn parse_redis_url(url: &str) -> Result<redis::Client, String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must be a redis:// URL".to_owned());
    }
    redis::Client::open(url)
        .map_err(|_| "not a valid redis:// URL (redis://[:PASSWORD@]HOST:PORT[/DB])".to_owned())
}

/// The name the checks' connection carries in `pg_stat_activity`, unless
/// DATABASE_URL names one.
pub const PG_APPLICATION_NAME: &str = "app-readiness";

#[derive(Clone)]
enum Probe {
    Postgres {
        config: tokio_postgres::Config,
        /// The connection kept between checks; taken out while in use, so a
        /// check cut off by its timeout leaves none behind.
        client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
    },
    Redis {
        client: redis::Client,
        /// The connection kept between checks, like PostgreSQL's: a probe
        /// every 100 ms from each balancer must not open a connection each.
        conn: Arc<tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>>,
    },
}

#[derive(Clone)]
pub struct Dependency {
    pub name: &'static str,
    pub required: bool,
    probe: Probe,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub status: &'static str,
    pub required: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckResult {
    pub fn is_up(&self) -> bool {
        self.status == "up"
    }
}

impl Dependency {
    /// The dependencies named by the configuration; URLs were validated already.
    pub fn from_config(config: &crate::config::Config) -> Vec<Dependency> {
        let mut deps = Vec::new();
        if let Some(url) = &config.database_url {
            let mut pg = parse_postgres_url(url).expect("validated at start");
            if pg.get_application_name().is_none() {
                pg.application_name(PG_APPLICATION_NAME);
            }
            deps.push(Dependency {
                name: "postgres",
                required: true,
                probe: Probe::Postgres {
                    config: pg,
                    client: Default::default(),
                },
            });
        }
        if let Some(url) = &config.redis_url {
            let client = parse_redis_url(url).expect("validated at start");
            deps.push(Dependency {
                name: "redis",
                required: false,
                probe: Probe::Redis {
                    client,
                    conn: Default::default(),
                },
            });
        }
        deps
    }

    pub async fn check(&self) -> CheckResult {
        let started = Instant::now();
        let outcome = match timeout(CHECK_TIMEOUT, self.round_trip()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        CheckResult {
            status: if outcome.is_ok() { "up" } else { "down" },
            required: self.required,
            latency_ms: (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
            error: outcome.err(),
        }
    }

    async fn round_trip(&self) -> Result<(), String> {
        match &self.probe {
            Probe::Postgres { config, client } => {
                let mut kept = client.lock().await;
                if let Some(open) = kept.take().filter(|c| !c.is_closed()) {
                    if open.simple_query("SELECT 1").await.is_ok() {
                        *kept = Some(open);
                        return Ok(());
                    }
                }
                let (open, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connect: {}", describe_pg(&e)))?;
                // Ends by itself when the client is dropped.
                tokio::spawn(connection);
                open.simple_query("SELECT 1")
                    .await
                    .map_err(|e| describe_pg(&e))?;
                *kept = Some(open);
                Ok(())
            }
            Probe::Redis { client, conn } => {
                let mut kept = conn.lock().await;
                if let Some(mut open) = kept.take() {
                    if ping(&mut open).await.is_ok() {
                        *kept = Some(open);
                        return Ok(());
                    }
                }
                let mut open = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("connect: {}", first_line(&e)))?;
                // Named, so an operator (and a test) can tell it in CLIENT LIST.
                let _: Result<(), _> = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(REDIS_CLIENT_NAME)
                    .query_async(&mut open)
                    .await;
                ping(&mut open).await?;
                *kept = Some(open);
                Ok(())
            }
        }
    }
}

const REDIS_CLIENT_NAME: &str = "app-readiness";

async fn ping(conn: &mut redis::aio::MultiplexedConnection) -> Result<(), String> {
    let pong: String = redis::cmd("PING")
        .query_async(conn)
        .await
        .map_err(|e| format!("PING: {}", first_line(&e)))?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("PING answered {pong:?}"))
    }
}

/// The PostgreSQL connection settings among the dependencies, if configured.
pub fn postgres_config(deps: &[Dependency]) -> Option<tokio_postgres::Config> {
    deps.iter().find_map(|d| match &d.probe {
        Probe::Postgres { config, .. } => Some(config.clone()),
        Probe::Redis { .. } => None,
    })
}

/// tokio-postgres errors print their whole chain; keep the cause, never the config.
fn describe_pg(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Redis errors never print the URL, but can run to several lines.
fn first_line(e: &redis::RedisError) -> String {
    e.to_string().lines().next().unwrap_or("error").to_owned()
}
