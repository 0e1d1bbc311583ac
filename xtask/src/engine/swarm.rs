//! Swarm mode on the project's engine, for the swarm target's tests and
//! benchmarks: a single-node swarm that listens on loopback only, and that
//! `engine stop` leaves again. A swarm someone else made is never left.
use anyhow::{Context, Result};
use bollard::{
    models::{LocalNodeState, SwarmInitRequest},
    query_parameters::LeaveSwarmOptionsBuilder,
    Docker,
};

/// Marks the swarm as ours: `leave` only undoes what `ensure_single_node` did.
const OWNER_LABEL: &str = "xtask.swarm";

async fn node_state(docker: &Docker) -> Result<LocalNodeState> {
    let info = docker
        .info()
        .await
        .context("asking the engine for its swarm state")?;
    Ok(info
        .swarm
        .and_then(|s| s.local_node_state)
        .unwrap_or(LocalNodeState::EMPTY))
}

/// Makes the engine a single-node swarm manager unless it already is one.
pub async fn ensure_single_node(docker: &Docker) -> Result<()> {
    if node_state(docker).await? == LocalNodeState::ACTIVE {
        return Ok(());
    }
    // The default listen address is 0.0.0.0:2377; a test swarm must not be joinable from outside.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("picking a loopback port for the swarm's control plane")?
        .port();
    let request = SwarmInitRequest {
        listen_addr: Some(format!("127.0.0.1:{port}")),
        advertise_addr: Some("127.0.0.1".into()),
        spec: Some(bollard::models::SwarmSpec {
            labels: Some([(OWNER_LABEL.to_owned(), "1".to_owned())].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .init_swarm(request)
        .await
        .context("docker swarm init --advertise-addr 127.0.0.1")?;
    Ok(())
}

/// Leaves the swarm `ensure_single_node` made (services and all) and removes
/// the gateway bridge swarm mode leaves behind. Returns whether it left.
pub async fn leave_if_ours(docker: &Docker) -> Result<bool> {
    if node_state(docker).await? != LocalNodeState::ACTIVE {
        return Ok(false);
    }
    let ours = docker
        .inspect_swarm()
        .await
        .ok()
        .and_then(|s| s.spec)
        .and_then(|s| s.labels)
        .is_some_and(|l| l.contains_key(OWNER_LABEL));
    if !ours {
        return Ok(false);
    }
    docker
        .leave_swarm(Some(
            LeaveSwarmOptionsBuilder::default().force(true).build(),
        ))
        .await
        .context("docker swarm leave --force")?;
    let _ = docker.remove_network("docker_gwbridge").await;
    Ok(true)
}
