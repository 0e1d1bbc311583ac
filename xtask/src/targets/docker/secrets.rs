//! `app.secrets` on the Docker target: each one a file `/run/secrets/NAME`,
//! put into the created container through the archive API before it
//! starts, and `NAME_FILE=/run/secrets/NAME` in its environment, as swarm's
//! Docker secrets reach a task. So `docker inspect`, the engine's events and
//! the container's labels never hold a value; only what runs inside the
//! container (and root on the host) can read it. The app reads
//! `DATABASE_URL_FILE` and `REDIS_URL_FILE`; another name reaches an app
//! only as `NAME_FILE`, which it reads itself.
use std::collections::BTreeMap;

use anyhow::Result;

use super::DockerTarget;
use crate::haproxy::engine::{upload, Upload};

pub const DIR: &str = "/run/secrets";

/// The container's variables: the plain ones, and `NAME_FILE` per secret.
pub fn variables(
    plain: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Vec<String> {
    plain
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(
            secrets
                .keys()
                .map(|name| format!("{name}_FILE={DIR}/{name}")),
        )
        .collect()
}

/// The image's numeric user, who owns the files (mode 0400); a named or
/// missing user gets root-owned files readable by all (0444), since the
/// name cannot be resolved from outside the image.
pub fn owner_and_mode(user: Option<&str>) -> (u64, u32) {
    let uid = user
        .unwrap_or_default()
        .split(':')
        .next()
        .and_then(|u| u.parse::<u64>().ok());
    match uid {
        Some(uid) => (uid, 0o400),
        None => (0, 0o444),
    }
}

/// A release's resolved secrets and who owns their files in its image:
/// learned once per start (one image inspect), written into each container.
pub struct SecretFiles {
    pub values: BTreeMap<String, String>,
    owner: u64,
    mode: u32,
}

impl DockerTarget {
    /// `secrets` as files for containers of `image`. No secrets, no inspect.
    pub(super) async fn secret_files(
        &self,
        image: &str,
        secrets: BTreeMap<String, String>,
    ) -> SecretFiles {
        let user = match secrets.is_empty() {
            true => None,
            false => self
                .docker
                .inspect_image(image)
                .await
                .ok()
                .and_then(|i| i.config)
                .and_then(|c| c.user),
        };
        let (owner, mode) = owner_and_mode(user.as_deref());
        SecretFiles {
            values: secrets,
            owner,
            mode,
        }
    }

    /// Writes the secret files into the created, not yet started container `id`.
    pub(super) async fn put_secrets(&self, id: &str, files: &SecretFiles) -> Result<()> {
        if files.values.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = files
            .values
            .keys()
            .map(|name| format!("{}/{name}", DIR.trim_start_matches('/')))
            .collect();
        let uploads: Vec<Upload> = files
            .values
            .values()
            .zip(&paths)
            .map(|(value, path)| Upload {
                path,
                contents: value.as_bytes(),
                mode: files.mode,
                owner: files.owner,
            })
            .collect();
        upload(&self.docker, id, "/", &uploads).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_a_file_variable_never_its_value() {
        let plain = BTreeMap::from([("LOG_FORMAT".to_owned(), "json".to_owned())]);
        let secrets =
            BTreeMap::from([("DATABASE_URL".to_owned(), "postgres://u:pw@db/x".to_owned())]);
        let vars = variables(&plain, &secrets);
        assert_eq!(
            vars,
            [
                "LOG_FORMAT=json",
                "DATABASE_URL_FILE=/run/secrets/DATABASE_URL"
            ]
        );
    }

    #[test]
    fn the_image_user_owns_the_files_when_numeric() {
        assert_eq!(owner_and_mode(Some("65532:65532")), (65532, 0o400));
        assert_eq!(owner_and_mode(Some("1000")), (1000, 0o400));
        assert_eq!(owner_and_mode(Some("app")), (0, 0o444));
        assert_eq!(owner_and_mode(None), (0, 0o444));
    }
}
