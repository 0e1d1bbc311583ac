//! `cargo xtask route`: keeps a swarm environment's balancer on its live
//! tasks between deploys. Swarm replaces a crashed task by itself, with a
//! new task id and a new overlay address; nothing else gives the new task a
//! slot (a restarted balancer loads the slots saved at its last change,
//! which still name the dead task). One pass starts the balancer if it is
//! down, gives every running task of the live service a slot, waits for
//! HAProxy's checks, then sends the active release all traffic (slots of
//! tasks that are gone leave). Run once to repair, or `--watch` as a service
//! beside the manager. It stands aside while a deploy holds the lock: the
//! deploy's gate moves the traffic then.
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::{
    router::{slot_row, split_weights},
    SwarmTarget,
};
use crate::{
    deploy::{lock::LockStore, records::HistoryStore},
    haproxy::ServerStatus,
    targets::Split,
};

#[derive(Debug, Serialize)]
pub struct Routed {
    /// Why nothing was changed, when nothing was.
    pub skipped: Option<String>,
    pub service: Option<String>,
    /// Tasks that had no slot and got one.
    pub moved: usize,
    /// The tasks in traffic, after.
    pub slots: Vec<String>,
}

/// How long a pass waits for HAProxy's first checks of the tasks it gave a
/// slot, before it gives them their weights anyway (HAProxy itself keeps
/// traffic off a server whose checks fail).
const CHECKS_WAIT: Duration = Duration::from_secs(10);

/// One pass: the live service's running tasks in the balancer, the active release all traffic.
pub async fn once(target: &SwarmTarget) -> Result<Routed> {
    let skipped = |why: String| Routed {
        skipped: Some(why),
        service: None,
        moved: 0,
        slots: Vec::new(),
    };
    if let Some((_, holder)) = target.lock_read().await? {
        if !holder.holder_gone() {
            return Ok(skipped(format!("locked by {}", holder.describe())));
        }
    }
    let history = target.read_history().await?;
    let active = history.active().map(|r| r.id.clone());
    let Some(colour) = target.live_colour(active.as_deref()).await? else {
        return Ok(skipped("no live service".into()));
    };
    let name = target.service_name(colour);
    let Some(active) = active else {
        return Ok(skipped("no active release".into()));
    };
    // The balancer may be down (a host restart): slots are worth nothing without it.
    target.ensure_front().await?;
    let all = target.all_tasks().await?;
    let mut rows = target.rows().await?;
    let live: Vec<_> = all
        .iter()
        .filter(|t| t.wanted() && t.running() && t.release == active)
        .collect();
    let moved = target.attach(&live, &rows).await?;
    if moved > 0 {
        let deadline = Instant::now() + CHECKS_WAIT;
        loop {
            rows = target.rows().await?;
            let checked = live
                .iter()
                .all(|t| slot_row(&rows, t.addr).is_some_and(|r| r.status == ServerStatus::Up));
            if checked || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // One read of the slots and the tasks serves the whole pass: a pass with
    // nothing to repair (most of them, under --watch) sends no command.
    let weights = split_weights(&Split::all(&active), &live, &rows)?;
    target.route(&rows, &weights, &all).await?;
    let slots = live
        .iter()
        .filter(|t| {
            slot_row(&rows, t.addr).is_some_and(|r| weights.get(&r.addr).is_some_and(|w| *w > 0))
        })
        .map(|t| t.name.clone())
        .collect();
    Ok(Routed {
        skipped: None,
        service: Some(name),
        moved,
        slots,
    })
}
