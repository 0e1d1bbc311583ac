//! The service this workspace ships. `app` serves; `app healthcheck` probes a
//! running instance so shell-less images can declare a HEALTHCHECK.
mod config;
mod deps;
mod healthcheck;
mod items;
mod metrics;
mod migrate;
mod routes;
mod shutdown;
mod state;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "app", version = state::VERSION, about = "The service shipped by this workspace")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Probe a running instance; exit 0 when it answers 2xx, 1 otherwise.
    Healthcheck {
        /// Base URL; defaults to this container's own port.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "/health")]
        path: String,
        #[arg(long, default_value_t = 3.0)]
        timeout_seconds: f64,
    },
    /// The schema: apply, revert or show the embedded migrations (DATABASE_URL or DATABASE_URL_FILE)
    #[command(subcommand)]
    Migrate(MigrateAction),
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (or up to --to), one transaction each
    Up {
        #[arg(long)]
        to: Option<i64>,
    },
    /// Revert the newest applied migration (or down to --to VERSION; 0 reverts all)
    Down {
        #[arg(long)]
        to: Option<i64>,
    },
    /// The applied, pending and unknown versions; exit 1 when any is pending
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve()),
        Command::Healthcheck {
            url,
            path,
            timeout_seconds,
        } => runtime.block_on(healthcheck(url, path, timeout_seconds)),
        Command::Migrate(action) => runtime.block_on(migrate(action)),
    }
}

async fn serve() -> ExitCode {
    let config = match config::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("app: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match shutdown::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(url: Option<String>, path: String, timeout_seconds: f64) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let port = std::env::var("PORT")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "8080".into());
        format!("http://127.0.0.1:{port}")
    });
    let result = async {
        let target = healthcheck::target(&url, &path)?;
        healthcheck::probe(&target, Duration::from_secs_f64(timeout_seconds.max(0.1))).await
    }
    .await;
    match result {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("healthcheck: {url}{path} answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(action: MigrateAction) -> ExitCode {
    let config = match config::Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("app migrate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(url) = config.database_url else {
        eprintln!("app migrate: DATABASE_URL (or DATABASE_URL_FILE) is not set");
        return ExitCode::from(2);
    };
    let pg = deps::parse_postgres_url(&url).expect("validated by Config::from_env");
    let result = async {
        let mut client = migrate::connect(&pg).await?;
        match action {
            MigrateAction::Up { to } => {
                let ran = migrate::up(&mut client, to).await?;
                let now = migrate::status(&client).await?.current;
                match ran.as_slice() {
                    [] => println!("schema at version {now}: nothing to apply"),
                    ran => println!("applied {ran:?}: schema at version {now}"),
                }
                Ok(ExitCode::SUCCESS)
            }
            MigrateAction::Down { to } => {
                let current = migrate::status(&client).await?.current;
                let to = to.unwrap_or_else(|| {
                    migrate::MIGRATIONS
                        .iter()
                        .map(|m| m.version)
                        .filter(|v| *v < current)
                        .max()
                        .unwrap_or(0)
                });
                let ran = migrate::down(&mut client, to).await?;
                let now = migrate::status(&client).await?.current;
                match ran.as_slice() {
                    [] => println!("schema at version {now}: nothing to revert"),
                    ran => println!("reverted {ran:?}: schema at version {now}"),
                }
                Ok(ExitCode::SUCCESS)
            }
            MigrateAction::Status { json } => {
                let status = migrate::status(&client).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).expect("serialisable")
                    );
                } else {
                    println!(
                        "schema version {} (this binary carries up to {})",
                        status.current, status.latest
                    );
                    for m in migrate::MIGRATIONS {
                        let applied = status.applied.iter().find(|a| a.version == m.version);
                        let state = applied.map_or("pending".to_owned(), |a| {
                            format!("applied {}", a.applied_at)
                        });
                        println!("  {:04} {:<28} {state}", m.version, m.name);
                    }
                    for v in &status.unknown {
                        println!("  {v:04} (unknown to this binary: applied by a newer release)");
                    }
                }
                Ok(if status.pending.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    }
    .await;
    result.unwrap_or_else(|e: String| {
        eprintln!("app migrate: {e}");
        ExitCode::FAILURE
    })
}

fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        config::LogFormat::Pretty => builder.init(),
    }
}
