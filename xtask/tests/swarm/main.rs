//! The swarm target on the real engine in swarm mode (single node,
//! `swarm init --advertise-addr 127.0.0.1`), the real registry and the real
//! HAProxy balancer container on the environment's overlay network, with keep-alive load sent only to 127.0.0.1: rolling and
//! blue-green deploys and both kinds of rollback without a failed request.
// One file per concern: traffic through deploys and rollbacks, failed
// releases, and the operations around them (rollback, lock, route).
mod canary;
mod failures;
mod operations;
mod pinning;
#[path = "../support/mod.rs"]
mod support;
mod traffic;

use support::deploy_env::{outcome_of, TestEnv};
use xtask::{
    load::Load,
    targets::{
        swarm::{service::release_of, SwarmTarget},
        Target,
    },
};

/// One swarm test at a time, both releases built, swarm mode on, a fresh environment.
pub async fn setup(
    label: &str,
    strategy: &str,
    swarm_toml: &str,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    String,
    String,
    TestEnv,
) {
    let serial = support::SERIAL.lock().await;
    let docker = support::swarm().await;
    let v1 = support::built_image(&docker).await.tags[0].clone();
    let v2 = support::second_image(&docker).await;
    (serial, v1, v2, TestEnv::swarm(label, strategy, swarm_toml))
}

pub async fn load_against(env: &TestEnv) -> Load {
    env.load(env.swarm_target().await.public_client().unwrap())
        .await
}

/// The tasks swarm wants running, as (service, release, routed) triples, sorted.
pub async fn running(target: &SwarmTarget) -> Vec<(String, String, bool)> {
    let routed = target.routed().await.unwrap();
    let mut out = vec![];
    for colour in ["blue", "green"] {
        let name = target.service_name(colour);
        if target.inspect_service(&name).await.unwrap().is_none() {
            continue;
        }
        for task in target.tasks(&name).await.unwrap() {
            if task.wanted() {
                let in_traffic = routed.contains(&task.id);
                out.push((colour.to_owned(), task.release, in_traffic));
            }
        }
    }
    out.sort();
    out
}

pub fn all(colour: &str, release: &str) -> Vec<(String, String, bool)> {
    vec![(colour.to_owned(), release.to_owned(), true); 3]
}

/// SIGKILLs the container of swarm task `task_id`: a crash no xtask sees.
pub async fn kill_task(docker: &bollard::Docker, task_id: &str) -> bool {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("com.docker.swarm.task.id={task_id}")],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await.unwrap();
    let Some(id) = containers.into_iter().find_map(|c| c.id) else {
        return false;
    };
    docker
        .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
        .await
        .unwrap();
    true
}
