//! The history of an environment's releases, oldest first: each release's
//! outcome moves through it (in progress, active, superseded, rolled back,
//! failed), and it is trimmed to what a rollback may need.
use serde::{Deserialize, Serialize};

use super::release::{HookRun, Outcome, Release};
use crate::environment::Strategy;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Oldest first.
    pub releases: Vec<Release>,
    pub next_seq: u64,
}

impl History {
    pub fn active(&self) -> Option<&Release> {
        self.releases
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::Active)
    }

    pub fn in_progress(&self) -> Option<&Release> {
        self.releases
            .iter()
            .rev()
            .find(|r| r.outcome == Outcome::InProgress)
    }

    pub fn get(&self, id: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.id == id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Release> {
        self.releases.iter_mut().find(|r| r.id == id)
    }

    /// The release `rollback` without `--to` returns to: the newest one that
    /// served successfully before the active one.
    pub fn previous_good(&self) -> Option<&Release> {
        let active = self.active()?;
        self.releases
            .iter()
            .rev()
            .filter(|r| r.id != active.id)
            .find(|r| matches!(r.outcome, Outcome::Superseded | Outcome::RolledBack))
    }

    /// The release a deploy of `image` would record next, without recording it (for dry runs).
    pub fn begin_preview(&self, image: &str) -> Release {
        Release {
            id: format!("r{}", self.next_seq + 1),
            ..Release::new(image, Strategy::Rolling, 1)
        }
    }

    /// Records a new release as in progress and returns its id.
    pub fn begin(&mut self, mut release: Release) -> String {
        self.next_seq += 1;
        release.id = format!("r{}", self.next_seq);
        release.outcome = Outcome::InProgress;
        let id = release.id.clone();
        self.releases.push(release);
        id
    }

    /// The release serves now; the one before it is superseded (or rolled back, when this restores another).
    pub fn activate(&mut self, id: &str, now: &str) {
        let restores = self.get(id).and_then(|r| r.restores.clone());
        let previous = self.active().map(|r| r.id.clone());
        if let Some(previous) = previous.filter(|p| p != id) {
            let r = self.get_mut(&previous).expect("active release exists");
            match &restores {
                // `rollback --to` the active release itself is a redeploy of it, not a rollback.
                Some(target) if *target == previous => {
                    r.outcome = Outcome::Superseded;
                    r.reason = Some(format!("redeployed as {id}"));
                }
                Some(target) => {
                    r.outcome = Outcome::RolledBack;
                    r.reason = Some(format!("rolled back to {target}"));
                }
                None => r.outcome = Outcome::Superseded,
            }
        }
        if let Some(r) = self.get_mut(id) {
            r.outcome = Outcome::Active;
            r.finished_at = Some(now.to_owned());
        }
    }

    /// A release that was left because it failed after its verification
    /// (`watch`): failed, with why, so `previous_good` never returns to it.
    pub fn condemn(&mut self, id: &str, cause: &str) {
        if let Some(r) = self.get_mut(id) {
            let then = r
                .reason
                .take()
                .map(|r| format!("; {r}"))
                .unwrap_or_default();
            r.outcome = Outcome::Failed;
            r.reason = Some(format!("failed after verification: {cause}{then}"));
        }
    }

    /// The release passed verification with all traffic on it.
    /// Keeps the analysis a run measured with its release.
    pub fn measured(&mut self, id: &str, analysis: Vec<crate::gate::analysis::Measurement>) {
        if let Some(r) = self.get_mut(id) {
            r.analysis = analysis;
        }
    }

    /// Keeps a hook run with its release.
    pub fn hook_ran(&mut self, id: &str, run: HookRun) {
        if let Some(r) = self.get_mut(id) {
            r.hooks.push(run);
        }
    }

    /// The immutable image reference the release's instances run (see `Target::image_ran`).
    pub fn ran_image(&mut self, id: &str, image_id: String) {
        if let Some(r) = self.get_mut(id) {
            r.image_id = image_id;
        }
    }

    pub fn verified(&mut self, id: &str, now: &str) {
        if let Some(r) = self.get_mut(id) {
            r.verified_at = Some(now.to_owned());
        }
    }

    /// Closes the release a dead run left in progress: activated when it had
    /// passed verification (only its last record was missing), failed
    /// otherwise. Returns its id.
    pub fn close_interrupted(&mut self, now: &str) -> Option<String> {
        let release = self.in_progress()?;
        let id = release.id.clone();
        if release.verified_at.is_some() {
            self.activate(&id, now);
            if let Some(r) = self.get_mut(&id) {
                r.reason = Some(
                    "verified by a run that stopped before recording it; activated by the next one"
                        .into(),
                );
            }
        } else {
            self.fail(
                &id,
                "interrupted: the deploy that started it stopped before finishing",
                now,
            );
        }
        Some(id)
    }

    pub fn fail(&mut self, id: &str, reason: &str, now: &str) {
        if let Some(r) = self.get_mut(id) {
            r.outcome = Outcome::Failed;
            r.reason = Some(reason.to_owned());
            r.finished_at = Some(now.to_owned());
        }
    }

    /// The releases whose images must stay: every one kept in history that
    /// can serve, or is in progress (its image is about to run).
    pub fn needed(&self) -> Vec<Release> {
        self.releases
            .iter()
            .filter(|r| r.outcome != Outcome::Failed)
            .cloned()
            .collect()
    }

    /// Keeps `keep` releases that can serve (the active one and the newest
    /// rollback targets), and failed or unfinished ones only among the
    /// newest `keep` records: failures never push out a release that
    /// `rollback` could still use.
    pub fn trim(&mut self, keep: usize) {
        let servable = |r: &Release| {
            matches!(
                r.outcome,
                Outcome::Active | Outcome::Superseded | Outcome::RolledBack
            )
        };
        let good: Vec<String> = self
            .releases
            .iter()
            .rev()
            .filter(|r| servable(r))
            .take(keep)
            .map(|r| r.id.clone())
            .collect();
        let newest: Vec<String> = self
            .releases
            .iter()
            .rev()
            .take(keep)
            .map(|r| r.id.clone())
            .collect();
        let active = self.active().map(|r| r.id.clone());
        self.releases.retain(|r| {
            Some(&r.id) == active.as_ref()
                || good.contains(&r.id)
                || (!servable(r) && newest.contains(&r.id))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(image: &str) -> Release {
        Release {
            image_id: "sha256:x".into(),
            by: "t".into(),
            ..Release::new(image, Strategy::Rolling, 1)
        }
    }

    #[test]
    fn releases_move_through_their_outcomes() {
        let mut h = History::default();
        let r1 = h.begin(release("a:1"));
        h.activate(&r1, "t1");
        let r2 = h.begin(release("a:2"));
        h.fail(&r2, "never ready", "t2");
        assert_eq!(h.active().unwrap().id, "r1");
        let r3 = h.begin(release("a:3"));
        h.activate(&r3, "t3");
        assert_eq!(h.get("r1").unwrap().outcome, Outcome::Superseded);
        assert_eq!(
            h.previous_good().unwrap().id,
            "r1",
            "the failed r2 is skipped"
        );
        let mut back = release("a:1");
        back.restores = Some("r1".into());
        let r4 = h.begin(back);
        h.activate(&r4, "t4");
        assert_eq!(h.get("r3").unwrap().outcome, Outcome::RolledBack);
        assert_eq!(
            h.get("r3").unwrap().reason.as_deref(),
            Some("rolled back to r1")
        );
    }

    #[test]
    fn a_release_left_after_failing_its_watch_is_never_returned_to() {
        let mut h = History::default();
        let r1 = h.begin(release("a:1"));
        h.activate(&r1, "t1");
        let r2 = h.begin(release("a:2"));
        h.activate(&r2, "t2");
        let mut back = release("a:1");
        back.restores = Some(r1.clone());
        let r3 = h.begin(back);
        h.activate(&r3, "t3");
        h.condemn(
            &r2,
            "instance app-b exited with code 137 after verification",
        );
        let left = h.get(&r2).unwrap();
        assert_eq!(left.outcome, Outcome::Failed);
        assert_eq!(
            left.reason.as_deref(),
            Some("failed after verification: instance app-b exited with code 137 after verification; rolled back to r1")
        );
        // A later rollback from r3 goes to r1, never to the condemned r2.
        let r4 = h.begin(release("a:4"));
        h.activate(&r4, "t4");
        assert_eq!(h.previous_good().unwrap().id, "r3");
        assert!(h
            .releases
            .iter()
            .filter(|r| r.outcome != Outcome::Failed)
            .all(|r| r.id != r2));
    }

    #[test]
    fn trimming_keeps_the_active_and_the_newest_failures() {
        let mut h = History::default();
        let first = h.begin(release("a:1"));
        h.activate(&first, "t");
        for _ in 0..6 {
            let id = h.begin(release("a:x"));
            h.fail(&id, "bad", "t");
        }
        h.trim(3);
        let ids: Vec<&str> = h.releases.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r5", "r6", "r7"]);
    }

    #[test]
    fn failed_releases_never_push_out_a_rollback_target() {
        let mut h = History::default();
        for _ in 0..2 {
            let id = h.begin(release("a:good"));
            h.activate(&id, "t");
        }
        for _ in 0..5 {
            let id = h.begin(release("a:bad"));
            h.fail(&id, "bad", "t");
        }
        h.trim(3);
        assert_eq!(h.active().unwrap().id, "r2");
        assert_eq!(
            h.previous_good().map(|r| r.id.as_str()),
            Some("r1"),
            "r1 is still there to roll back to"
        );
        let ids: Vec<&str> = h.releases.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "r5", "r6", "r7"]);
    }

    #[test]
    fn an_interrupted_release_is_activated_only_when_it_was_verified() {
        let mut h = History::default();
        let r1 = h.begin(release("a:1"));
        h.activate(&r1, "t");
        let r2 = h.begin(release("a:2"));
        h.verified(&r2, "t");
        assert_eq!(h.close_interrupted("t2").as_deref(), Some("r2"));
        assert_eq!(h.active().unwrap().id, "r2");
        assert_eq!(h.get("r1").unwrap().outcome, Outcome::Superseded);
        let r3 = h.begin(release("a:3"));
        h.close_interrupted("t3");
        assert_eq!(h.get(&r3).unwrap().outcome, Outcome::Failed);
        assert_eq!(h.active().unwrap().id, "r2");
    }
}
