//! Checks of the service's dependencies: PostgreSQL (required: the service
//! cannot answer without it) and Redis (a cache: down means degraded, not
//! unready). Each check opens a fresh connection, so a probe sees the
//! dependency as a new client would.
use std::{str::FromStr, time::Duration};

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

#[derive(Clone)]
enum Probe {
    Postgres(tokio_postgres::Config),
    Redis(redis::Client),
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
            let pg = parse_postgres_url(url).expect("validated at start");
            deps.push(Dependency {
                name: "postgres",
                required: true,
                probe: Probe::Postgres(pg),
            });
        }
        if let Some(url) = &config.redis_url {
            let client = parse_redis_url(url).expect("validated at start");
            deps.push(Dependency {
                name: "redis",
                required: false,
                probe: Probe::Redis(client),
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
            Probe::Postgres(config) => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connect: {}", describe_pg(&e)))?;
                let driver = tokio::spawn(connection);
                let result = client
                    .simple_query("SELECT 1")
                    .await
                    .map(|_| ())
                    .map_err(|e| describe_pg(&e));
                drop(client);
                driver.abort();
                result
            }
            Probe::Redis(client) => {
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("connect: {}", first_line(&e)))?;
                let pong: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("PING: {}", first_line(&e)))?;
                if pong == "PONG" {
                    Ok(())
                } else {
                    Err(format!("PING answered {pong:?}"))
                }
            }
        }
    }
}

/// The PostgreSQL connection settings among the dependencies, if configured.
pub fn postgres_config(deps: &[Dependency]) -> Option<tokio_postgres::Config> {
    deps.iter().find_map(|d| match &d.probe {
        Probe::Postgres(config) => Some(config.clone()),
        Probe::Redis(_) => None,
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
