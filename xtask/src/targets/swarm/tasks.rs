//! The tasks of a service as the deploy gate sees them: state, release, and
//! the overlay address the balancer reaches them at.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context, Result};
use bollard::{
    models::{Task, TaskState},
    query_parameters::{
        InspectNetworkOptionsBuilder, ListContainersOptionsBuilder, ListTasksOptionsBuilder,
        LogsOptionsBuilder,
    },
};
use serde::Serialize;

use super::SwarmTarget;
use crate::targets::docker::labels;

#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    /// `<service>.<slot>`, as `docker service ps` shows it.
    pub name: String,
    pub slot: i64,
    pub release: String,
    pub state: String,
    /// What swarm wants: `running`, or `shutdown` once it is replacing the task.
    pub desired: String,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// Its address and port on the environment's overlay (None: not attached yet).
    pub addr: Option<SocketAddr>,
}

impl TaskView {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// Swarm still wants it (not being replaced or scaled away).
    pub fn wanted(&self) -> bool {
        self.desired == "running"
    }

    /// It ended by itself (crash, failed start, rejected), not because swarm stopped it.
    pub fn died(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "rejected")
            || (self.state == "complete" && self.wanted())
    }

    pub fn describe_end(&self) -> String {
        let mut words = format!("task {} of {} is {}", self.name, self.release, self.state);
        if let Some(code) = self.exit_code.filter(|c| *c != 0) {
            words.push_str(&format!(" (exit code {code})"));
        }
        if let Some(error) = &self.error {
            words.push_str(&format!(": {error}"));
        }
        words
    }
}

fn state_word(state: Option<TaskState>) -> String {
    state.map(|s| s.to_string()).unwrap_or_default()
}

/// The port the task listens on: its `PORT` variable when that is a
/// port, else `default_port`.
fn port_of(task: &Task, default_port: u16) -> u16 {
    task.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find_map(|v| v.strip_prefix("PORT=")))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(default_port)
}

/// Task id -> its address on the network, from a verbose inspect of the
/// network (`Services.<name>.Tasks[].{Name, EndpointIP}`, the task's
/// container name ending in its id). The engine's task model carries the
/// same in `NetworksAttachments`, which bollard's `Task` does not map.
fn endpoints_of(network: &bollard::models::NetworkInspect) -> HashMap<String, IpAddr> {
    let mut out = HashMap::new();
    for service in network.services.iter().flat_map(|s| s.values()) {
        let Some(tasks) = service.get("Tasks").and_then(|t| t.as_array()) else {
            continue;
        };
        for task in tasks {
            let name = task
                .get("Name")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            let ip = task
                .get("EndpointIP")
                .and_then(|i| i.as_str())
                .unwrap_or_default();
            let (Some(id), Ok(ip)) = (name.rsplit('.').next(), ip.parse::<IpAddr>()) else {
                continue;
            };
            out.insert(id.to_owned(), ip);
        }
    }
    out
}

impl SwarmTarget {
    /// Task id -> overlay address of every task on the environment's network.
    async fn endpoints(&self) -> Result<HashMap<String, IpAddr>> {
        let options = InspectNetworkOptionsBuilder::default()
            .verbose(true)
            .scope("swarm")
            .build();
        let mut found = match self
            .docker
            .inspect_network(&self.network, Some(options))
            .await
        {
            Ok(network) => endpoints_of(&network),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => HashMap::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("inspecting network {}", self.network))
            }
        };
        // The verbose inspect's service records come by gossip and may lag
        // or be absent (seen: none at all on a fresh engine); the tasks on
        // this node are also known by their containers' own addresses.
        found.extend(self.local_endpoints().await?);
        Ok(found)
    }

    /// Task id -> overlay address of the environment's task containers on
    /// the node this runner talks to.
    async fn local_endpoints(&self) -> Result<HashMap<String, IpAddr>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", labels::SCOPE, self.scope)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .with_context(|| format!("listing the task containers of {}", self.scope))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let task = c.labels.as_ref()?.get("com.docker.swarm.task.id")?.clone();
                let ip = c
                    .network_settings?
                    .networks?
                    .remove(&self.network)?
                    .ip_address
                    .filter(|a| !a.is_empty())?
                    .parse::<IpAddr>()
                    .ok()?;
                Some((task, ip))
            })
            .collect())
    }

    /// Every task swarm still reports for the service, newest first.
    pub async fn tasks(&self, service: &str) -> Result<Vec<TaskView>> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let mut tasks = match self.docker.list_tasks(Some(options)).await {
            Ok(tasks) => tasks,
            // No such service (a colour never deployed): no tasks.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => vec![],
            Err(e) => {
                return Err(e).with_context(|| format!("listing the tasks of service {service}"))
            }
        };
        tasks.sort_by_key(|t| std::cmp::Reverse(t.version.as_ref().and_then(|v| v.index)));
        let endpoints = self.endpoints().await?;
        Ok(tasks
            .into_iter()
            .map(|t| {
                let status = t.status.clone().unwrap_or_default();
                let release = t
                    .spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(labels::RELEASE).cloned())
                    .unwrap_or_default();
                let slot = t.slot.unwrap_or(0);
                let addr =
                    t.id.as_ref()
                        .and_then(|id| endpoints.get(id))
                        .map(|ip| SocketAddr::new(*ip, port_of(&t, self.app_port)));
                TaskView {
                    addr,
                    id: t.id.unwrap_or_default(),
                    name: format!("{service}.{slot}"),
                    slot,
                    release,
                    state: state_word(status.state),
                    desired: state_word(t.desired_state),
                    exit_code: status.container_status.and_then(|c| c.exit_code),
                    error: status.err.filter(|e| !e.is_empty()),
                }
            })
            .collect())
    }

    /// The task's last log lines, for the failure report.
    pub async fn task_logs(&self, task_id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        crate::targets::collect_logs(Box::pin(self.docker.task_logs(task_id, Some(options)))).await
    }
}
