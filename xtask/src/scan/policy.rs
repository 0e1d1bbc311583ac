//! Image policy: how the image is configured and what its files hold.
//! Secret values are never copied into a finding: only where they are.
use bollard::models::ImageInspect;

use super::{layers::ImageFile, Finding, Severity};

fn finding(
    rule: &str,
    severity: Severity,
    title: String,
    detail: String,
    location: String,
) -> Finding {
    Finding {
        id: format!("policy/{rule}"),
        severity,
        title,
        detail,
        source: "policy".into(),
        location,
    }
}

const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "CREDENTIAL",
];

fn secret_looking_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// `AKIA` followed by 16 upper-case letters or digits: an AWS access key id.
pub fn contains_aws_key(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(20).any(|w| {
        w.starts_with(b"AKIA")
            && w[4..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

pub fn check_config(inspect: &ImageInspect, max_size_bytes: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let config = inspect.config.clone().unwrap_or_default();
    let user = config.user.clone().unwrap_or_default();
    let uid = user.split(':').next().unwrap_or("");
    if uid.is_empty() || uid == "root" || uid == "0" {
        let shown = if user.is_empty() {
            "no USER (defaults to root)".to_owned()
        } else {
            format!("USER {user}")
        };
        out.push(finding(
            "runs-as-root",
            Severity::High,
            "the image runs as root".into(),
            format!("{shown}: set a non-root USER such as 65532:65532"),
            "config.User".into(),
        ));
    }
    let has_healthcheck = config
        .healthcheck
        .as_ref()
        .and_then(|h| h.test.as_ref())
        .is_some_and(|t| !t.is_empty() && t[0] != "NONE");
    if !has_healthcheck {
        out.push(finding("no-healthcheck", Severity::Medium, "the image declares no HEALTHCHECK".into(), "orchestrators cannot tell a hung container from a healthy one; add HEALTHCHECK CMD [\"/app\",\"healthcheck\"]".into(), "config.Healthcheck".into()));
    }
    for tag in inspect
        .repo_tags
        .iter()
        .flatten()
        .filter(|t| t.ends_with(":latest"))
    {
        out.push(finding(
            "latest-tag",
            Severity::Medium,
            format!("tagged {tag}"),
            "`latest` names no release: deploy by commit or version tag".into(),
            tag.clone(),
        ));
    }
    let size = inspect.size.unwrap_or_default();
    if size > max_size_bytes {
        out.push(finding(
            "size-budget",
            Severity::Medium,
            format!(
                "image is {:.1} MB, over the {:.1} MB budget",
                size as f64 / 1e6,
                max_size_bytes as f64 / 1e6
            ),
            "a larger image pulls slower on every deploy and scale-up".into(),
            "image size".into(),
        ));
    }
    for entry in config.env.iter().flatten() {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        if value.is_empty() {
            continue;
        }
        if contains_aws_key(value) {
            out.push(finding(
                "secret-in-env",
                Severity::Critical,
                format!("ENV {name} holds an AWS access key"),
                "value hidden; pass secrets at run time, never bake them into the image".into(),
                format!("config.Env.{name}"),
            ));
        } else if secret_looking_name(name) {
            out.push(finding(
                "secret-in-env",
                Severity::High,
                format!("ENV {name} looks like a secret and has a value"),
                "value hidden; pass secrets at run time, never bake them into the image".into(),
                format!("config.Env.{name}"),
            ));
        }
    }
    for (name, value) in config.labels.iter().flatten() {
        if contains_aws_key(value) || (secret_looking_name(name) && !value.is_empty()) {
            out.push(finding(
                "secret-in-label",
                Severity::High,
                format!("label {name} looks like a secret"),
                "value hidden; labels are readable by anyone who can pull the image".into(),
                format!("config.Labels.{name}"),
            ));
        }
    }
    out
}

pub fn check_files(files: &[ImageFile]) -> Vec<Finding> {
    let mut out = Vec::new();
    for file in files {
        if file.mode & 0o6000 != 0 {
            let bit = if file.mode & 0o4000 != 0 {
                "setuid"
            } else {
                "setgid"
            };
            out.push(finding(
                "setuid-file",
                Severity::High,
                format!("/{} is {bit}", file.path),
                format!(
                    "mode {:o}: a {bit} file is a privilege-escalation path; remove the bit",
                    file.mode
                ),
                format!("/{}", file.path),
            ));
        }
        let Some(text) = &file.text else { continue };
        if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") {
            out.push(finding(
                "private-key-file",
                Severity::Critical,
                format!("/{} holds a private key", file.path),
                "keys belong in a secret store, mounted at run time".into(),
                format!("/{}", file.path),
            ));
        }
        if contains_aws_key(text) {
            out.push(finding(
                "aws-key-file",
                Severity::Critical,
                format!("/{} holds an AWS access key", file.path),
                "value hidden; rotate the key, it has shipped".into(),
                format!("/{}", file.path),
            ));
        }
        for line in text.lines() {
            let Some((name, value)) = line.trim_start_matches("export ").split_once('=') else {
                continue;
            };
            let name = name.trim();
            let value = value.trim().trim_matches(['"', '\'']);
            if !value.is_empty()
                && !name.contains(' ')
                && secret_looking_name(name)
                && !value.starts_with('$')
            {
                out.push(finding(
                    "secret-in-file",
                    Severity::High,
                    format!("/{} sets {name}", file.path),
                    "value hidden; a password assignment in a file ships with every pull".into(),
                    format!("/{}", file.path),
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32, text: Option<&str>) -> ImageFile {
        ImageFile {
            path: path.into(),
            mode,
            text: text.map(str::to_owned),
        }
    }

    #[test]
    fn aws_keys_are_found_in_text() {
        assert!(contains_aws_key("key=AKIAABCDEFGHIJKLMNOP;"));
        assert!(!contains_aws_key("AKIA-not-a-key"));
    }

    #[test]
    fn files_with_keys_passwords_and_setuid_bits_are_flagged_without_their_values() {
        let files = [
            file(
                "etc/key.pem",
                0o600,
                Some("-----BEGIN RSA PRIVATE KEY-----\nMII\n-----END RSA PRIVATE KEY-----"),
            ),
            file("app/.env", 0o644, Some("DB_PASSWORD=hunter2\n")),
            file("bin/su", 0o4755, None),
            file(
                "app/config.env",
                0o644,
                Some("DB_PASSWORD=${FROM_RUNTIME}\nLOG=info"),
            ),
        ];
        let found = check_files(&files);
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "policy/private-key-file",
                "policy/secret-in-file",
                "policy/setuid-file"
            ]
        );
        assert!(found.iter().all(|f| !format!("{f:?}").contains("hunter2")));
    }
}
