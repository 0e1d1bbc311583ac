//! `[hooks]`: commands a deploy runs once, in the new release's image, with
//! its environment and secrets. `pre_deploy` runs under the lock before any
//! new instance takes traffic (typical: `["migrate", "up"]`); `post_deploy`
//! after the release is verified. Each has a timeout; its output is stored
//! with the release, secret values replaced by `***`.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{Environment, TargetKind};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    pub pre_deploy: Option<HookConfig>,
    pub post_deploy: Option<HookConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The arguments after the image's entrypoint, e.g. `["migrate", "up"]`.
    pub command: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// pre_deploy only: take `cargo xtask backup create` first when the
    /// environment has `[backup]` (default true).
    #[serde(default = "default_backup")]
    pub backup_first: bool,
}

fn default_timeout() -> u64 {
    300
}

fn default_backup() -> bool {
    true
}

/// Which hook, for records and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    PreDeploy,
    PostDeploy,
    /// A rollback's `--migrate-down`, in the active release's image.
    MigrateDown,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreDeploy => "pre_deploy",
            HookKind::PostDeploy => "post_deploy",
            HookKind::MigrateDown => "migrate_down",
        }
    }
}

impl Environment {
    pub fn hooks(&self) -> HooksConfig {
        self.file.hooks.clone().unwrap_or_default()
    }

    pub(super) fn validate_hooks(&self) -> Result<()> {
        let Some(hooks) = &self.file.hooks else {
            return Ok(());
        };
        if self.file.target.kind() == TargetKind::Kubernetes {
            bail!(self.field_error(
                "hooks",
                "[hooks]",
                "hooks are not built for kubernetes targets yet: run migrations as a Job or an initContainer, and remove [hooks]"
            ));
        }
        for (kind, hook) in [
            (HookKind::PreDeploy, &hooks.pre_deploy),
            (HookKind::PostDeploy, &hooks.post_deploy),
        ] {
            let Some(hook) = hook else { continue };
            let field = format!("hooks.{}", kind.as_str());
            if hook.command.is_empty() || hook.command.iter().any(|a| a.is_empty()) {
                bail!(self.field_error(
                    &format!("{field}.command"),
                    format!("{:?}", hook.command),
                    "give the arguments after the image's entrypoint, none empty, e.g. [\"migrate\", \"up\"]"
                ));
            }
            self.within(
                &format!("{field}.timeout_seconds"),
                hook.timeout_seconds,
                1,
                3600,
                " (seconds)",
            )?;
        }
        Ok(())
    }
}
