//! Canary: the new release started beside the stable one (its full
//! capacity, no traffic) and gated, then given the configured share of the
//! traffic step by step. After each step but the last, and after the pause,
//! the analysis runs (`gate::analysis`); the first failing or inconclusive
//! query fails the release, and the frame's undo gives the stable release
//! all traffic at once. Each shift is read back (`split`), as Argo Rollouts'
//! `VerifyWeight` does. The last step (100) is the promotion.
use std::time::Duration;

use super::{blue_green, Run};
use crate::{
    gate::{analysis, Failure},
    targets::{Split, Target},
};

/// How far the split read back may be from the one asked for (percent):
/// weights are integers spread over whole instances.
const WEIGHT_TOLERANCE: u8 = 2;

pub async fn run<T: Target>(run: &Run<'_, T>) -> Result<(), Failure> {
    let Some(config) = run.canary else {
        return Err(Failure::new(
            "strategy canary without a [canary] table",
            None,
        ));
    };
    let Some(stable) = run.previous else {
        run.step
            .line("no release serves yet: nothing to compare a canary with; all traffic at once");
        return blue_green::run(run).await;
    };
    let (target, release) = (run.target, run.release);
    target.prepare(release).await.map_err(Failure::from_error)?;
    run.step.line(&format!(
        "starting {} instances of {} beside {}",
        release.replicas, release.id, stable.id
    ));
    target
        .start(release, release.replicas)
        .await
        .map_err(Failure::from_error)?;
    run.gate
        .until_ready(target, release, release.replicas, run.step)
        .await?;
    for &percent in &config.steps {
        shift_verified(run, &stable.id, percent).await?;
        if percent == 100 {
            break;
        }
        run.step.line(&format!(
            "{percent} % of the traffic on {}; analysis in {} s",
            release.id, config.pause_seconds
        ));
        tokio::time::sleep(Duration::from_secs_f64(config.pause_seconds)).await;
        let canary = target
            .servers_of(&release.id)
            .await
            .map_err(Failure::from_error)?;
        let baseline = target
            .servers_of(&stable.id)
            .await
            .map_err(Failure::from_error)?;
        let measured = analysis::measure(config, percent, &canary, &baseline).await;
        for m in &measured {
            run.step.line(&m.describe());
        }
        let failed = measured.iter().find(|m| m.fails()).cloned();
        run.measured.lock().expect("measurements").extend(measured);
        if let Some(m) = failed {
            return Err(Failure::new(
                format!("canary analysis failed: {}", m.describe()),
                None,
            ));
        }
    }
    run.step
        .line(&format!("all traffic moved to {}", release.id));
    Ok(())
}

/// `percent` of the traffic to the canary, then read back.
async fn shift_verified<T: Target>(
    run: &Run<'_, T>,
    stable: &str,
    percent: u8,
) -> Result<(), Failure> {
    let asked = Split::between(Some(stable), &run.release.id, percent);
    run.target
        .shift(&asked)
        .await
        .map_err(Failure::from_error)?;
    let now = run.target.split().await.map_err(Failure::from_error)?;
    if now.share(&run.release.id).abs_diff(percent) > WEIGHT_TOLERANCE {
        return Err(Failure::new(
            format!(
                "asked the balancer for {percent} % on {}, it reports {now:?}",
                run.release.id
            ),
            None,
        ));
    }
    Ok(())
}
