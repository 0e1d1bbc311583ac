//! Where releases run. A target starts and stops instances, routes the
//! public endpoint's traffic slots to them, and keeps the release history
//! and lock itself. Strategies (rolling, blue-green) and recovery are
//! written once, against this trait.
pub mod docker;
pub mod kubernetes;
pub mod swarm;

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::{
    deploy::lock::LockStore,
    deploy::release::{History, Release},
};

/// A log stream from the engine (a container's or a swarm task's), as text.
pub(crate) async fn collect_logs(
    mut stream: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>
        + Unpin,
) -> String {
    use futures_util::StreamExt;
    let mut out = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(output) => out.push_str(&output.to_string()),
            Err(e) => {
                out.push_str(&format!("(logs unavailable: {e})"));
                break;
            }
        }
    }
    out
}

/// One running copy of a release.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub release: String,
    pub color: String,
    /// `http://127.0.0.1:PORT`: probes reach the instance directly, not through the balancer.
    pub probe_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum InstanceState {
    Running { restarts: i64 },
    Exited { code: i64 },
    Missing,
}

#[allow(async_fn_in_trait)]
pub trait Target: LockStore {
    async fn read_history(&self) -> Result<History>;
    async fn write_history(&self, history: &History) -> Result<()>;

    /// Whether the image is still in the target (a rollback must not need a registry).
    async fn image_id(&self, image: &str) -> Result<Option<String>>;

    /// Creates and starts an instance of `release` with the fully resolved environment.
    async fn start_instance(
        &self,
        release: &Release,
        env: &BTreeMap<String, String>,
    ) -> Result<Instance>;
    async fn instance_state(&self, instance: &Instance) -> Result<InstanceState>;
    async fn instance_logs(&self, instance: &Instance, lines: usize) -> Result<String>;
    /// SIGTERM, wait for the app's drain to finish, remove. The instance must already be out of traffic.
    async fn stop_instance(&self, instance: &Instance) -> Result<()>;
    /// Every instance of this environment the target has, routed or not.
    async fn instances(&self) -> Result<Vec<Instance>>;

    /// Makes the balancer serve `slots` traffic slots (starting it if needed).
    async fn ensure_balancer(&self, slots: usize) -> Result<()>;
    /// Which instance (by id) each slot sends traffic to.
    async fn routes(&self) -> Result<Vec<Option<String>>>;
    /// Points one slot at an instance; atomic, with no connection dropped.
    async fn route(&self, slot: usize, instance: &Instance) -> Result<()>;
    /// The balancer's URL, and a client that trusts its certificate.
    fn public_url(&self) -> String;
    fn public_client(&self) -> Result<reqwest::Client>;
}
