//! Keeps the balancer's slots on the tasks that should serve. The balancer
//! is the Docker target's HAProxy container; each task gets a slot at its
//! overlay address, at weight 0 until HAProxy's checks pass it, and traffic
//! is the slots' weights, changed through the runtime API (no reload).
//! Swarm replaces tasks by itself during an update, so while a deploy runs
//! the gate calls `follow` on every tick: traffic moves to a new task as
//! soon as it passed, and off the task it replaces before that one has
//! finished draining.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
};

use anyhow::Result;

use super::{tasks::TaskView, SwarmTarget, COLOURS};
use crate::{
    haproxy::{runtime::MAX_WEIGHT, AdminState, Command, ServerStat, ServerStatus},
    targets::{
        docker::{traffic, DockerTarget},
        Split,
    },
};

/// The weight each task in traffic gets when traffic is spread evenly.
pub const EVEN_WEIGHT: u16 = MAX_WEIGHT / 2;

/// The runtime commands that bring the slots in `rows` to `weights` (by
/// address). Slots of `live` addresses not in `weights` go to weight 0;
/// slots of addresses no live task has leave (MAINT). Weights go up before
/// any goes down, so some server is always in traffic; and while none of
/// the servers that should serve is UP, the UP ones serving now keep their
/// weight (the drain of a replaced task must not leave nobody to answer).
pub fn route_commands(
    rows: &[ServerStat],
    weights: &BTreeMap<String, u16>,
    live: &HashSet<String>,
) -> Result<Vec<Command>> {
    let slotted: Vec<(&ServerStat, crate::haproxy::Slot)> = rows
        .iter()
        .filter(|r| r.status != ServerStatus::Maint)
        .filter_map(|r| Some((r, r.slot?)))
        .collect();
    let next = |row: &ServerStat| -> Option<u16> {
        match weights.get(&row.addr) {
            Some(w) => Some(*w),
            None if live.contains(&row.addr) => Some(0),
            None => None,
        }
    };
    let any_up_after = slotted
        .iter()
        .any(|(r, _)| r.status == ServerStatus::Up && next(r).is_some_and(|w| w > 0));
    let keeps =
        |row: &ServerStat| !any_up_after && row.status == ServerStatus::Up && row.user_weight > 0;
    let (mut raise, mut lower, mut leave) = (Vec::new(), Vec::new(), Vec::new());
    for (row, slot) in slotted {
        match next(row) {
            Some(w) if u32::from(w) > row.user_weight => raise.push(Command::set_weight(slot, w)?),
            Some(w) if u32::from(w) < row.user_weight && !keeps(row) => {
                lower.push(Command::set_weight(slot, w)?)
            }
            None if !keeps(row) => leave.push(Command::set_state(slot, AdminState::Maint)),
            _ => {}
        }
    }
    raise.append(&mut lower);
    raise.append(&mut leave);
    Ok(raise)
}

/// Even weights for the first `count` of `preferred` (addresses, best
/// first) that have a slot.
pub fn even_weights(preferred: &[String], count: usize) -> BTreeMap<String, u16> {
    preferred
        .iter()
        .take(count)
        .map(|a| (a.clone(), EVEN_WEIGHT))
        .collect()
}

/// The weights that give each release of `split` its share, over `tasks`
/// (running, with a slot in `rows`); those serving now keep serving first.
pub fn split_weights(
    split: &Split,
    tasks: &[&TaskView],
    rows: &[ServerStat],
) -> Result<BTreeMap<String, u16>> {
    let mut running: BTreeMap<String, Vec<traffic::Candidate>> = BTreeMap::new();
    for task in tasks {
        let Some(row) = slot_row(rows, task.addr) else {
            continue;
        };
        running
            .entry(task.release.clone())
            .or_default()
            .push(traffic::Candidate {
                instance: row.addr.clone(),
                serving: row.user_weight > 0,
            });
    }
    traffic::weights(split, &running)
}

/// The slot serving `addr` (not in MAINT: a free slot keeps its last address).
pub fn slot_row(rows: &[ServerStat], addr: Option<SocketAddr>) -> Option<&ServerStat> {
    crate::targets::docker::slot_of(rows, addr)
}

impl SwarmTarget {
    /// Every slot as `show stat` reports it; none without a running balancer.
    pub async fn rows(&self) -> Result<Vec<ServerStat>> {
        self.front.slots().await
    }

    /// Every task of both colours.
    pub async fn all_tasks(&self) -> Result<Vec<TaskView>> {
        let mut all = Vec::new();
        for colour in COLOURS {
            all.extend(self.tasks(&self.service_name(colour)).await?);
        }
        Ok(all)
    }

    /// The ids of the tasks the balancer sends traffic to (weight above 0).
    pub async fn routed(&self) -> Result<HashSet<String>> {
        let rows = self.rows().await?;
        Ok(self
            .all_tasks()
            .await?
            .into_iter()
            .filter(|t| t.wanted() || t.running())
            .filter(|t| slot_row(&rows, t.addr).is_some_and(|r| r.user_weight > 0))
            .map(|t| t.id)
            .collect())
    }

