//! What `status`, `health` and `deploy --dry-run` show of a swarm
//! environment: the tasks of both colours with their share of the traffic,
//! the balancer's last check of each task in traffic, and the service spec.
use anyhow::Result;

use super::{rollout::other, router::slot_row, service::release_of, SwarmTarget, COLOURS};
use crate::{
    deploy::release::Release,
    gate::ProbeResult,
    targets::{InstanceState, InstanceView},
};

impl SwarmTarget {
    pub(super) async fn task_views(&self) -> Result<Vec<InstanceView>> {
        let rows = self.rows().await?;
        let mut views = vec![];
        for colour in COLOURS {
            let tasks = self.tasks(&self.service_name(colour)).await?;
            let shares = SwarmTarget::shares_of(&rows, &tasks);
            for task in tasks {
                if !task.wanted() && !task.running() {
                    continue;
                }
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
                    traffic: shares.get(&task.id).copied(),
                    id: task.id,
                    name: task.name,
                    release: task.release,
                    colour: colour.to_owned(),
                    state,
                });
            }
        }
        Ok(views)
    }

    /// The balancer's last check of every slot in traffic (the deploying
    /// machine may not reach the overlay): a slot left on a task swarm
    /// replaced while no xtask ran shows up here as DOWN.
    pub(super) async fn slot_probes(&self, path: &str) -> Result<Vec<(String, ProbeResult)>> {
        if path != self.health.path {
            return Ok(Vec::new());
        }
        let rows = self.rows().await?;
        let tasks = self.all_tasks().await?;
        let mut results = vec![];
        for row in rows
            .iter()
            .filter(|r| r.slot.is_some() && r.user_weight > 0)
        {
            if row.status == crate::haproxy::ServerStatus::Maint {
                continue;
            }
            let who = tasks
                .iter()
                .find(|t| slot_row(&rows, t.addr).is_some_and(|r| r.name == row.name))
                .map_or_else(|| row.addr.clone(), |t| t.name.clone());
            let up = row.status == crate::haproxy::ServerStatus::Up;
            results.push((
                format!("{}: {who}", row.name),
                ProbeResult {
                    url: format!("http://{}{path} (balancer check)", row.addr),
                    status: row.check_code.or(up.then_some(200)),
                    latency_ms: 0.0,
                    error: (!up).then(|| {
                        format!("{:?}: {} {}", row.status, row.check_status, row.check_desc)
                    }),
                },
            ));
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
