//! The release a run records, before any target looks at it: what to
//! deploy (a new image with the environment file and `--env`, or an earlier
//! release restored), how the run was asked for, and its secrets resolved
//! on this machine.
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::{
    release::{self, History, Release},
    sensitive,
};
use crate::environment::{self, Environment, Strategy};

/// What to deploy: a new image, or an earlier release restored.
pub enum Source {
    Image {
        image: String,
        overrides: BTreeMap<String, String>,
    },
    Restore {
        to: Option<String>,
    },
}

#[derive(Default)]
pub struct Options {
    pub strategy: Option<Strategy>,
    pub quiet: bool,
    pub command: String,
    /// Rollback: revert the active release's newer migrations first (`deploy::schema`).
    pub migrate_down: bool,
    /// Rollback: restore this backup first (`deploy::schema`).
    pub restore: Option<String>,
    /// Rollback: why the active release is being left (`watch` saw it fail
    /// after its verification). Recorded on it as a failure, so no later
    /// rollback returns to it.
    pub cause: Option<String>,
}

/// The fully resolved environment of a release: plain variables plus secrets, resolved here.
pub fn resolve_env(release: &Release) -> Result<BTreeMap<String, String>> {
    let mut env = release.env.clone();
    env.extend(resolve_secrets(release)?);
    Ok(env)
}

/// The release's secrets, each resolved on this machine from its reference.
pub fn resolve_secrets(release: &Release) -> Result<BTreeMap<String, String>> {
    release
        .secrets
        .iter()
        .map(|(name, reference)| Ok((name.clone(), environment::resolve_secret(name, reference)?)))
        .collect()
}

/// The release a deploy or rollback makes, before any target looks at it:
/// the environment file plus `--env` for a new image, or an earlier
/// release's image and variables for a rollback. Shared by every target.
pub fn draft_release(
    env: &Environment,
    history: &History,
    source: Source,
    options: &Options,
) -> Result<Release> {
    let base = Release {
        env: env.file.app.env.clone(),
        secrets: env.file.app.secrets.clone(),
        ..Release::new(
            "",
            options.strategy.unwrap_or(env.file.deploy.strategy),
            env.file.deploy.replicas,
        )
    };
    if base.strategy == Strategy::Canary && env.file.canary.is_none() {
        bail!(
            "--strategy canary: {} has no [canary] table (steps, prometheus_url, analysis); see docs/CANARY.md",
            env.path.display()
        );
    }
    if base.strategy == Strategy::Canary
        && env.file.target.kind() == environment::TargetKind::Kubernetes
    {
        bail!("--strategy canary: needs weighted traffic through our balancer (docker or swarm); on Kubernetes use blue-green");
    }
    match source {
        Source::Image { image, overrides } => {
            if let Some(key) = overrides
                .keys()
                .find(|k| release::PLATFORM_ENV.contains(&k.as_str()))
            {
                bail!("--env {key}=…: {key} is set by the deploy engine");
            }
            if let Some(key) = overrides
                .keys()
                .find(|k| environment::FAULT_VARIABLES.contains(&k.as_str()))
                .filter(|_| !env.file.app.debug_knobs)
            {
                bail!("--env {key}=…: makes the app misbehave on purpose; only an environment file with [app] debug_knobs = true (a test environment) allows it");
            }
            sensitive::refuse(env, &overrides)?;
            let mut vars = base.env.clone();
            vars.extend(overrides);
            Ok(Release {
                image,
                env: vars,
                ..base
            })
        }
        Source::Restore { to } => {
            let chosen = match &to {
                Some(id) => history.get(id).with_context(|| {
                    let kept: Vec<&str> = history.releases.iter().map(|r| r.id.as_str()).collect();
                    format!("--to {id}: no such release in the history of {} (kept: {})", env.name, kept.join(", "))
                })?,
                None => history.previous_good().with_context(|| {
                    format!("{}: no earlier good release to roll back to (see `cargo xtask history -e {}`)", env.name, env.name)
                })?,
            };
            Ok(Release {
                image: chosen.image.clone(),
                image_id: chosen.image_id.clone(),
                env: chosen.env.clone(),
                secrets: chosen.secrets.clone(),
                replicas: chosen.replicas,
                schema: chosen.schema.clone(),
                restores: Some(chosen.id.clone()),
                // A rollback goes back at once: the release it restores
                // served before, and an incident is no time to walk steps.
                strategy: match base.strategy {
                    Strategy::Canary => Strategy::BlueGreen,
                    other => other,
                },
                ..base
            })
        }
    }
}
