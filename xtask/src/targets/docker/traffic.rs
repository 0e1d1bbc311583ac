//! A weighted split over the balancer's traffic slots: each slot sends its
//! share of requests to one instance, so a release's share is its number of
//! slots. Pure: the Docker target reads the slots and instances, calls
//! `assign`, and moves only the slots whose instance changed.
use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::targets::Split;

/// Slots per release for `split` over `slots` slots, by largest remainder;
/// a release with a share above 0 keeps at least one slot.
pub fn slot_counts(split: &Split, slots: usize) -> Vec<(String, usize)> {
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
    for &i in order
        .iter()
        .cycle()
        .take(left.min(order.len() * slots.max(1)))
    {
        if left == 0 {
            break;
        }
        counts[i].1 += 1;
        left -= 1;
    }
    // A share above 0 is never rounded away while another release has slots to spare.
    for i in 0..counts.len() {
        if counts[i].1 == 0 {
            if let Some(donor) = (0..counts.len())
                .filter(|&j| counts[j].1 > 1)
                .max_by_key(|&j| counts[j].1)
            {
                counts[donor].1 -= 1;
                counts[i].1 = 1;
            }
        }
    }
    counts.into_iter().map(|(r, n, _)| (r, n)).collect()
}

/// The instance for each slot. `current`: each slot's instance now;
/// `running`: the instances of each release that may take traffic. A slot
/// already on an instance of a release that still needs slots stays, unless
/// that instance has its fair share already (a release's slots spread evenly
/// over its instances); the others go to that release's least used instances.
pub fn assign(
    current: &[Option<String>],
    counts: &[(String, usize)],
    running: &HashMap<String, Vec<String>>,
) -> Result<Vec<Option<String>>> {
    let mut need: HashMap<&str, usize> = HashMap::new();
    for (release, n) in counts.iter().filter(|(_, n)| *n > 0) {
        if running.get(release).is_none_or(Vec::is_empty) {
            bail!("no running instance of {release} to send its traffic to");
        }
        need.insert(release, *n);
    }
    let release_of = |instance: &str| {
        running
            .iter()
            .find(|(_, list)| list.iter().any(|i| i == instance))
            .map(|(r, _)| r.as_str())
    };
    let fair: HashMap<&str, usize> = need
        .iter()
        .map(|(r, n)| (*r, n.div_ceil(running[*r].len())))
        .collect();
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut next: Vec<Option<String>> = current
        .iter()
        .map(|slot| {
            let instance = slot.as_ref()?;
            let release = release_of(instance)?;
            if used.get(instance).copied().unwrap_or(0) >= *fair.get(release)? {
                return None;
            }
            let left = need.get_mut(release).filter(|n| **n > 0)?;
            *left -= 1;
            *used.entry(instance.clone()).or_default() += 1;
            Some(instance.clone())
        })
        .collect();
    for slot in next.iter_mut().filter(|s| s.is_none()) {
        let Some(release) = counts
            .iter()
            .map(|(r, _)| r.as_str())
            .find(|r| need.get(r).is_some_and(|n| *n > 0))
        else {
            break;
        };
        let instance = running[release]
            .iter()
            .min_by_key(|i| used.get(*i).copied().unwrap_or(0))
            .expect("checked above: the release has running instances")
            .clone();
        *need.get_mut(release).expect("needed") -= 1;
        *used.entry(instance.clone()).or_default() += 1;
        *slot = Some(instance);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: &[(&str, u8)]) -> Split {
        Split(parts.iter().map(|(r, p)| (r.to_string(), *p)).collect())
    }

    fn slots(v: &[Option<&str>]) -> Vec<Option<String>> {
        v.iter().map(|s| s.map(str::to_owned)).collect()
    }

    #[test]
    fn shares_become_slots_by_largest_remainder_and_never_vanish() {
        assert_eq!(
            slot_counts(&split(&[("r1", 67), ("r2", 33)]), 3),
            [("r1".into(), 2), ("r2".into(), 1)]
        );
        assert_eq!(
            slot_counts(&split(&[("r1", 90), ("r2", 10)]), 3),
            [("r1".into(), 2), ("r2".into(), 1)]
        );
        assert_eq!(slot_counts(&split(&[("r2", 100)]), 4), [("r2".into(), 4)]);
        assert_eq!(
            slot_counts(&split(&[("r1", 50), ("r2", 50)]), 4),
            [("r1".into(), 2), ("r2".into(), 2)]
        );
    }

    #[test]
    fn slots_stay_where_they_may_and_the_rest_spread_over_the_new_release() {
        let running = HashMap::from([
            (
                "r1".to_owned(),
                vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
            ),
            ("r2".to_owned(), vec!["x".to_owned()]),
        ]);
        let now = slots(&[Some("a"), Some("b"), Some("c")]);
        let one_third = assign(&now, &[("r1".into(), 2), ("r2".into(), 1)], &running).unwrap();
        assert_eq!(one_third, slots(&[Some("a"), Some("b"), Some("x")]));
        let all = assign(&one_third, &[("r2".into(), 3)], &running).unwrap();
        assert_eq!(all, slots(&[Some("x"), Some("x"), Some("x")]));
        let back = assign(&all, &[("r1".into(), 3)], &running).unwrap();
        assert_eq!(back, slots(&[Some("a"), Some("b"), Some("c")]));
    }

    #[test]
    fn slots_piled_on_one_instance_spread_when_more_instances_run() {
        let running = HashMap::from([(
            "r1".to_owned(),
            vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
        )]);
        let piled = slots(&[Some("a"), Some("a"), Some("a")]);
        let spread = assign(&piled, &[("r1".into(), 3)], &running).unwrap();
        assert_eq!(spread, slots(&[Some("a"), Some("b"), Some("c")]));
    }

    #[test]
    fn a_release_without_running_instances_cannot_take_traffic() {
        let running = HashMap::from([("r1".to_owned(), vec![])]);
        let err = assign(&slots(&[None]), &[("r1".into(), 1)], &running).unwrap_err();
        assert!(
            err.to_string().contains("no running instance of r1"),
            "{err}"
        );
    }
}
