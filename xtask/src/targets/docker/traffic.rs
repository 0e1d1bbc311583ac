//! A weighted split as HAProxy server weights, and back. Pure: the Docker
//! target reads its instances and the balancer's slots, calls `weights`,
//! and sends every weight in one exec; `shares` reads a split back from
//! the weights `show stat` reports.
//!
//! A release's share is spread over as many of its instances as its share
//! of the largest release's instance count (largest remainder, at least one
//! when its share is above 0): while a rolling deploy moves a third of the
//! traffic, a third of the old instances leave the traffic and can drain.
//! Instances already serving keep serving first, so traffic never hops
//! between instances of one release for nothing.
use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::{haproxy::runtime::MAX_WEIGHT, targets::Split};

/// Instances per release for `split` over `slots` instances, by largest
/// remainder; a release with a share above 0 keeps at least one.
pub fn instance_counts(split: &Split, slots: usize) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize, usize)> = split
        .0
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(r, p)| {
            let exact = *p as usize * slots;
            (r.clone(), exact / 100, exact % 100)
        })
        .collect();
    let mut left = slots.saturating_sub(counts.iter().map(|c| c.1).sum());
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(counts[i].2));
    for &i in &order {
        if left == 0 {
            break;
        }
        counts[i].1 += 1;
        left -= 1;
    }
    for count in counts.iter_mut() {
        count.1 = count.1.max(1);
    }
    counts.into_iter().map(|(r, n, _)| (r, n)).collect()
}

/// One instance that could take traffic: its name and whether it serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub instance: String,
    pub serving: bool,
}

/// The weight of every candidate (0: out of traffic) so that each release
/// of `split` gets its share. `running`: each release's live instances.
pub fn weights(
    split: &Split,
    running: &BTreeMap<String, Vec<Candidate>>,
) -> Result<BTreeMap<String, u16>> {
    let widest = split
        .0
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(r, _)| running.get(r).map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut out: BTreeMap<String, u16> = running
        .values()
        .flatten()
        .map(|c| (c.instance.clone(), 0))
        .collect();
    for (release, count) in instance_counts(split, widest) {
        let Some(candidates) = running.get(&release).filter(|c| !c.is_empty()) else {
            bail!("no running instance of {release} to send its traffic to");
        };
        let count = count.min(candidates.len());
        let share = u32::from(split.share(&release));
        let per = (share * u32::from(MAX_WEIGHT) + 50 * count as u32) / (100 * count as u32);
        let per = per.clamp(1, u32::from(MAX_WEIGHT)) as u16;
        let mut ordered: Vec<&Candidate> = candidates.iter().collect();
        ordered.sort_by(|a, b| b.serving.cmp(&a.serving).then(a.instance.cmp(&b.instance)));
        for candidate in ordered.into_iter().take(count) {
            out.insert(candidate.instance.clone(), per);
        }
    }
    Ok(out)
}

/// The split that weights per release make, in percent summing to 100
/// (largest remainder); releases at weight 0 are left out.
pub fn shares(weights: &BTreeMap<String, u32>) -> Split {
    let total: u32 = weights.values().sum();
    if total == 0 {
        return Split::default();
    }
    let mut parts: Vec<(String, u32, u32)> = weights
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(r, w)| (r.clone(), w * 100 / total, w * 100 % total))
        .collect();
    let mut left = 100 - parts.iter().map(|p| p.1).sum::<u32>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(parts[i].2));
    for &i in &order {
        if left == 0 {
            break;
        }
        parts[i].1 += 1;
        left -= 1;
    }
    Split(parts.into_iter().map(|(r, p, _)| (r, p as u8)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: &[(&str, u8)]) -> Split {
        Split(parts.iter().map(|(r, p)| (r.to_string(), *p)).collect())
    }

    fn release(names: &[&str], serving: bool) -> Vec<Candidate> {
        names
            .iter()
            .map(|n| Candidate {
                instance: n.to_string(),
                serving,
            })
            .collect()
    }

    fn by_release(w: &BTreeMap<String, u16>) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for (instance, weight) in w {
            *out.entry(instance[..1].to_owned()).or_insert(0) += u32::from(*weight);
        }
        out
    }

    #[test]
    fn shares_become_instance_counts_by_largest_remainder_and_never_vanish() {
        assert_eq!(
            instance_counts(&split(&[("r1", 67), ("r2", 33)]), 3),
            [("r1".into(), 2), ("r2".into(), 1)]
        );
        assert_eq!(
            instance_counts(&split(&[("r1", 99), ("r2", 1)]), 3),
            [("r1".into(), 3), ("r2".into(), 1)]
        );
        assert_eq!(
            instance_counts(&split(&[("r2", 100)]), 4),
            [("r2".into(), 4)]
        );
    }

    #[test]
    fn a_rolling_third_takes_one_old_instance_out_and_keeps_the_shares() {
        let running = BTreeMap::from([
            ("r1".to_owned(), release(&["a1", "a2", "a3"], true)),
            ("r2".to_owned(), release(&["b1"], false)),
        ]);
        let w = weights(&split(&[("r1", 67), ("r2", 33)]), &running).unwrap();
        assert_eq!(w.values().filter(|w| **w == 0).count(), 1, "{w:?}");
        assert_eq!(w["a3"], 0, "stable order: the last old instance leaves");
        assert_eq!(w["b1"], 84);
        assert_eq!(shares(&by_release(&w)), split(&[("a", 67), ("b", 33)]));
    }

    #[test]
    fn everything_to_one_release_puts_the_other_at_weight_zero() {
        let running = BTreeMap::from([
            ("r1".to_owned(), release(&["a1", "a2", "a3"], true)),
            ("r2".to_owned(), release(&["b1", "b2", "b3"], false)),
        ]);
        let w = weights(&split(&[("r2", 100)]), &running).unwrap();
        assert!(
            w.iter().all(|(i, w)| (i.starts_with('b')) == (*w > 0)),
            "{w:?}"
        );
        assert_eq!(w["b1"], 85);
        assert_eq!(shares(&by_release(&w)), split(&[("b", 100)]));
    }

    #[test]
    fn a_canary_tenth_is_honoured_within_a_percent() {
        let running = BTreeMap::from([
            ("r1".to_owned(), release(&["a1", "a2", "a3"], true)),
            ("r2".to_owned(), release(&["b1"], false)),
        ]);
        let w = weights(&split(&[("r1", 90), ("r2", 10)]), &running).unwrap();
        let got = shares(&by_release(&w));
        assert!((9..=11).contains(&got.share("b")), "{got:?} from {w:?}");
        assert!(w.values().all(|w| *w <= MAX_WEIGHT));
    }

    #[test]
    fn serving_instances_keep_serving_first() {
        let mut r1 = release(&["a1", "a2"], false);
        r1.push(Candidate {
            instance: "a9".into(),
            serving: true,
        });
        let running = BTreeMap::from([
            ("r1".to_owned(), r1),
            ("r2".to_owned(), release(&["b1", "b2", "b3"], false)),
        ]);
        let w = weights(&split(&[("r1", 34), ("r2", 66)]), &running).unwrap();
        assert!(w["a9"] > 0 && w["a1"] == 0 && w["a2"] == 0, "{w:?}");
    }

    #[test]
    fn a_release_without_running_instances_cannot_take_traffic() {
        let running = BTreeMap::from([("r1".to_owned(), vec![])]);
        let err = weights(&split(&[("r1", 100)]), &running).unwrap_err();
        assert!(
            err.to_string().contains("no running instance of r1"),
            "{err}"
        );
    }
}
