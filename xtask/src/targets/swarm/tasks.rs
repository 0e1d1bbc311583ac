//! The tasks of a service as the deploy gate sees them, and their probes:
//! straight to each task's unix socket, never through an overlay address.
use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use bollard::{
    models::TaskState,
    query_parameters::{ListTasksOptionsBuilder, LogsOptionsBuilder},
};
use serde::Serialize;

use super::SwarmTarget;
use crate::{
    gate::{self as health, ProbeResult},
    targets::docker::labels,
};

/// A probe's error when the task has not created its socket (yet, or any more).
pub const NO_SOCKET: &str = "no socket";

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

impl SwarmTarget {
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
                TaskView {
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

    /// One probe of `path` through the task's socket; a task with no socket yet is "no answer".
    pub async fn probe_task(&self, task: &TaskView, path: &str, timeout: Duration) -> ProbeResult {
        self.probe_socket(&task.id, path, timeout).await
    }

    /// One probe of `path` through the socket of task `task_id`.
    pub async fn probe_socket(&self, task_id: &str, path: &str, timeout: Duration) -> ProbeResult {
        let socket = self.socket_path(task_id);
        let url = format!("http://{task_id}{path}");
        if !socket.exists() {
            return ProbeResult {
                url,
                status: None,
                latency_ms: 0.0,
                error: Some(NO_SOCKET.into()),
            };
        }
        // One client per task socket, kept: building one loads TLS roots, and
        // the gate probes every task every tick.
        let client = {
            let mut clients = self.probe_clients.lock().expect("probe clients");
            match clients.get(task_id) {
                Some(client) => Ok(client.clone()),
                None => reqwest::Client::builder()
                    .unix_socket(socket)
                    .build()
                    .inspect(|c| {
                        clients.insert(task_id.to_owned(), c.clone());
                    }),
            }
        };
        match client {
            Ok(client) => health::probe(&client, &url, timeout).await,
            Err(e) => ProbeResult {
                url,
                status: None,
                latency_ms: 0.0,
                error: Some(format!("{e}")),
            },
        }
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
