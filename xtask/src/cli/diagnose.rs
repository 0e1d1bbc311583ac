//! What `status` and `health` add when traffic and releases disagree, read
//! from what every target reports (no branch on the target kind): the
//! active release's instances run, but the balancer sends none of them
//! traffic. That is what a killed balancer (not restarted), or one that
//! came back without its saved slots, leaves; `route` repairs it.
use crate::{deploy::release::Release, targets::InstanceView};

/// One sentence naming the fault and its repair, or None when traffic and
/// the active release agree (or the target routes by itself).
pub fn traffic(env: &str, active: Option<&Release>, instances: &[InstanceView]) -> Option<String> {
    let active = active?;
    let running: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| i.release == active.id)
        .filter(|i| matches!(i.state, crate::targets::InstanceState::Running { .. }))
        .collect();
    // None: the orchestrator routes, we cannot tell.
    let routed: Option<f64> = instances.iter().map(|i| i.traffic).sum();
    match routed {
        Some(total) if total <= 0.0 && !running.is_empty() => Some(format!(
            "the balancer sends no traffic to any of the {} running instance(s) of the active release {}: it is down or its slots are empty (a balancer that was killed, crashed or restarted keeps none); `cargo xtask route -e {env}` starts it if needed and puts them back into its slots",
            running.len(),
            active.id
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::InstanceState;

    fn instance(release: &str, traffic: Option<f64>) -> InstanceView {
        InstanceView {
            id: "id".into(),
            name: "n".into(),
            release: release.into(),
            colour: String::new(),
            state: InstanceState::Running { restarts: 0 },
            traffic,
        }
    }

    #[test]
    fn empty_slots_under_a_running_active_release_name_route() {
        let mut active: Release = serde_json::from_value(serde_json::json!({
            "id": "r1", "image": "x", "image_id": "", "env": {}, "secrets": {}, "strategy": "rolling",
            "replicas": 1, "started_at": "", "by": "", "outcome": "active"
        }))
        .unwrap();
        let empty = [instance("r1", Some(0.0)), instance("r1", Some(0.0))];
        let found = traffic("dev", Some(&active), &empty).unwrap();
        assert!(
            found.contains("2 running instance(s)") && found.contains("cargo xtask route -e dev"),
            "{found}"
        );
        assert!(traffic("dev", Some(&active), &[instance("r1", Some(100.0))]).is_none());
        assert!(
            traffic("dev", Some(&active), &[instance("r1", None)]).is_none(),
            "orchestrator routes"
        );
        assert!(traffic("dev", None, &empty).is_none());
        active.id = "r2".into();
        assert!(
            traffic("dev", Some(&active), &empty).is_none(),
            "no r2 instance runs"
        );
    }
}
