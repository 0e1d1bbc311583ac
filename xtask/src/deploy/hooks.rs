//! The release hooks of the frame (`[hooks]`). `pre_deploy` runs under the
//! lock, after the target is prepared and before any new instance exists
//! or takes traffic: a hook that fails or times out fails the release with
//! its output, and there is nothing to undo but its container (already
//! removed). A backup comes first when the environment has `[backup]`,
//! unless `backup_first = false`. `post_deploy` runs once the release is
//! verified; its failure is reported and recorded, the release stays.
//! A rollback runs no hook: it restores a release that served before.
use std::sync::Mutex;

use super::{
    release::{HookRun, Release},
    schema::Before,
};
use crate::{
    environment::{Environment, HookConfig, HookKind},
    gate::Failure,
    progress::Step,
    targets::Target,
};

/// What the run's hooks did, for the record and the failure report.
#[derive(Default)]
pub struct Ran {
    pub runs: Mutex<Vec<HookRun>>,
}

impl Ran {
    fn keep(&self, run: &HookRun) {
        self.runs.lock().expect("hook runs").push(run.clone());
    }

    pub fn take(&self) -> Vec<HookRun> {
        std::mem::take(&mut *self.runs.lock().expect("hook runs"))
    }

    /// The output of the hook that failed the run, if one did.
    pub fn failed_output(&self) -> Option<String> {
        self.runs
            .lock()
            .expect("hook runs")
            .iter()
            .rev()
            .find(|r| !r.passed())
            .map(|r| r.output.clone())
    }
}

pub async fn pre_deploy(
    target: &impl Target,
    env: &Environment,
    release: &Release,
    ran: &Ran,
    step: &Step,
) -> Result<(), Failure> {
    let Some(hook) = env
        .hooks()
        .pre_deploy
        .filter(|_| release.restores.is_none())
    else {
        return Ok(());
    };
    if hook.backup_first && env.file.backup.is_some() {
        step.line("backup before pre_deploy");
        let backups = crate::backup::Backups::for_env(env).map_err(Failure::from_error)?;
        let created = crate::backup::create(&backups, Some(release.id.clone()))
            .await
            .map_err(|e| {
                Failure::new(
                    format!("the backup before pre_deploy failed, so the hook did not run: {e:#}"),
                    None,
                )
            })?;
        step.line(&format!("backup {}", created.path.display()));
    }
    step.line(&format!("pre_deploy: {}", hook.command.join(" ")));
    before_traffic(target, release, HookKind::PreDeploy, &hook, ran, step).await
}

/// A hook that must pass before any traffic moves, in `release`'s image:
/// kept with the run, and a failure when it did not pass.
async fn before_traffic(
    target: &impl Target,
    release: &Release,
    kind: HookKind,
    hook: &HookConfig,
    ran: &Ran,
    step: &Step,
) -> Result<(), Failure> {
    target.prepare(release).await.map_err(Failure::from_error)?;
    let run = target
        .run_hook(release, kind, hook)
        .await
        .map_err(Failure::from_error)?;
    ran.keep(&run);
    step.line(&run.describe());
    match run.passed() {
        true => Ok(()),
        false => Err(Failure::new(
            format!("{}; no traffic moved", run.describe()),
            None,
        )),
    }
}

/// A rollback to an older schema: the active release's image reverts its
/// newer migrations (`--migrate-down`), or a backup is restored
/// (`--restore`), under the lock, before anything else happens.
pub async fn schema_first(
    target: &impl Target,
    env: &Environment,
    before: &Before,
    ran: &Ran,
    step: &Step,
) -> Result<(), Failure> {
    match before {
        Before::Nothing => Ok(()),
        Before::MigrateDown { active, to } => {
            let hook = HookConfig {
                command: vec![
                    "migrate".into(),
                    "down".into(),
                    "--to".into(),
                    to.to_string(),
                ],
                timeout_seconds: 300,
                backup_first: false,
            };
            step.line(&format!("migrate down --to {to} in {}'s image", active.id));
            before_traffic(target, active, HookKind::MigrateDown, &hook, ran, step).await
        }
        Before::Restore(backup) => {
            step.line(&format!("restoring backup {backup} first"));
            let backups = crate::backup::Backups::for_env(env).map_err(Failure::from_error)?;
            crate::backup::restore(&backups, backup, true)
                .await
                .map(drop)
                .map_err(|e| {
                    Failure::new(
                        format!("restoring backup {backup} failed, so nothing moved: {e:#}"),
                        None,
                    )
                })
        }
    }
}

/// After verification: a failure is reported and kept, never undone.
pub async fn post_deploy(target: &impl Target, env: &Environment, release: &Release, ran: &Ran) {
    let Some(hook) = env
        .hooks()
        .post_deploy
        .filter(|_| release.restores.is_none())
    else {
        return;
    };
    match target.run_hook(release, HookKind::PostDeploy, &hook).await {
        Ok(run) => {
            if !run.passed() {
                let message = format!(
                    "{} ({} stays active: post_deploy runs after traffic moved); its output:\n{}",
                    run.describe(),
                    release.id,
                    run.output.trim_end()
                );
                crate::report::error(&message);
                eprintln!("warning: {message}");
            }
            ran.keep(&run);
        }
        Err(e) => eprintln!("warning: the post_deploy hook could not run: {e:#}"),
    }
}
