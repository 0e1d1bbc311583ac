//! `cargo xtask route` on a Docker host: the balancer's slots back onto the
//! active release's instances. HAProxy loads the slots balancer-ctl saved
//! at the last change when it starts, so a crashed or restarted balancer
//! mostly needs nothing; what it cannot know is an instance Docker
//! restarted in place with another address, a state file lost with its
//! container (`docker rm`), or an older balancer image without one. One pass puts the active release's running
//! instances back into slots, waits for HAProxy's checks, then sends the
//! active release all traffic. It stands aside while a live deploy holds
//! the lock: that deploy moves the slots itself.
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{
    balancer::{shift_commands, slot_of},
    DockerTarget,
};
use crate::{
    deploy::{lock::LockStore, records::HistoryStore},
    haproxy::runtime::ServerStatus,
    targets::{InstanceState, Split},
};

#[derive(Debug, Serialize)]
pub struct Routed {
    /// Why nothing was changed, when nothing was.
    pub skipped: Option<String>,
    pub release: Option<String>,
    /// Instances that had no slot and got one.
    pub moved: usize,
    /// The instances in traffic, after.
    pub slots: Vec<String>,
}

/// How long a pass waits for HAProxy's first passing checks of the
/// instances it put back, before it gives them their weights anyway (HAProxy
/// itself keeps traffic off a server whose checks fail).
const CHECKS_WAIT: Duration = Duration::from_secs(10);

pub async fn once(target: &DockerTarget) -> Result<Routed> {
    let skipped = |why: String| Routed {
        skipped: Some(why),
        release: None,
        moved: 0,
        slots: Vec::new(),
    };
    if let Some((_, holder)) = target.lock_read().await? {
        let now = chrono::Utc::now().timestamp();
        if !holder.holder_gone() && !holder.expired(now) {
            return Ok(skipped(format!("locked by {}", holder.describe())));
        }
    }
    let history = target.read_history().await?;
    let Some(active) = history.active().map(|r| r.id.clone()) else {
        return Ok(skipped("no active release".into()));
    };
    // Usually running: one inspect. A stopped or missing balancer is
    // started (or made) again with the same config and certificate.
    let balancer = match target.balancer().await {
        Some(balancer) => balancer,
        None => target.ensure_balancer().await?,
    };
    let mut rows = balancer.servers().await?;
    let instances = target.running().await?;
    let missing: Vec<_> = instances
        .iter()
        .filter(|(i, s)| {
            i.release == active
                && matches!(s, InstanceState::Running { .. })
                && slot_of(&rows, i.addr).is_none()
        })
        .map(|(i, _)| i)
        .collect();
    if !missing.is_empty() {
        target.attach(&active).await?;
        let deadline = Instant::now() + CHECKS_WAIT;
        loop {
            rows = balancer.servers().await?;
            let checked = missing
                .iter()
                .all(|i| slot_of(&rows, i.addr).is_some_and(|r| r.status == ServerStatus::Up));
            if checked || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // One read of the slots and the instances serves the whole pass: a pass
    // with nothing to repair (most of them, under --watch) sends no command.
    let (commands, weights) = shift_commands(&Split::all(&active), &rows, &instances)?;
    balancer.exec(&commands).await?;
    let moved = missing.len();
    let serving = weights
        .into_iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(name, _)| name)
        .collect();
    Ok(Routed {
        skipped: None,
        release: Some(active),
        moved,
        slots: serving,
    })
}
