//! Blue-green: the whole new release started and gated beside the old one,
//! then all traffic moved at once. The old release keeps running, out of
//! traffic, until the frame has verified the public URL: a failed
//! verification moves traffic straight back to it.
use super::Run;
use crate::{
    gate::Failure,
    targets::{Split, Target},
};

pub async fn run<T: Target>(run: &Run<'_, T>) -> Result<(), Failure> {
    let (target, release) = (run.target, run.release);
    target.prepare(release).await.map_err(Failure::from_error)?;
    run.step.line(&format!(
        "starting {} instances of {} beside what serves",
        release.replicas, release.id
    ));
    target
        .start(release, release.replicas)
        .await
        .map_err(Failure::from_error)?;
    run.gate
        .until_ready(target, release, release.replicas, run.step)
        .await?;
    target
        .shift(&Split::all(&release.id))
        .await
        .map_err(Failure::from_error)?;
    run.step
        .line(&format!("all traffic moved to {}", release.id));
    Ok(())
}
