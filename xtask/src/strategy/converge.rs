//! Back to one release serving alone, from whatever state: after a failed
//! gate, a failed verification, Ctrl-C, or a run that died. Instances of the
//! release that still run take all traffic at once (that is what makes an
//! automatic rollback fast); the rest of its capacity is started and gated;
//! then everything else goes. The undo of every target that moves traffic
//! itself; an orchestrator with its own rollback brings its own.
use anyhow::{anyhow, Result};

use crate::{
    deploy::release::Release,
    gate::Gate,
    progress::Step,
    targets::{InstanceState, Split, Target},
};

pub async fn converge(
    target: &impl Target,
    to: Option<&Release>,
    gate: &Gate<'_>,
    step: &Step,
) -> Result<()> {
    let Some(to) = to else {
        step.line("no earlier release: removing every instance");
        return target.stop_all().await;
    };
    target.prepare(to).await?;
    let seen = target.observe(to).await?;
    let warm = seen
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running { restarts: 0 })
        .count();
    if warm > 0 {
        target.shift(&Split::all(&to.id)).await?;
        step.line(&format!(
            "traffic back on {} ({warm} instance(s) still running)",
            to.id
        ));
    }
    if warm < to.replicas {
        target.start(to, to.replicas).await?;
        gate.until_ready(target, to, to.replicas, step)
            .await
            .map_err(|f| anyhow!("restoring {}: {}", to.id, f.reason))?;
        target.shift(&Split::all(&to.id)).await?;
    }
    let others: std::collections::BTreeSet<String> = target
        .instances()
        .await?
        .into_iter()
        .map(|i| i.release)
        .filter(|r| *r != to.id)
        .collect();
    for release in others {
        step.line(&format!("removing the instances of {release}"));
        target.retire(&release, 0).await?;
    }
    Ok(())
}
