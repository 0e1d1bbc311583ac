//! Secrets never go into a release's plain variables. `--env` values and
//! `[app.env]` are stored as they are in the release history on the target
//! (container labels and records, swarm configs, a Kubernetes ConfigMap),
//! where anyone who can read the target reads them. So a deploy refuses a
//! variable whose name or value looks secret and names the place it belongs
//! instead; and every report or history shown passes through `redact`,
//! which hides the same things (for records written before this check).
use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::environment::{Environment, TargetKind};

/// Name parts that make a variable a secret: PASS covers PASSWORD, PASSWD
/// and PASSPHRASE.
const SECRET_WORDS: &[&str] = &["PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// Whole parts of a name (between `_`, `-` or `.`) that make it a secret;
/// too short to look for inside other words (`PW` is in `UPWARD`).
const SECRET_PARTS: &[&str] = &["PW", "PWD", "AUTH", "PRIVATE", "CREDS", "SALT"];

/// Why a variable name looks secret: the word it contains.
pub fn secret_name(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS
        .iter()
        .copied()
        .find(|w| upper.contains(w))
        .or_else(|| {
            upper
                .split(|c: char| !c.is_ascii_alphanumeric())
                .find_map(|part| SECRET_PARTS.iter().copied().find(|p| *p == part))
        })
}

/// Credentials whose shape gives them away, wherever they stand in a
/// value: (what it is, how it starts, the shortest it is).
const TOKEN_SHAPES: &[(&str, &str, usize)] = &[
    ("an AWS access key id", "AKIA", 20),
    ("a GitHub token", "ghp_", 40),
    ("a GitHub token", "gho_", 40),
    ("a GitHub token", "ghs_", 40),
    ("a GitHub token", "ghu_", 40),
    ("a GitHub token", "github_pat_", 40),
    ("a GitLab token", "glpat-", 26),
    ("a Slack token", "xoxb-", 20),
    ("a Slack token", "xoxp-", 20),
    ("a Stripe key", "sk_live_", 24),
    ("a Stripe key", "rk_live_", 24),
    ("a JSON Web Token", "eyJ", 30),
];

/// The byte ranges of tokens of a known shape, and PEM private keys.
fn token_spans(value: &str) -> Vec<(std::ops::Range<usize>, &'static str)> {
    let mut spans = Vec::new();
    if let Some(begin) = value.find("-----BEGIN") {
        if value[begin..].contains("PRIVATE KEY") {
            spans.push((begin..value.len(), "a private key (PEM)"));
            return spans;
        }
    }
    let token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut at = 0;
    for word in value.split(|c: char| !token_char(c)) {
        let start = at;
        at += word.len() + 1;
        let found = TOKEN_SHAPES.iter().find(|(_, prefix, min)| {
            word.starts_with(prefix)
                && word.len() >= *min
                && (*prefix != "eyJ" || word.matches('.').count() == 2)
        });
        if let Some((what, _, _)) = found {
            spans.push((start..start + word.len(), *what));
        }
    }
    spans
}

/// A `key=value` key inside a value (libpq and ODBC connection strings, URL
/// queries, JVM options) that carries a password or token. Not KEY: in
/// connection strings that names a file (`sslkey=/path`).
fn secret_pair_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    upper == "PWD"
        || ["PASS", "SECRET", "TOKEN", "CREDENTIAL"]
            .iter()
            .any(|w| upper.contains(w))
}

/// Separators between the pairs of a connection string or a query.
fn separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ';' | '&' | '?' | ',')
}

