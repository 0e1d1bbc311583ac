//! `[backup.s3]`: checked field by field, credentials resolved only when a
//! backup command runs. Plain `http://` is accepted for a loopback endpoint
//! only: anywhere else the dump (every row of the database) and the signed
//! requests would cross the network in clear.
use anyhow::{bail, Result};
use reqwest::Url;

use super::{backup::S3Config, resolve_secret, Environment};
use crate::s3::{BucketConfig, Credentials};

impl Environment {
    pub(super) fn validate_s3(&self, s3: &S3Config) -> Result<()> {
        let bucket_ok = (3..=63).contains(&s3.bucket.len())
            && s3
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && s3.bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s3.bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            bail!(self.field_error(
                "backup.s3.bucket",
                format!("{:?}", s3.bucket),
                "must be an S3 bucket name: 3 to 63 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
            ));
        }
        let region_ok = !s3.region.is_empty()
            && s3
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            bail!(self.field_error(
                "backup.s3.region",
                format!("{:?}", s3.region),
                "must be a region name such as \"eu-west-1\" (S3-compatible services often take \"us-east-1\")"
            ));
        }
        if let Some(endpoint) = &s3.endpoint {
            endpoint_url(endpoint).map_err(|why| {
                anyhow::anyhow!(self.field_error("backup.s3.endpoint", shown(endpoint), why))
            })?;
        }
        let prefix_ok = s3.prefix.is_empty()
            || (s3.prefix.ends_with('/')
                && !s3.prefix.starts_with('/')
                && !s3.prefix.split('/').any(|part| part == ".." || part == "."));
        if !prefix_ok {
            bail!(self.field_error(
                "backup.s3.prefix",
                format!("{:?}", s3.prefix),
                "must be \"\" or a path like \"xtask/backups/\": no leading '/', ending in '/', no '.' or '..'"
            ));
        }
        self.check_reference(
            "backup.s3.access_key_id",
            &s3.access_key_id,
            "the access key id",
        )?;
        self.check_reference(
            "backup.s3.secret_access_key",
            &s3.secret_access_key,
            "the secret access key",
        )?;
        if let Some(token) = &s3.session_token {
            self.check_reference("backup.s3.session_token", token, "the session token")?;
        }
        Ok(())
    }

    /// The bucket with its credentials read on this machine, and the key
    /// prefix of this environment's backups.
    pub(super) fn resolve_s3(&self, s3: &S3Config) -> Result<(BucketConfig, String)> {
        let endpoint = match &s3.endpoint {
            Some(endpoint) => endpoint_url(endpoint).map_err(|why| {
                anyhow::anyhow!(self.field_error("backup.s3.endpoint", shown(endpoint), why))
            })?,
            None => Url::parse(&format!("https://s3.{}.amazonaws.com", s3.region))?,
        };
        let credentials = Credentials {
            access_key_id: resolve_secret("backup.s3.access_key_id", &s3.access_key_id)?,
            secret_access_key: resolve_secret(
                "backup.s3.secret_access_key",
                &s3.secret_access_key,
            )?,
            session_token: match &s3.session_token {
                Some(token) => Some(resolve_secret("backup.s3.session_token", token)?),
                None => None,
            },
        };
        let config = BucketConfig {
            endpoint,
            region: s3.region.clone(),
            bucket: s3.bucket.clone(),
            path_style: s3.path_style.unwrap_or(s3.endpoint.is_some()),
            credentials,
        };
        Ok((config, format!("{}{}/", s3.prefix, self.name)))
    }
}

/// The endpoint as an error may quote it: not at all when it carries a password.
fn shown(endpoint: &str) -> String {
    match Url::parse(endpoint) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => "…".into(),
        _ => format!("{endpoint:?}"),
    }
}

