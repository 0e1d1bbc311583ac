//! A release hook on the Docker engine: one container of the release's
//! image, with its environment and secrets, on the environment's network
//! (where the instances find their database), running the hook's command
//! after the image's entrypoint. Waited for up to the hook's timeout, its
//! output kept with secret values masked, and removed whatever happens. A
//! run killed while a hook runs leaves a container labelled `hook`: the
//! next command's undo removes it.
use std::{collections::HashMap, time::Instant};

use anyhow::{Context, Result};
use bollard::{
    models::{ContainerCreateBody, HostConfig},
    query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder},
};
use futures_util::StreamExt;

use super::{
    instances::{list_scoped, remove_forced},
    labels, DockerTarget,
};
use crate::{
    deploy::release::{HookRun, Release},
    environment::{HookConfig, HookKind},
};

/// The output kept with the release: its end, where the error usually is.
const KEPT_OUTPUT: usize = 16 * 1024;
pub(super) const ROLE: &str = "hook";

impl DockerTarget {
    pub(super) async fn hook(
        &self,
        release: &Release,
        kind: HookKind,
        hook: &HookConfig,
    ) -> Result<HookRun> {
        let resolved = crate::deploy::resolve_secrets(release)?;
        let resolved = self.secret_files(release.runnable_image(), resolved).await;
        let secrets: Vec<String> = resolved
            .values
            .values()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect();
        let name = format!(
            "{}-{}-{}",
            self.scope,
            release.id,
            kind.as_str().replace('_', "-")
        );
        // A hook container of an earlier, killed run of this release.
        let _ = remove_forced(&self.docker, &name).await;
        let body = ContainerCreateBody {
            image: Some(release.runnable_image().to_owned()),
            cmd: Some(hook.command.clone()),
            env: Some(super::secrets::variables(&release.env, &resolved.values)),
            labels: Some(HashMap::from([
                (labels::SCOPE.to_owned(), self.scope.clone()),
                (labels::ROLE.to_owned(), ROLE.to_owned()),
                (labels::RELEASE.to_owned(), release.id.clone()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating the {} container {name}", kind.as_str()))?;
        if let Err(e) = self.put_secrets(&created.id, &resolved).await {
            let _ = remove_forced(&self.docker, &created.id).await;
            return Err(e.context(format!("writing the secrets of {name}")));
        }
        let started = Instant::now();
        let ran = self.wait_hook(&created.id, hook).await;
        let output = mask(&self.hook_output(&created.id).await, &secrets);
        let _ = remove_forced(&self.docker, &created.id).await;
        let (outcome, exit_code) = match ran {
            Ok(Some(0)) => ("passed", Some(0)),
            Ok(Some(code)) => ("failed", Some(code)),
            Ok(None) => ("timed out", None),
            Err(e) => return Err(e),
        };
        Ok(HookRun {
            hook: kind,
            command: hook.command.clone(),
            outcome: outcome.to_owned(),
            exit_code,
            seconds: started.elapsed().as_secs_f64(),
            output,
        })
    }

    /// Its exit code, or None when the timeout passed first (it is killed).
    async fn wait_hook(&self, id: &str, hook: &HookConfig) -> Result<Option<i64>> {
        self.docker
            .start_container(id, None)
            .await
            .context("starting the hook container")?;
        let limit = std::time::Duration::from_secs(hook.timeout_seconds);
        let mut waited = self.docker.wait_container(id, None);
        match tokio::time::timeout(limit, waited.next()).await {
            Ok(Some(Ok(exit))) => Ok(Some(exit.status_code)),
            // A non-zero exit comes back as an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Ok(Some(code))
            }
            Ok(Some(Err(e))) => Err(e).context("waiting for the hook container"),
            Ok(None) => Ok(Some(-1)),
            Err(_) => {
                let _ = self.docker.kill_container(id, None).await;
                Ok(None)
            }
        }
    }

    async fn hook_output(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let text = crate::targets::collect_logs(self.docker.logs(id, Some(options))).await;
        match text.len() > KEPT_OUTPUT {
            true => {
                let mut start = text.len() - KEPT_OUTPUT;
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                format!("(earlier output cut)\n{}", &text[start..])
            }
            false => text,
        }
    }

    /// Hook containers a killed run left behind.
    pub(crate) async fn remove_stale_hooks(&self) -> Result<()> {
        for c in list_scoped(&self.docker, &self.scope, Some(ROLE)).await? {
            remove_forced(&self.docker, &c.id.unwrap_or_default()).await?;
        }
        Ok(())
    }
}

/// `text` with every secret value replaced by `***`.
fn mask(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |t, secret| {
        t.replace(secret.as_str(), "***")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_values_are_masked_in_hook_output() {
        let out = super::mask(
            "connecting to postgres://app:pw-123@db/app\nmigrated",
            &["postgres://app:pw-123@db/app".into()],
        );
        assert_eq!(out, "connecting to ***\nmigrated");
    }
}
