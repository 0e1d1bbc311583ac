//! Rolling: the new release takes over in batches of `deploy.surge`
//! instances. Each batch is started and gated (in parallel within the
//! batch), then traffic moves in proportion, and the previous release's
//! instances that lost their traffic drain while the next batch starts; one
//! stays warm until the frame has verified. A target whose orchestrator
//! replaces instances itself gets one `replace` and the same gate.
use futures_util::future::OptionFuture;

use super::Run;
use crate::{
    gate::Failure,
    targets::{Split, Target},
};

/// Cumulative instance counts after each batch: 3 replicas, surge 1 -> [1, 2, 3].
pub fn batches(replicas: usize, surge: usize) -> Vec<usize> {
    let surge = surge.clamp(1, replicas.max(1));
    (1..=replicas.div_ceil(surge))
        .map(|b| (b * surge).min(replicas))
        .collect()
}

pub async fn run<T: Target>(run: &Run<'_, T>) -> Result<(), Failure> {
    let (target, release) = (run.target, run.release);
    target.prepare(release).await.map_err(Failure::from_error)?;
    if target.caps().native_rollout {
        target.replace(release).await.map_err(Failure::from_error)?;
        run.gate
            .until_ready(target, release, release.replicas, run.step)
            .await?;
        return Ok(());
    }
    let previous = run.previous.map(|p| p.id.as_str());
    let mut draining = None;
    for up in batches(release.replicas, run.deploy.surge) {
        run.step.line(&format!(
            "{}: {up}/{} instances",
            release.id, release.replicas
        ));
        let batch = async {
            target
                .start(release, up)
                .await
                .map_err(Failure::from_error)?;
            run.gate.until_ready(target, release, up, run.step).await
        };
        // The previous batch's old instances drain while this batch starts.
        let (started, _) = tokio::join!(batch, OptionFuture::from(draining.take()));
        started?;
        let percent = (up * 100 / release.replicas) as u8;
        target
            .shift(&Split::between(previous, &release.id, percent))
            .await
            .map_err(Failure::from_error)?;
        if let Some(previous) = previous {
            draining = Some(async move {
                if let Err(e) = target.retire(previous, 1).await {
                    run.step
                        .line(&format!("warning: retiring {previous}: {e:#}"));
                }
            });
        }
    }
    OptionFuture::from(draining).await;
    Ok(())
}
