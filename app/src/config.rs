//! Configuration from the environment, validated once at start so a bad value
//! stops the process with one line naming the variable, never half-way through.
use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub log_format: LogFormat,
    /// How long the process keeps serving after SIGTERM with `/ready` at 503,
    /// so balancers take it out before it stops accepting.
    pub drain: Duration,
    /// Upper bound for in-flight requests to finish once accepting stops.
    pub shutdown_timeout: Duration,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// `/debug/sleep/{ms}`: a slow endpoint that drain tests and load tests use.
    pub debug_routes: bool,
    /// `APP_ERROR_RATE`: this fraction of requests to routes other than the
    /// probes and `/metrics` answers 500, for canary tests. Only with debug routes.
    pub error_rate: f64,
    /// A unix socket to serve on as well as TCP: the deploy balancer reaches
    /// instances through it, so traffic can move between instances by
    /// swapping a symlink instead of reloading the balancer.
    pub listen_socket: Option<std::path::PathBuf>,
}

/// One bad variable. Never carries a URL's value: those hold passwords.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub shown_value: Option<String>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shown_value {
            Some(v) => write!(f, "{}={v}: {}", self.variable, self.problem),
            None => write!(f, "{}: {}", self.variable, self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let files = secret_files(|k| std::env::var(k).ok())?;
        Self::from_lookup(|k| std::env::var(k).ok().or_else(|| files.get(k).cloned()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = |k: &str| get(k).filter(|v| !v.is_empty());
        let port = match value("PORT") {
            None => 8080,
            Some(v) => match v.parse::<u16>() {
                Ok(0) | Err(_) => return Err(shown("PORT", &v, "not a port number (1-65535)")),
                Ok(p) => p,
            },
        };
        let bind = match value("BIND") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => IpAddr::from_str(&v)
                .map_err(|_| shown("BIND", &v, "not an IP address (e.g. 0.0.0.0 or 127.0.0.1)"))?,
        };
        let log_format = match value("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(v) => return Err(shown("LOG_FORMAT", v, "must be `json` or `pretty`")),
        };
        let drain = seconds(&value, "DRAIN_SECONDS", 5)?;
        let shutdown_timeout = seconds(&value, "SHUTDOWN_TIMEOUT_SECONDS", 20)?;
        let database_url = value("DATABASE_URL");
        if let Some(url) = &database_url {
            crate::deps::parse_postgres_url(url)
                .map_err(|problem| hidden("DATABASE_URL", problem))?;
        }
        let redis_url = value("REDIS_URL");
        if let Some(url) = &redis_url {
            crate::deps::parse_redis_url(url).map_err(|problem| hidden("REDIS_URL", problem))?;
        }
        let debug_routes = match value("APP_DEBUG_ROUTES").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(v) => return Err(shown("APP_DEBUG_ROUTES", v, "must be `true` or `false`")),
        };
        let error_rate = match value("APP_ERROR_RATE") {
            None => 0.0,
            Some(v) if !debug_routes => {
                return Err(shown(
                    "APP_ERROR_RATE",
                    &v,
                    "is a test knob, honoured only with APP_DEBUG_ROUTES=true",
                ))
            }
            Some(v) => match v.parse::<f64>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
                _ => {
                    return Err(shown(
                        "APP_ERROR_RATE",
                        &v,
                        "must be a fraction from 0 to 1",
                    ))
                }
            },
        };
        let listen_socket = match value("LISTEN_SOCKET") {
            None => None,
            Some(v) if v.starts_with('/') && v.len() < 100 => Some(std::path::PathBuf::from(v)),
            Some(v) => {
                return Err(shown(
                    "LISTEN_SOCKET",
                    &v,
                    "must be an absolute path shorter than 100 bytes",
                ))
            }
        };
        Ok(Config {
            listen_socket,
            bind,
            port,
            log_format,
            drain,
            shutdown_timeout,
            database_url,
            redis_url,
            debug_routes,
            error_rate,
        })
    }
}

/// `NAME_FILE=/run/secrets/NAME` in place of `NAME`: how Docker secrets
/// (swarm) reach the app, so the value is never in the environment.
pub const SECRET_VARIABLES: [&str; 2] = ["DATABASE_URL", "REDIS_URL"];