/// The byte ranges of the secret parts of a value: URL passwords
/// (`scheme://user:PASSWORD@host`) and the values of password pairs
/// (`password=VALUE`, quoted or not). Empty ones are not secrets.
fn secret_spans(value: &str) -> Vec<(std::ops::Range<usize>, &'static str)> {
    let mut spans = Vec::new();
    // URL userinfo: within each authority, up to its last '@'.
    let mut from = 0;
    while let Some(found) = value[from..].find("://") {
        let start = from + found + 3;
        let end = value[start..]
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .map_or(value.len(), |i| start + i);
        if let Some(at) = value[start..end].rfind('@') {
            let userinfo = &value[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                if colon + 1 < userinfo.len() {
                    spans.push((
                        start + colon + 1..start + at,
                        "a URL password (user:password@)",
                    ));
                }
            }
        }
        from = end.max(start);
    }
    // key=value pairs.
    for (eq, _) in value.match_indices('=') {
        let key_start = value[..eq].rfind(separator).map_or(0, |i| {
            i + value[i..].chars().next().map_or(1, char::len_utf8)
        });
        if !secret_pair_key(&value[key_start..eq]) {
            continue;
        }
        let rest = &value[eq + 1..];
        let span = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let close = rest[1..].find(q).map_or(rest.len(), |i| i + 1);
                eq + 2..eq + 1 + close
            }
            _ => eq + 1..eq + 1 + rest.find(separator).unwrap_or(rest.len()),
        };
        if !span.is_empty() {
            spans.push((span, "a password (password=…)"));
        }
    }
    spans.extend(token_spans(value));
    spans
}

/// Why a value looks secret, whatever its variable's name.
pub fn secret_value(value: &str) -> Option<&'static str> {
    secret_spans(value).first().map(|(_, why)| *why)
}

/// For display: a secret-looking name hides its whole value; otherwise URL
/// passwords and password pairs inside the value are hidden.
pub fn redact(name: &str, value: &str) -> String {
    if secret_name(name).is_some() {
        return "***".into();
    }
    let mut spans: Vec<_> = secret_spans(value).into_iter().map(|(s, _)| s).collect();
    spans.sort_by_key(|s| s.start);
    let mut shown = String::new();
    let mut at = 0;
    for span in spans {
        if span.start < at {
            continue;
        }
        shown.push_str(&value[at..span.start]);
        shown.push_str("***");
        at = span.end;
    }
    shown.push_str(&value[at..]);
    shown
}

