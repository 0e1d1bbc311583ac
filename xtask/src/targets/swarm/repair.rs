//! `cargo xtask route`: keeps a swarm environment's balancer slots on its
//! live tasks between deploys. Swarm replaces a crashed task by itself, with
//! a new task id and so a new socket; nothing else moves the slot that
//! pointed at the old one. Run once to repair, or `--watch` as a service on
//! the manager. It stands aside while a deploy holds the lock: the deploy's
//! gate moves the slots then.
use std::{collections::HashSet, time::Duration};

use anyhow::Result;
use serde::Serialize;

use super::{service::replicas_of, SwarmTarget};
use crate::deploy::{lock::LockStore, records::HistoryStore};

#[derive(Debug, Serialize)]
pub struct Routed {
    /// Why nothing was changed, when nothing was.
    pub skipped: Option<String>,
    pub service: Option<String>,
    /// Slots moved onto another task.
    pub moved: usize,
    /// Each slot's task, after.
    pub slots: Vec<Option<String>>,
}

/// One pass: every slot onto a task of the live service that answers `/ready`.
pub async fn once(target: &SwarmTarget, ready_path: &str, timeout: Duration) -> Result<Routed> {
    let skipped = |why: String| Routed {
        skipped: Some(why),
        service: None,
        moved: 0,
        slots: target.routes(),
    };
    if let Some((_, holder)) = target.lock_read().await? {
        if !holder.holder_gone() {
            return Ok(skipped(format!("locked by {}", holder.describe())));
        }
    }
    let history = target.read_history().await?;
    let active = history.active().map(|r| r.id.as_str());
    let Some(colour) = target.live_colour(active).await? else {
        return Ok(skipped("no live service".into()));
    };
    let name = target.service_name(colour);
    let Some(service) = target.inspect_service(&name).await? else {
        return Ok(skipped(format!("service {name} is gone")));
    };
    // nginx may be down (a host restart): the slots are worth nothing without it.
    target
        .balancer()
        .ensure(replicas_of(&service).max(1) as usize)
        .await?;
    let mut ready = vec![];
    let tasks = target.tasks(&name).await?;
    for task in tasks.iter().filter(|t| t.wanted() && t.running()) {
        if target.probe_task(task, ready_path, timeout).await.ok() {
            ready.push(task.id.clone());
        }
    }
    let (moved, slots) = target.route(&ready)?;
    let live: HashSet<String> = tasks
        .iter()
        .filter(|t| t.wanted())
        .map(|t| t.id.clone())
        .collect();
    target.prune_sockets(&live, &slots);
    Ok(Routed {
        skipped: None,
        service: Some(name),
        moved,
        slots,
    })
}
