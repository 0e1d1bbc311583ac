//! Before an undo: the balancer running and the release it goes back to in
//! its slots. A balancer that crashed (restarted by its policy with the
//! slots saved at its last change, which may predate this run's) or was
//! `docker kill`ed (not restarted) mid-deploy left the release it should
//! go back to running but out of every slot; the shared converge only moves
//! weights between slotted instances, so without this the rollback failed
//! too ("no running instance of r1 to send its traffic to") and left the
//! new release's instances behind.
use std::time::{Duration, Instant};

use anyhow::Result;

use super::DockerTarget;
use crate::deploy::release::Release;

/// How long an undo waits for a balancer the engine is restarting (its
/// restart policy backs off) before it gives up and reports.
const RESTARTING_WAIT: Duration = Duration::from_secs(15);

/// Never fails the undo by itself: when it cannot reslot, it says why and
/// the converge runs as it would have without it (and reports its own error).
pub(super) async fn before_undo(target: &DockerTarget, to: Option<&Release>) {
    let Some(to) = to else {
        return;
    };
    // A crashed balancer is "restarting" for a moment, and HAProxy needs a
    // moment more to open its runtime socket: exec fails until then.
    let deadline = Instant::now() + RESTARTING_WAIT;
    loop {
        match reslot(target, &to.id).await {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => {
                eprintln!(
                    "warning: putting {} back into the balancer's slots: {e:#}",
                    to.id
                );
                return;
            }
        }
    }
}

async fn reslot(target: &DockerTarget, release: &str) -> Result<()> {
    if target.balancer().await.is_none() {
        target.ensure_balancer().await?;
    }
    target.attach(release).await
}
