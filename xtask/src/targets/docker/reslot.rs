//! Before an undo: the balancer running and the release it goes back to in
//! its slots. A balancer that crashed (restarted by its policy with every
//! slot in MAINT: HAProxy keeps runtime slots in memory only) or was
//! `docker kill`ed (not restarted) mid-deploy left the release it should
//! go back to running but out of every slot; the shared converge only moves
//! weights between slotted instances, so without this the rollback failed
//! too ("no running instance of r1 to send its traffic to") and left the
//! new release's instances behind.
use anyhow::Result;

use super::DockerTarget;
use crate::deploy::release::Release;

pub(super) async fn before_undo(target: &DockerTarget, to: Option<&Release>) -> Result<()> {
    let Some(to) = to else {
        return Ok(());
    };
    if target.balancer().await.is_none() {
        target.ensure_balancer().await?;
    }
    target.attach(&to.id).await
}
