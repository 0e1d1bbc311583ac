//! status and health on a swarm target: the services of both colours, their
//! tasks with the slot each one holds, and probes through each task's socket.
use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::json;

use crate::{
    deploy::lock::LockStore,
    environment::Environment,
    gate as health, report,
    targets::swarm::{
        service::{release_of, replicas_of, update_state},
        SwarmTarget, COLOURS,
    },
};

pub async fn status(target: &SwarmTarget, env: &Environment, as_json: bool) -> Result<ExitCode> {
    let recovered = crate::swarm_deploy::recover_if_abandoned(target, env, as_json).await?;
    let history = target.read_history().await?;
    let lock = target.lock_read().await?.map(|(_, info)| info);
    let routes = target.routes();
    let mut services = vec![];
    let mut tasks = vec![];
    for colour in COLOURS {
        let name = target.service_name(colour);
        let Some(service) = target.inspect_service(&name).await? else {
            continue;
        };
        let (state, message) = update_state(&service);
        services.push(json!({
            "service": name, "colour": colour, "release": release_of(&service),
            "replicas": replicas_of(&service),
            "update": state.map(|s| s.to_string()), "update_message": message,
        }));
        for task in target.tasks(&name).await? {
            if !task.wanted() && !task.running() {
                continue;
            }
            let slot = routes
                .iter()
                .position(|r| r.as_deref() == Some(task.id.as_str()));
            let ready = target
                .probe_task(&task, "/ready", Duration::from_secs(2))
                .await;
            tasks.push(json!({ "task": task, "slot": slot, "ready": ready }));
        }
    }
    let active = history.active();
    let out = json!({
        "environment": env.name,
        "public_url": target.public_url(),
        "active_release": active.map(|r| r.redacted()),
        "services": services,
        "tasks": tasks,
        "slots": routes,
        "lock": lock,
        "recovered_abandoned_run": recovered,
    });
    if as_json {
        report::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    let release = active.map(|r| format!("release {} ({}) on swarm", r.id, r.image));
    let where_ = format!("public url: {}", target.public_url());
    super::observe::print_status_header(&env.name, release, &where_, lock.as_ref(), recovered);
    let mut table = report::Table::new("services", &["service", "release", "replicas", "update"]);
    for s in &services {
        table.row(vec![
            s["service"].as_str().unwrap_or_default().into(),
            s["release"].as_str().unwrap_or("-").into(),
            s["replicas"].to_string(),
            s["update"].as_str().unwrap_or("-").into(),
        ]);
    }
    table.emit();
    let mut table = report::Table::new("tasks", &["task", "release", "state", "slot", "/ready"]);
    for t in &tasks {
        table.row(vec![
            t["task"]["name"].as_str().unwrap_or_default().into(),
            t["task"]["release"].as_str().unwrap_or_default().into(),
            format!(
                "{} (wanted: {})",
                t["task"]["state"].as_str().unwrap_or_default(),
                t["task"]["desired"].as_str().unwrap_or_default()
            ),
            t["slot"].as_u64().map_or("-".into(), |s| s.to_string()),
            t["ready"]["status"].as_u64().map_or_else(
                || t["ready"]["error"].as_str().unwrap_or("-").to_owned(),
                |s| s.to_string(),
            ),
        ]);
    }
    table.emit();
    Ok(ExitCode::SUCCESS)
}

/// The public URL and the task behind every slot, on the three health paths.
pub async fn health_probes(
    target: &SwarmTarget,
    timeout: Duration,
) -> Result<Vec<(String, health::ProbeResult)>> {
    let mut results =
        super::observe::public_probes(target.public_client(), &target.public_url(), timeout).await;
    // Every slot, by the task it points at: a slot left on a task swarm
    // replaced while no xtask ran shows up here as "no socket".
    let mut names = std::collections::HashMap::new();
    for colour in COLOURS {
        for task in target.tasks(&target.service_name(colour)).await? {
            names.insert(task.id.clone(), task.name.clone());
        }
    }
    for (slot, task) in target.routes().into_iter().enumerate() {
        let Some(task) = task else { continue };
        let who = format!("slot {slot}: {}", names.get(&task).unwrap_or(&task));
        for path in ["/health", "/ready", "/health/detailed"] {
            results.push((who.clone(), target.probe_socket(&task, path, timeout).await));
        }
    }
    Ok(results)
}
