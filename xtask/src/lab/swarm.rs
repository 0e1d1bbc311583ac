//! `lab up --swarm`: host 1 initialises a swarm on its lab address, the
//! others join it as workers. Every control-plane address is a lab address,
//! so the swarm is reachable from the machine and from nowhere else.
use anyhow::{Context, Result};
use bollard::{
    models::{LocalNodeState, SwarmInitRequest, SwarmJoinRequest},
    Docker,
};

use super::{Host, SwarmMember};
use crate::engine;

async fn connect(host: &Host) -> Result<Docker> {
    engine::connect(&host.docker_host())
        .await
        .with_context(|| format!("lab host {}", host.name))
}

/// This host's place in a swarm, if it is in one.
pub async fn member(host: &Host) -> Result<Option<SwarmMember>> {
    let info = connect(host)
        .await?
        .info()
        .await
        .with_context(|| format!("docker info on lab host {}", host.name))?;
    let Some(swarm) = info.swarm else {
        return Ok(None);
    };
    if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
        return Ok(None);
    }
    Ok(Some(SwarmMember {
        role: if swarm.control_available == Some(true) {
            "manager"
        } else {
            "worker"
        }
        .to_owned(),
        node_id: swarm.node_id.unwrap_or_default(),
    }))
}

/// Makes host 1 the manager and joins the rest; hosts already in the swarm
/// are left as they are (so a repeated `up` is harmless).
pub async fn form(hosts: &mut [Host]) -> Result<()> {
    let Some((first, rest)) = hosts.split_first_mut() else {
        return Ok(());
    };
    let manager = connect(first).await?;
    let control = format!("{}:2377", first.address);
    if member(first).await?.is_none() {
        manager
            .init_swarm(SwarmInitRequest {
                listen_addr: Some(control.clone()),
                advertise_addr: Some(first.address.to_string()),
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!(
                    "docker swarm init --advertise-addr {} --listen-addr {control} on lab host {}",
                    first.address, first.name
                )
            })?;
    }
    first.swarm = member(first).await?;
    let token = manager
        .inspect_swarm()
        .await
        .with_context(|| format!("docker swarm inspect on lab host {}", first.name))?
        .join_tokens
        .and_then(|t| t.worker)
        .context("the lab swarm has no worker join token")?;
    for host in rest {
        if member(host).await?.is_none() {
            connect(host)
                .await?
                .join_swarm(SwarmJoinRequest {
                    listen_addr: Some(format!("{}:2377", host.address)),
                    advertise_addr: Some(host.address.to_string()),
                    remote_addrs: Some(vec![control.clone()]),
                    join_token: Some(token.clone()),
                    ..Default::default()
                })
                .await
                .with_context(|| {
                    format!("docker swarm join {control} from lab host {}", host.name)
                })?;
        }
        host.swarm = member(host).await?;
    }
    Ok(())
}

/// The manager's view: (hostname, node id, role, state, availability) per node.
pub async fn nodes(manager: &Host) -> Result<Vec<[String; 5]>> {
    let nodes = connect(manager)
        .await?
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .with_context(|| format!("docker node ls on lab host {}", manager.name))?;
    Ok(nodes
        .into_iter()
        .map(|n| {
            let spec = n.spec.unwrap_or_default();
            let status = n.status.unwrap_or_default();
            [
                n.description.and_then(|d| d.hostname).unwrap_or_default(),
                n.id.unwrap_or_default(),
                spec.role.map(|r| r.to_string()).unwrap_or_default(),
                status.state.map(|s| s.to_string()).unwrap_or_default(),
                spec.availability.map(|a| a.to_string()).unwrap_or_default(),
            ]
        })
        .collect())
}