/// The endpoint as a URL, or why it is refused.
fn endpoint_url(text: &str) -> std::result::Result<Url, &'static str> {
    let url = Url::parse(text).map_err(|_| "must be a URL such as \"https://s3.example.com\"")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry credentials: use backup.s3.access_key_id and secret_access_key",
        );
    }
    if url.path() != "/" || url.query().is_some() {
        return Err("must be scheme, host and port only (the bucket goes in backup.s3.bucket)");
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must be https:// (plain http:// only for a loopback endpoint: the backups and signed requests would cross the network in clear)"),
        _ => Err("must be an https:// URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse_str, GOOD};

    const TABLE: &str = "[backup]\ndir = \"b\"\ndatabase_url = \"env:X\"\n[backup.s3]\nbucket = \"acme-backups\"\nregion = \"eu-west-1\"\naccess_key_id = \"env:XTASK_TEST_S3_ID\"\nsecret_access_key = \"env:XTASK_TEST_S3_SECRET\"\n";

    fn with(extra: &str) -> anyhow::Result<crate::environment::Environment> {
        parse_str(&format!("{GOOD}\n{TABLE}{extra}"))
    }

    fn refused(extra: &str) -> String {
        with(extra).unwrap_err().to_string()
    }

    #[test]
    fn aws_by_default_virtual_hosted_and_each_environment_under_its_own_prefix() {
        let env = with("prefix = \"xtask/\"\n").unwrap();
        let s3 = env.file.backup.clone().unwrap().s3.unwrap();
        std::env::set_var("XTASK_TEST_S3_ID", "AKIDTEST");
        std::env::set_var("XTASK_TEST_S3_SECRET", "s3-secret-marker");
        let (config, prefix) = env.resolve_s3(&s3).unwrap();
        assert_eq!(
            config.endpoint.as_str(),
            "https://s3.eu-west-1.amazonaws.com/"
        );
        assert!(!config.path_style);
        assert_eq!(prefix, "xtask/dev/");
        assert_eq!(config.credentials.access_key_id, "AKIDTEST");
        assert!(!format!("{config:?}").contains("s3-secret-marker"));

        let env = with("endpoint = \"http://127.0.0.1:9000\"\n").unwrap();
        let (config, prefix) = env
            .resolve_s3(&env.file.backup.clone().unwrap().s3.unwrap())
            .unwrap();
        assert!(
            config.path_style,
            "a custom endpoint is path-style by default"
        );
        assert_eq!(prefix, "dev/");
        std::env::remove_var("XTASK_TEST_S3_SECRET");
        let err = env
            .resolve_s3(&env.file.backup.clone().unwrap().s3.unwrap())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("XTASK_TEST_S3_SECRET is not set"),
            "{err:#}"
        );
    }

    #[test]
    fn each_bad_field_is_named_with_its_fix() {
        let err = refused("endpoint = \"http://s3.internal:9000\"\n");
        assert!(
            err.contains("backup.s3.endpoint") && err.contains("must be https://"),
            "{err}"
        );
        let err = refused("endpoint = \"https://key:pw@s3.example.com\"\n");
        assert!(
            err.contains("must not carry credentials") && !err.contains("key:pw"),
            "{err}"
        );
        let err = refused("endpoint = \"https://s3.example.com/acme-backups\"\n");
        assert!(err.contains("the bucket goes in backup.s3.bucket"), "{err}");
        let err = refused("prefix = \"/abs\"\n");
        assert!(err.contains("backup.s3.prefix"), "{err}");
        let bad_bucket = TABLE.replace("acme-backups", "Acme_Backups");
        let err = parse_str(&format!("{GOOD}\n{bad_bucket}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.s3.bucket"), "{err}");
        let literal = TABLE.replace("env:XTASK_TEST_S3_SECRET", "wJalrXUtnFEMIK7MDENG");
        let err = parse_str(&format!("{GOOD}\n{literal}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("backup.s3.secret_access_key = …"), "{err}");
        assert!(
            !err.contains("wJalrXUtnFEMIK7MDENG"),
            "the secret is never echoed: {err}"
        );
        let err = refused("acl = \"public-read\"\n");
        assert!(err.contains("acl"), "unknown fields are named: {err}");
        assert!(with("endpoint = \"http://[::1]:9000\"\n").is_ok());
        assert!(with("endpoint = \"https://minio.example.com:9000\"\n").is_ok());
    }
}