/// Refuses a release whose plain variables (`[app.env]` merged with
/// `--env`) hold a secret, naming the variable, where it came from, and
/// where the target keeps secrets instead.
pub fn refuse(env: &Environment, overrides: &BTreeMap<String, String>) -> Result<()> {
    let mut merged = env.file.app.env.clone();
    merged.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (name, value) in &merged {
        let why = match (secret_name(name), secret_value(value)) {
            (Some(word), _) => format!("its name contains {word}"),
            (None, Some(what)) => format!("its value carries {what}"),
            (None, None) => continue,
        };
        let origin = if overrides.contains_key(name) {
            format!("--env {name}=…")
        } else {
            format!("{}: app.env.{name}", env.path.display())
        };
        let fix = match env.file.target.kind() {
            TargetKind::Kubernetes => format!(
                "keep it in the Kubernetes Secret the overlay references and refer to it with a secretKeyRef named {name} (see infrastructure/kubernetes/base/secret.template.yaml)"
            ),
            TargetKind::Docker | TargetKind::Swarm => format!(
                "put it in [app.secrets] of {} as {name} = \"env:VARIABLE\" or \"file:/path\": resolved on the deploying machine at each deploy, never stored",
                env.path.display()
            ),
        };
        bail!(
            "{origin}: {name} looks like a secret ({why}); plain variables are stored as they are in the release history on the target, readable by anyone who can read the target. Instead, {fix}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::deploy::{self, release::History, Options, Source};

    const DOCKER: &str = r#"
[target]
kind = "docker"
[image]
repo = "xtask-app"
[deploy]
replicas = 1
strategy = "rolling"
[app.env]
LOG_FORMAT = "json"
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

    fn env(text: &str) -> Environment {
        crate::environment::parse(Path::new("infrastructure/environments/dev.toml"), text).unwrap()
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_names_are_found_by_their_words() {
        for name in [
            "DB_PASS",
            "DB_PASSWORD",
            "smtp_passwd",
            "GPG_PASSPHRASE",
            "JWT_SECRET",
            "GITHUB_TOKEN",
            "API_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_CREDENTIALS",
        ] {
            assert!(secret_name(name).is_some(), "{name}");
        }
        for name in [
            "DB_PW",
            "SMTP_PWD",
            "BASIC_AUTH",
            "GPG_PRIVATE",
            "AWS_CREDS",
            "db.pw",
        ] {
            assert!(secret_name(name).is_some(), "{name}");
        }
        for name in [
            "LOG_FORMAT",
            "RUST_LOG",
            "DATABASE_URL",
            "PORT",
            "GREETING",
            "UPWARD",
            "AUTHOR_NAME",
            "SALTY",
        ] {
            assert_eq!(secret_name(name), None, "{name}");
        }
    }

    #[test]
    fn passwords_inside_values_are_found() {
        for value in [
            "postgres://app:hunter2@db:5432/app",
            "redis://:hunter2@cache:6379/0",
            "host=db user=app password=hunter2 dbname=app",
            "host=db password='hunter 2' dbname=app",
            "Server=db;Uid=app;Pwd=hunter2;",
            "https://api.example/v1?user=x&access_token=hunter2",
            "AKIAIOSFODNN7EXAMPLE",
            "Bearer ghp_hunter2hunter2hunter2hunter2hunter2ab",
            "glpat-hunter2hunter2hunter2",
            "xoxb-1234-hunter2hunter2",
            "sk_live_hunter2hunter2hunter2",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.hunter2signature",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nhunter2\n-----END OPENSSH PRIVATE KEY-----",
        ] {
            assert!(secret_value(value).is_some(), "{value}");
            assert!(!redact("DSN", value).contains("hunter"), "{value}");
        }
        for value in [
            "postgres://127.0.0.1:1/x",
            "postgres://app@db/app",
            "postgres://app:@db/app",
            "host=db user=app password= dbname=app",
            "https://example.com/@user:x",
            "sslkey=/etc/ssl/app.key",
            "json",
            "AKIA",
            "eyJust-a-word",
            "-----BEGIN CERTIFICATE-----",
            "ghp_short",
        ] {
            assert_eq!(secret_value(value), None, "{value}");
        }
    }

    #[test]
    fn redaction_hides_secret_names_url_passwords_and_password_pairs() {
        assert_eq!(redact("DB_PASS", "x"), "***");
        assert_eq!(
            redact("DATABASE_URL", "postgres://app:pw@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact("DSN", "host=db user=app password=pw dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            redact("DSN", "host=db password=\"p w\" dbname=x"),
            "host=db password=\"***\" dbname=x"
        );
        assert_eq!(redact("LOG_FORMAT", "json"), "json");
    }

    #[test]
    fn a_deploy_refuses_secrets_in_env_naming_the_variable_and_the_fix() {
        let dev = env(DOCKER);
        let err = refuse(&dev, &vars(&[("DB_PASS", "hunter2")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "--env DB_PASS=…: DB_PASS looks like a secret (its name contains PASS)"
            ) && err.contains("[app.secrets]")
                && err.contains("DB_PASS = \"env:VARIABLE\"")
                && !err.contains("hunter2"),
            "{err}"
        );
        let err = refuse(&dev, &vars(&[("DSN", "host=db user=app password=hunter2")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--env DSN=…") && err.contains("password=") && !err.contains("hunter2"),
            "{err}"
        );
        refuse(
            &dev,
            &vars(&[
                ("DATABASE_URL", "postgres://127.0.0.1:1/x"),
                ("GREETING", "hi"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn the_environment_files_app_env_is_refused_too_and_kubernetes_names_its_secret() {
        let dev = env(&DOCKER.replace(
            "LOG_FORMAT = \"json\"",
            "DATABASE_URL = \"postgres://app:hunter2@db/app\"",
        ));
        let err = refuse(&dev, &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.starts_with("infrastructure/environments/dev.toml: app.env.DATABASE_URL: ")
                && err.contains("URL password"),
            "{err}"
        );
        // The whole path a deploy (and its dry run) takes.
        let source = Source::Image {
            image: "xtask-app:1".into(),
            overrides: BTreeMap::new(),
        };
        let options = Options {
            strategy: None,
            quiet: true,
            command: "deploy".into(),
            ..Default::default()
        };
        let err = deploy::draft_release(&dev, &History::default(), source, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("app.env.DATABASE_URL"), "{err}");

        let kube = env(DOCKER
            .replace(
                "kind = \"docker\"",
                "kind = \"kubernetes\"\noverlay = \"o\"\nnamespace = \"n\"\ndeployment = \"app\"\nservice = \"app\"",
            )
            .split("[balancer]")
            .next()
            .unwrap());
        let err = refuse(&kube, &vars(&[("API_TOKEN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Kubernetes Secret") && err.contains("secretKeyRef named API_TOKEN"),
            "{err}"
        );
    }
}