    /// A slot at weight 0 for each running task of `tasks` that has none,
    /// on every balancer: HAProxy starts checking it, and the gate waits for
    /// plain UP on the manager's. Returns how many the manager's got.
    pub async fn attach(&self, tasks: &[&TaskView], rows: &[ServerStat]) -> Result<usize> {
        let count = attach_missing(&self.front, tasks, rows).await?;
        for node in &self.nodes {
            attach_missing(node, tasks, &node.slots().await?).await?;
        }
        Ok(count)
    }

    /// Sends the weights to every balancer (`rows`: the manager's); `all`
    /// are every task swarm still reports (their slots stay, at weight 0
    /// when not in `weights`). Each node's commands come from its own rows.
    pub async fn route(
        &self,
        rows: &[ServerStat],
        weights: &BTreeMap<String, u16>,
        all: &[TaskView],
    ) -> Result<()> {
        let live: HashSet<String> = all
            .iter()
            .filter(|t| t.wanted() || t.running())
            .filter_map(|t| Some(t.addr?.to_string()))
            .collect();
        exec(&self.front, route_commands(rows, weights, &live)?).await?;
        for node in &self.nodes {
            let commands = route_commands(&node.slots().await?, weights, &live)?;
            exec(node, commands).await?;
        }
        Ok(())
    }

    /// Takes the slots of `tasks` out of every balancer (MAINT).
    pub async fn take_out(&self, tasks: &[TaskView]) -> Result<()> {
        for balancer in self.balancers() {
            let rows = balancer.slots().await?;
            let out: Vec<_> = tasks
                .iter()
                .filter_map(|t| slot_row(&rows, t.addr)?.slot)
                .map(|slot| Command::set_state(slot, AdminState::Maint))
                .collect();
            exec(balancer, out).await?;
        }
        Ok(())
    }

    /// Each release's traffic, from the weights.
    pub async fn traffic_split(&self) -> Result<Split> {
        let rows = self.rows().await?;
        let mut weights: BTreeMap<String, u32> = BTreeMap::new();
        for task in self.all_tasks().await? {
            if let Some(row) = slot_row(&rows, task.addr) {
                *weights.entry(task.release).or_default() += row.user_weight;
            }
        }
        Ok(traffic::shares(&weights))
    }

    /// Each task's share of the traffic in percent, by task id.
    pub fn shares_of(rows: &[ServerStat], tasks: &[TaskView]) -> HashMap<String, f64> {
        let total: u32 = rows
            .iter()
            .filter(|r| r.status != ServerStatus::Maint)
            .map(|r| r.user_weight)
            .sum();
        tasks
            .iter()
            .map(|t| {
                let w = slot_row(rows, t.addr).map_or(0, |r| r.user_weight);
                let share = if total == 0 {
                    0.0
                } else {
                    f64::from(w) * 100.0 / f64::from(total)
                };
                (t.id.clone(), share)
            })
            .collect()
    }
}

async fn attach_missing(
    balancer: &DockerTarget,
    tasks: &[&TaskView],
    rows: &[ServerStat],
) -> Result<usize> {
    let wanted: Vec<(String, SocketAddr)> = tasks
        .iter()
        .filter(|t| matches!(t.state.as_str(), "starting" | "running"))
        .filter_map(|t| Some((t.name.clone(), t.addr?)))
        .filter(|(_, addr)| slot_row(rows, Some(*addr)).is_none())
        .collect();
    let count = wanted.len();
    balancer.attach_addrs(wanted).await?;
    Ok(count)
}

async fn exec(balancer: &DockerTarget, commands: Vec<Command>) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    balancer
        .open_balancer()
        .await?
        .exec(&commands)
        .await
        .map(drop)
}

/// Traffic goes to ready tasks of the release first, then to other running
/// tasks that swarm keeps (their slot has no ready replacement yet), then
/// to tasks swarm is stopping, which still answer while they drain.
pub fn preference<'a>(
    ready: &[&'a TaskView],
    all: &'a [TaskView],
    release: &str,
) -> Vec<&'a TaskView> {
    let replaced: HashSet<i64> = ready.iter().map(|t| t.slot).collect();
    let others = all.iter().filter(|t| t.release != release && t.running());
    let (kept, draining): (Vec<&TaskView>, Vec<&TaskView>) = others.partition(|t| t.wanted());
    let (unreplaced, replaced_kept): (Vec<&TaskView>, Vec<&TaskView>) =
        kept.into_iter().partition(|t| !replaced.contains(&t.slot));
    ready
        .iter()
        .copied()
        .chain(unreplaced)
        .chain(replaced_kept)
        .chain(draining)
        .collect()
}

#[cfg(test)]
mod tests;
