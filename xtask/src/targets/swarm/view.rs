//! What `status`, `health` and `deploy --dry-run` show of a swarm
//! environment: the tasks of both colours with their share of the slots,
//! probes through each routed task's socket, and the service spec.
use std::{collections::HashMap, time::Duration};

use anyhow::Result;

use super::{rollout::other, service::release_of, SwarmTarget, COLOURS};
use crate::{
    deploy::release::Release,
    gate::ProbeResult,
    targets::{InstanceState, InstanceView},
};

impl SwarmTarget {
    pub(super) async fn task_views(&self) -> Result<Vec<InstanceView>> {
        let routes = self.routes();
        let total = routes.len().max(1) as f64;
        let mut views = vec![];
        for colour in COLOURS {
            for task in self.tasks(&self.service_name(colour)).await? {
                if !task.wanted() && !task.running() {
                    continue;
                }
                let slots = routes
                    .iter()
                    .filter(|r| r.as_deref() == Some(&task.id))
                    .count();
                let state = if task.running() {
                    InstanceState::Running { restarts: 0 }
                } else if task.died() {
                    InstanceState::Exited {
                        code: task.exit_code.unwrap_or(-1),
                    }
                } else {
                    InstanceState::Pending
                };
                views.push(InstanceView {
                    id: task.id,
                    name: task.name,
                    release: task.release,
                    colour: colour.to_owned(),
                    state,
                    traffic: Some(slots as f64 * 100.0 / total),
                });
            }
        }
        Ok(views)
    }

    /// Every slot, by the task it points at: a slot left on a task swarm
    /// replaced while no xtask ran shows up here as "no socket".
    pub(super) async fn slot_probes(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<Vec<(String, ProbeResult)>> {
        let mut names = HashMap::new();
        for colour in COLOURS {
            for task in self.tasks(&self.service_name(colour)).await? {
                names.insert(task.id.clone(), task.name.clone());
            }
        }
        let mut results = vec![];
        for (slot, task) in self.routes().into_iter().enumerate() {
            let Some(task) = task else { continue };
            let who = format!("slot {slot}: {}", names.get(&task).unwrap_or(&task));
            results.push((who, self.probe_socket(&task, path, timeout).await));
        }
        Ok(results)
    }

    /// The service spec a deploy of `planned` would apply (secrets by name only).
    pub(super) async fn planned_spec(&self, planned: &Release) -> Result<serde_json::Value> {
        let secrets = planned
            .secrets
            .keys()
            .map(|name| bollard::models::TaskSpecContainerSpecSecrets {
                secret_name: Some(format!(
                    "{}-{}-{}",
                    self.scope,
                    planned.id,
                    name.to_lowercase()
                )),
                file: Some(bollard::models::TaskSpecContainerSpecFile {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let mut live = None;
        for colour in COLOURS {
            if let Some(service) = self.inspect_service(&self.service_name(colour)).await? {
                if super::service::replicas_of(&service) > 0 && release_of(&service).is_some() {
                    live = Some(colour);
                }
            }
        }
        let colour = match (planned.strategy, live) {
            (crate::environment::Strategy::Rolling, Some(c)) => c,
            (crate::environment::Strategy::BlueGreen, Some(c)) => other(c),
            _ => "blue",
        };
        let spec = self.spec(colour, planned, &planned.env, secrets, planned.replicas);
        Ok(serde_json::json!({ "kind": "swarm", "live_colour": live, "service": spec }))
    }
}
