//! Keeps the balancer's slots on tasks that passed our probes. Swarm
//! replaces tasks by itself during an update, so while a deploy runs the
//! gate calls `route` on every tick: a slot moves (an atomic symlink swap,
//! no reload) as soon as a better task is ready, and before the task it
//! leaves has finished draining.
use std::collections::HashSet;

use anyhow::Result;

use super::{tasks::TaskView, SwarmTarget};

/// The slot assignment for `wanted` (task ids in order of preference):
/// a slot already on one of the first `slots` wanted tasks stays; the others
/// take the wanted tasks not yet routed, then share them round-robin.
pub fn assign(current: &[Option<String>], wanted: &[String]) -> Vec<Option<String>> {
    if wanted.is_empty() {
        // Nothing ready: leave every slot where it is (a draining task still answers).
        return current.to_vec();
    }
    let chosen: Vec<&String> = wanted.iter().take(current.len()).collect();
    let mut used: HashSet<&String> = HashSet::new();
    let mut kept: Vec<Option<&String>> = current
        .iter()
        .map(|c| {
            let keep = c
                .as_ref()
                .filter(|id| chosen.contains(id) && !used.contains(id));
            if let Some(id) = keep {
                used.insert(id);
            }
            keep
        })
        .collect();
    let mut spare = chosen.iter().filter(|id| !used.contains(*id)).copied();
    let mut cycle = chosen.iter().cycle();
    for slot in kept.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(
            spare
                .next()
                .unwrap_or_else(|| cycle.next().expect("wanted is not empty")),
        );
    }
    kept.into_iter().map(|s| s.cloned()).collect()
}

impl SwarmTarget {
    /// The task each slot sends traffic to (by task id).
    pub fn routes(&self) -> Vec<Option<String>> {
        self.balancer
            .routes(self.balancer.slot_count())
            .into_iter()
            .map(|socket| socket.and_then(|s| Some(s.file_stem()?.to_string_lossy().into_owned())))
            .collect()
    }

    /// Moves the slots onto `wanted`; returns how many moved and each slot's task after.
    pub fn route(&self, wanted: &[String]) -> Result<(usize, Vec<Option<String>>)> {
        let current = self.routes();
        let next = assign(&current, wanted);
        let mut moved = 0;
        for (slot, (now, then)) in current.iter().zip(&next).enumerate() {
            if let Some(task) = then.as_ref().filter(|t| Some(*t) != now.as_ref()) {
                self.balancer.route(slot, &self.socket_path(task))?;
                moved += 1;
            }
        }
        Ok((moved, next))
    }

    /// Removes the sockets of tasks that are gone (the app leaves its socket
    /// file behind), except those `slots` still point at.
    pub fn prune_sockets(&self, live: &HashSet<String>, slots: &[Option<String>]) {
        let routed: HashSet<&String> = slots.iter().flatten().collect();
        self.probe_clients
            .lock()
            .expect("probe clients")
            .retain(|id, _| live.contains(id) || routed.contains(id));
        let Ok(entries) = std::fs::read_dir(self.runtime_dir.join("sockets")) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !live.contains(&id) && !routed.contains(&id) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Slots go to ready tasks of the release first, then to other running
/// tasks that swarm keeps (their slot has no ready replacement yet), then
/// to tasks swarm is stopping, which still answer while they drain.
pub fn preference(ready: &[&TaskView], all: &[TaskView], release: &str) -> Vec<String> {
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
        .map(|t| t.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::assign;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn slots(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|s| s.map(str::to_owned)).collect()
    }

    #[test]
    fn a_slot_on_a_wanted_task_stays_and_the_others_take_new_ones() {
        let now = slots(&[Some("old1"), Some("old2"), Some("old3")]);
        let next = assign(&now, &ids(&["new1", "old2", "old3", "old1"]));
        assert_eq!(next, slots(&[Some("new1"), Some("old2"), Some("old3")]));
    }

    #[test]
    fn fewer_ready_tasks_than_slots_are_shared_and_none_keeps_the_slots() {
        let now = slots(&[None, None, None]);
        assert_eq!(
            assign(&now, &ids(&["a", "b"])),
            slots(&[Some("a"), Some("b"), Some("a")])
        );
        let routed = slots(&[Some("x"), None]);
        assert_eq!(assign(&routed, &[]), routed);
    }

    #[test]
    fn one_task_never_holds_two_slots_while_another_wanted_one_has_none() {
        let now = slots(&[Some("a"), Some("a"), Some("b")]);
        assert_eq!(
            assign(&now, &ids(&["a", "b", "c"])),
            slots(&[Some("a"), Some("c"), Some("b")])
        );
    }
}