fn secret_files(
    get: impl Fn(&str) -> Option<String>,
) -> Result<std::collections::HashMap<&'static str, String>, ConfigError> {
    let mut values = std::collections::HashMap::new();
    for name in SECRET_VARIABLES {
        let Some(path) = get(&format!("{name}_FILE")).filter(|p| !p.is_empty()) else {
            continue;
        };
        let value = std::fs::read_to_string(&path)
            .map_err(|e| hidden(name, format!("{name}_FILE={path} cannot be read: {e}")))?;
        values.insert(name, value.trim_end_matches(['\n', '\r']).to_owned());
    }
    Ok(values)
}

fn seconds(
    value: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match value(variable) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && (0.0..=3600.0).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| shown(variable, &v, "not a number of seconds between 0 and 3600")),
    }
}

fn shown(variable: &'static str, value: &str, problem: &str) -> ConfigError {
    ConfigError {
        variable,
        shown_value: Some(value.to_owned()),
        problem: problem.to_owned(),
    }
}

fn hidden(variable: &'static str, problem: String) -> ConfigError {
    ConfigError {
        variable,
        shown_value: None,
        problem,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_error_rate_knob_needs_debug_routes_and_a_fraction() {
        let err = parse(&[("APP_ERROR_RATE", "0.2")]).unwrap_err();
        assert!(
            err.to_string().contains("only with APP_DEBUG_ROUTES"),
            "{err}"
        );
        let on = [("APP_DEBUG_ROUTES", "true"), ("APP_ERROR_RATE", "0.2")];
        assert_eq!(parse(&on).unwrap().error_rate, 0.2);
        let bad = [("APP_DEBUG_ROUTES", "true"), ("APP_ERROR_RATE", "2")];
        assert!(parse(&bad).is_err());
        let misbehave = crate::routes::Misbehave::new(0.2);
        let failed = (0..1000).filter(|_| misbehave.next_fails()).count();
        assert_eq!(failed, 200);
    }

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.drain, Duration::from_secs(5));
        assert!(c.database_url.is_none());
    }

    #[test]
    fn bad_port_names_the_variable_and_value() {
        let err = parse(&[("PORT", "abc")]).unwrap_err();
        assert_eq!(err.to_string(), "PORT=abc: not a port number (1-65535)");
        assert!(parse(&[("PORT", "0")]).is_err());
        assert!(parse(&[("PORT", "70000")]).is_err());
    }

    #[test]
    fn bad_durations_and_formats_are_rejected() {
        assert_eq!(
            parse(&[("DRAIN_SECONDS", "-1")]).unwrap_err().variable,
            "DRAIN_SECONDS"
        );
        assert_eq!(
            parse(&[("LOG_FORMAT", "xml")]).unwrap_err().variable,
            "LOG_FORMAT"
        );
        assert_eq!(
            parse(&[("DRAIN_SECONDS", "0.5")]).unwrap().drain,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn bad_database_url_never_echoes_its_value() {
        let err = parse(&[("DATABASE_URL", "mysql://u:s3cret@db/x")]).unwrap_err();
        assert_eq!(err.variable, "DATABASE_URL");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn a_secret_comes_from_its_file_and_an_unreadable_file_is_named_without_the_value() {
        let dir = std::env::temp_dir().join(format!("app-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("DATABASE_URL");
        std::fs::write(&file, "postgres://app:s3cret@db:5432/app\n").unwrap();
        let path = file.display().to_string();
        let values = secret_files(|k| (k == "DATABASE_URL_FILE").then(|| path.clone())).unwrap();
        assert_eq!(values["DATABASE_URL"], "postgres://app:s3cret@db:5432/app");
        let err = secret_files(|k| (k == "REDIS_URL_FILE").then(|| "/nonexistent/x".to_owned()))
            .unwrap_err();
        assert_eq!(err.variable, "REDIS_URL");
        assert!(err
            .to_string()
            .contains("REDIS_URL_FILE=/nonexistent/x cannot be read"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
