//! `target.balancer_nodes`: the manager's balancer again on other nodes of
//! the swarm, so clients that reach those nodes (a DNS name over every
//! node, an outside load balancer) are served there. Without the routing
//! mesh (IPVS is not everywhere) a published port answers only on the node
//! that publishes it; this puts the balancer where the clients come in.
//!
//! Each is the Docker target's HAProxy container on that node's engine,
//! joined to the environment's attachable overlay, so it reaches every task
//! wherever it runs. Each is steered to the same weights, by task address,
//! from its own rows: its own checks decide when a new task is UP there,
//! and while none that should serve is UP on it, the ones serving keep
//! their weight (`router::route_commands`). The manager's checks remain the
//! gate's evidence; the verification watches every node's public URL.
use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::future::try_join_all;

use super::SwarmTarget;
use crate::{
    environment::Environment,
    targets::docker::{DockerTarget, Placement},
};

/// A target per balancer node, each checked to be a node of the swarm the
/// manager runs. All are reached before anything happens.
pub(super) async fn connect(env: &Environment, manager: &Docker) -> Result<Vec<DockerTarget>> {
    let nodes = env.balancer_nodes();
    if nodes.is_empty() {
        return Ok(vec![]);
    }
    let members: Vec<String> = manager
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .context("listing the swarm's nodes")?
        .into_iter()
        .filter_map(|n| n.id)
        .collect();
    let connected = nodes.iter().enumerate().map(|(i, host)| {
        let members = &members;
        async move {
            let field = format!("{}: target.balancer_nodes[{i}] = {host}", env.path.display());
            let target = DockerTarget::connect_at(env, Placement::of(env, Some(host))?)
                .await
                .with_context(|| field.clone())?;
            let info = target.docker().info().await.with_context(|| field.clone())?;
            let node = info.swarm.and_then(|s| s.node_id).unwrap_or_default();
            if node.is_empty() || !members.contains(&node) {
                bail!("{field}: that engine is not a node of the manager's swarm (run `docker swarm join` there, or remove it)");
            }
            Ok(target.on_swarm_node())
        }
    });
    try_join_all(connected).await
}

impl SwarmTarget {
    /// The manager's balancer, then each node's.
    pub(super) fn balancers(&self) -> impl Iterator<Item = &DockerTarget> {
        std::iter::once(&self.front).chain(self.nodes.iter())
    }

    /// Each node's balancer, created or started as needed (after the
    /// manager made the overlay they join).
    pub(super) async fn ensure_node_balancers(&self) -> Result<()> {
        try_join_all(self.nodes.iter().map(|node| async move {
            node.ensure_balancer()
                .await
                .with_context(|| format!("the balancer at {}", node_url(node)))
        }))
        .await
        .map(drop)
    }
}

fn node_url(node: &DockerTarget) -> String {
    use crate::targets::Target;
    node.public_url()
}
