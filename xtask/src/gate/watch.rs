//! After the verification window: the active release watched for a while
//! longer (`cargo xtask watch`), as a bake period. The conditions are pure,
//! as the gate's are: what one round saw goes in, a verdict comes out; the
//! caller's loop keeps the clock.
//!
//! A release fails its watch on either kind of evidence:
//! - `failure_threshold` rounds in a row in which the public URL failed the
//!   health path or a `verify_paths` route (one failed round is a blip);
//! - one of the instances that served when the watch began crashed, exited
//!   or disappeared (an orchestrator replacing it is still a crash).
use std::collections::HashMap;

use super::ProbeResult;
use crate::targets::{InstanceState, InstanceView};

pub struct Watch {
    failure_threshold: u32,
    failed_rounds: u32,
    /// Restarts of each instance of the release when the watch began.
    baseline: HashMap<String, (String, i64)>,
}

impl Watch {
    /// Begins with the release's instances as they run now.
    pub fn new(release: &str, instances: &[InstanceView], failure_threshold: u32) -> Watch {
        let baseline = instances
            .iter()
            .filter(|i| i.release == release)
            .filter_map(|i| match i.state {
                InstanceState::Running { restarts } => {
                    Some((i.id.clone(), (i.name.clone(), restarts)))
                }
                _ => None,
            })
            .collect();
        Watch {
            failure_threshold: failure_threshold.max(1),
            failed_rounds: 0,
            baseline,
        }
    }

    /// Failed rounds of public probes only, with no instance to follow: the
    /// verification window's rule.
    pub fn public_only(failure_threshold: u32) -> Watch {
        Watch::new("", &[], failure_threshold)
    }

    /// How many instances the watch follows.
    pub fn following(&self) -> usize {
        self.baseline.len()
    }

    /// One round: the public probes and the instances seen now. `Some` is
    /// the reason the release failed its watch.
    pub fn take(&mut self, probes: &[ProbeResult], instances: &[InstanceView]) -> Option<String> {
        if let Some(reason) = self.crashed(instances) {
            return Some(reason);
        }
        match probes.iter().find(|p| !p.ok()) {
            Some(failed) => {
                self.failed_rounds += 1;
                (self.failed_rounds >= self.failure_threshold).then(|| {
                    format!(
                        "public {} answered {} ({} rounds in a row)",
                        failed.url,
                        failed.describe(),
                        self.failed_rounds
                    )
                })
            }
            None => {
                self.failed_rounds = 0;
                None
            }
        }
    }

    fn crashed(&self, instances: &[InstanceView]) -> Option<String> {
        let mut ids: Vec<&String> = self.baseline.keys().collect();
        ids.sort();
        for id in ids {
            let (name, restarts_before) = &self.baseline[id];
            let now = instances.iter().find(|i| &i.id == id).map(|i| &i.state);
            let problem = match now {
                None | Some(InstanceState::Missing) => "disappeared".to_owned(),
                Some(InstanceState::Exited { code }) => format!("exited with code {code}"),
                Some(InstanceState::Running { restarts }) if restarts > restarts_before => {
                    format!("restarted {} time(s)", restarts - restarts_before)
                }
                Some(InstanceState::Running { .. } | InstanceState::Pending) => continue,
            };
            return Some(format!("instance {name} {problem} after verification"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, release: &str, state: InstanceState) -> InstanceView {
        InstanceView {
            id: id.into(),
            name: format!("app-{id}"),
            release: release.into(),
            colour: String::new(),
            state,
            traffic: Some(50.0),
        }
    }

    fn probe(status: u16) -> ProbeResult {
        ProbeResult {
            url: "https://h/items".into(),
            status: Some(status),
            latency_ms: 1.0,
            error: None,
        }
    }

    fn running(restarts: i64) -> InstanceState {
        InstanceState::Running { restarts }
    }

    #[test]
    fn failed_rounds_count_only_in_a_row() {
        let now = [instance("a", "r2", running(0))];
        let mut watch = Watch::new("r2", &now, 3);
        assert_eq!(watch.following(), 1);
        assert_eq!(watch.take(&[probe(200), probe(500)], &now), None);
        assert_eq!(watch.take(&[probe(502)], &now), None);
        assert_eq!(watch.take(&[probe(200)], &now), None, "a good round resets");
        assert_eq!(watch.take(&[probe(500)], &now), None);
        assert_eq!(watch.take(&[probe(500)], &now), None);
        assert_eq!(
            watch.take(&[probe(500)], &now).as_deref(),
            Some("public https://h/items answered HTTP 500 (3 rounds in a row)")
        );
    }

    #[test]
    fn a_crash_of_a_followed_instance_fails_at_once() {
        let before = [
            instance("a", "r2", running(1)),
            instance("b", "r2", running(0)),
            instance("old", "r1", running(0)),
        ];
        let mut watch = Watch::new("r2", &before, 3);
        assert_eq!(watch.following(), 2, "only the watched release's instances");
        assert_eq!(
            watch.take(&[probe(200)], &before),
            None,
            "restarts before the watch do not count"
        );
        let restarted = [
            instance("a", "r2", running(2)),
            instance("b", "r2", running(0)),
        ];
        assert_eq!(
            watch.take(&[probe(200)], &restarted).as_deref(),
            Some("instance app-a restarted 1 time(s) after verification")
        );
        let exited = [
            instance("a", "r2", running(1)),
            instance("b", "r2", InstanceState::Exited { code: 137 }),
        ];
        assert_eq!(
            watch.take(&[probe(200)], &exited).as_deref(),
            Some("instance app-b exited with code 137 after verification")
        );
        let replaced = [
            instance("a", "r2", running(1)),
            instance("c", "r2", running(0)),
        ];
        assert_eq!(
            watch.take(&[probe(200)], &replaced).as_deref(),
            Some("instance app-b disappeared after verification")
        );
        // An instance an old release still runs (or one that left) is not watched.
        let old_gone = [
            instance("a", "r2", running(1)),
            instance("b", "r2", running(0)),
        ];
        assert_eq!(watch.take(&[probe(200)], &old_gone), None);
    }
}
