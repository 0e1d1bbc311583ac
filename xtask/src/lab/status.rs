//! `lab status`: each host with its address, whether its dockerd and sshd
//! are alive (by recorded pid) and answer, and its swarm role and node id.
use serde::Serialize;

use super::{swarm, Lab, SwarmMember};
use crate::engine;

#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    pub netns: String,
    pub docker_host: String,
    pub ssh_docker_host: String,
    pub dockerd_pid: Option<u32>,
    pub dockerd_alive: bool,
    /// The engine answered `_ping` on its socket.
    pub docker_answers: bool,
    pub sshd_pid: Option<u32>,
    pub sshd_alive: bool,
    pub swarm: Option<SwarmMember>,
}

#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub up: bool,
    pub prefix: String,
    pub subnet: String,
    pub bridge: String,
    pub bridge_address: String,
    pub complete: bool,
    pub registry: Option<String>,
    pub registry_alive: bool,
    pub ssh_config: String,
    pub hosts: Vec<HostStatus>,
    /// The manager's node list: hostname, id, role, state, availability.
    pub swarm_nodes: Vec<[String; 5]>,
}

fn alive(p: &Option<crate::engine::ManagedProcess>) -> bool {
    p.as_ref().is_some_and(|p| p.is_running())
}

/// Every recorded daemon is running and every engine answers.
pub async fn all_alive(lab: &Lab) -> bool {
    if !lab
        .registry
        .as_ref()
        .is_some_and(|r| r.process.is_running())
    {
        return false;
    }
    for host in &lab.hosts {
        if !alive(&host.dockerd)
            || !alive(&host.sshd)
            || !engine::answers(&host.docker_host()).await
        {
            return false;
        }
    }
    true
}

pub async fn status(lab: &Lab) -> LabStatus {
    let mut hosts = Vec::new();
    for host in &lab.hosts {
        let dockerd_alive = alive(&host.dockerd);
        let docker_answers = dockerd_alive && engine::answers(&host.docker_host()).await;
        // The live role, not the recorded one: a node may have left or been promoted.
        let swarm = if docker_answers {
            swarm::member(host).await.ok().flatten()
        } else {
            None
        };
        hosts.push(HostStatus {
            name: host.name.clone(),
            address: host.address.to_string(),
            netns: host.netns.clone(),
            docker_host: host.docker_host(),
            ssh_docker_host: host.ssh_docker_host(),
            dockerd_pid: host.dockerd.as_ref().map(|p| p.pid),
            dockerd_alive,
            docker_answers,
            sshd_pid: host.sshd.as_ref().map(|p| p.pid),
            sshd_alive: alive(&host.sshd),
            swarm,
        });
    }
    let manager = lab
        .hosts
        .iter()
        .zip(&hosts)
        .find(|(_, s)| s.swarm.as_ref().is_some_and(|m| m.role == "manager"));
    let swarm_nodes = match manager {
        Some((host, _)) => swarm::nodes(host).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let registry_alive = lab
        .registry
        .as_ref()
        .is_some_and(|r| r.process.is_running());
    let up =
        lab.complete && registry_alive && hosts.iter().all(|h| h.docker_answers && h.sshd_alive);
    LabStatus {
        up,
        prefix: lab.prefix.clone(),
        subnet: lab.subnet.clone(),
        bridge: lab.bridge.clone(),
        bridge_address: lab.bridge_address.to_string(),
        complete: lab.complete,
        registry: lab.registry.as_ref().map(|r| r.address.clone()),
        registry_alive,
        ssh_config: lab.ssh.config.display().to_string(),
        hosts,
        swarm_nodes,
    }
}
