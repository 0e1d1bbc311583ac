//! status and health: what runs now, and whether it answers.
use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::json;

use super::releases::{
    connect, connect_kube, connect_swarm, is_kube, is_swarm, load_env, EnvJsonArgs,
};
use crate::{
    deploy,
    deploy::lock::{self, LockStore},
    environment, gate as health, report,
    targets::Target,
};

/// A stale lock or an in-progress release with no live deployer means an
/// earlier run died: finish its cleanup before reporting.
async fn recover_if_abandoned(
    target: &impl Target,
    env: &environment::Environment,
    quiet: bool,
) -> Result<bool> {
    let mut history = target.read_history().await?;
    if !lock::abandoned(target, &history).await? {
        return Ok(false);
    }
    lock::while_held(target, env, "status (recovery)", async |_| {
        deploy::recover(target, env, &mut history, quiet).await
    })
    .await
    .map(|_| true)
}

pub async fn status(args: EnvJsonArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    if is_kube(&env) {
        let target = connect_kube(&env, &args.env).await?;
        return kube_status(&target, &env, args.json).await;
    }
    if is_swarm(&env) {
        let target = connect_swarm(&env).await?;
        return super::swarm_observe::status(&target, &env, args.json).await;
    }
    let target = connect(&env).await?;
    let recovered = recover_if_abandoned(&target, &env, args.json).await?;
    let history = target.read_history().await?;
    let lock = target.lock_read().await?.map(|(_, info)| info);
    let routes = target.routes().await?;
    let client = reqwest::Client::new();
    let mut instances = Vec::new();
    for instance in target.instances().await? {
        let state = target.instance_state(&instance).await?;
        let slot = routes
            .iter()
            .position(|r| r.as_deref() == Some(instance.name.as_str()));
        let ready = if instance.probe_url.is_empty() {
            None
        } else {
            Some(
                health::probe(
                    &client,
                    &format!("{}/ready", instance.probe_url),
                    Duration::from_secs(2),
                )
                .await,
            )
        };
        instances
            .push(json!({ "instance": instance, "state": state, "slot": slot, "ready": ready }));
    }
    let active = history.active();
    let out = json!({
        "environment": env.name,
        "public_url": target.public_url(),
        "active_release": active.map(|r| r.redacted()),
        "instances": instances,
        "slots": routes,
        "lock": lock,
        "recovered_abandoned_run": recovered,
    });
    if args.json {
        report::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    let release = active.map(|r| {
        format!(
            "release {} ({}, {}) deployed {} by {}",
            r.id,
            r.image,
            short(&r.image_id),
            r.finished_at.as_deref().unwrap_or("?"),
            r.by
        )
    });
    let where_ = format!("public url: {}", target.public_url());
    print_status_header(&env.name, release, &where_, lock.as_ref(), recovered);
    let mut table = report::Table::new(
        "instances",
        &["instance", "release", "colour", "slot", "state", "/ready"],
    );
    for i in &instances {
        let ready = match i["ready"].as_object() {
            Some(r) => format!(
                "{} {}ms",
                r["status"].as_u64().map_or_else(
                    || r["error"].as_str().unwrap_or("-").to_owned(),
                    |s| s.to_string()
                ),
                r["latency_ms"]
            ),
            None => "-".into(),
        };
        table.row(vec![
            i["instance"]["name"].as_str().unwrap_or_default().into(),
            i["instance"]["release"].as_str().unwrap_or_default().into(),
            i["instance"]["color"].as_str().unwrap_or_default().into(),
            i["slot"].as_u64().map_or("-".into(), |s| s.to_string()),
            i["state"]["state"].as_str().unwrap_or_default().into(),
            ready,
        ]);
    }
    table.emit();
    Ok(ExitCode::SUCCESS)
}

/// Kubernetes: the active release from the history, the Deployment's
/// rollout as the controller reports it, and the lock. The cluster's own
/// readiness probes gate the pods, so no probe is sent from here.
async fn kube_status(
    target: &crate::targets::kubernetes::KubeTarget,
    env: &environment::Environment,
    json_out: bool,
) -> Result<ExitCode> {
    let history = target.read_history().await?;
    let lock = target.lock_read().await?.map(|(_, info)| info);
    // Blue-green: the Deployment of the colour the Service routes to.
    let colour = target.live_colour().await?;
    let serving = match &colour {
        Some(c) => target.colour_deployment(c),
        None => target.settings.deployment.clone(),
    };
    let rollout = target.rollout_summary(&serving).await?;
    let active = history.active();
    if json_out {
        report::print_json(&json!({
            "environment": env.name,
            "public_url": target.public_url(),
            "active_release": active.map(|r| r.redacted()),
            "in_progress": history.in_progress().map(|r| r.id.clone()),
            "deployment": rollout,
            "live_colour": colour,
            "lock": lock,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let release = active.map(|r| {
        format!(
            "release {} ({}) deployed {} by {}",
            r.id,
            r.image,
            r.finished_at.as_deref().unwrap_or("?"),
            r.by
        )
    });
    let where_ = format!("deployment: {rollout}");
    print_status_header(&env.name, release, &where_, lock.as_ref(), false);
    Ok(ExitCode::SUCCESS)
}

/// The lines above every target's status table: what is deployed, where,
/// who holds the lock, and whether an abandoned run was just cleaned up.
pub(super) fn print_status_header(
    env: &str,
    release: Option<String>,
    where_: &str,
    lock: Option<&crate::deploy::lock::LockInfo>,
    recovered: bool,
) {
    eprintln!(
        "{env}: {}",
        release.as_deref().unwrap_or("nothing deployed")
    );
    eprintln!("{where_}");
    match lock {
        Some(info) => eprintln!("lock: held by {}", info.describe()),
        None => eprintln!("lock: free"),
    }
    if recovered {
        eprintln!("an abandoned run was cleaned up (see `cargo xtask history -e {env}`)");
    }
}

fn short(id: &str) -> &str {
    let hex = id.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// health-check.sh, typed: the public URL and every routed instance, on the three health paths.
pub async fn health_command(args: EnvJsonArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let timeout = env.file.health.timeout().max(Duration::from_secs(2));
    let results = if is_swarm(&env) {
        let target = connect_swarm(&env).await?;
        super::swarm_observe::health_probes(&target, timeout).await?
    } else {
        docker_probes(&env, timeout).await?
    };
    report_health(&env, &results, args.json)
}

async fn docker_probes(
    env: &environment::Environment,
    timeout: Duration,
) -> Result<Vec<(String, health::ProbeResult)>> {
    let target = connect(env).await?;
    let direct = reqwest::Client::new();
    let routes = target.routes().await?;
    let mut results = public_probes(target.public_client(), &target.public_url(), timeout).await;
    for instance in target.instances().await? {
        if !routes.contains(&Some(instance.name.clone())) || instance.probe_url.is_empty() {
            continue;
        }
        for path in ["/health", "/ready", "/health/detailed"] {
            results.push((
                instance.name.clone(),
                health::probe(&direct, &format!("{}{path}", instance.probe_url), timeout).await,
            ));
        }
    }
    Ok(results)
}

/// The public URL on the three health paths, through the balancer's client.
pub(super) async fn public_probes(
    client: Result<reqwest::Client>,
    public_url: &str,
    timeout: Duration,
) -> Vec<(String, health::ProbeResult)> {
    let mut results = Vec::new();
    for path in ["/health", "/ready", "/health/detailed"] {
        let url = format!("{public_url}{path}");
        let result = match &client {
            Ok(client) => health::probe(client, &url, timeout).await,
            Err(e) => health::ProbeResult {
                url,
                status: None,
                latency_ms: 0.0,
                error: Some(format!("{e:#}")),
            },
        };
        results.push(("public".to_owned(), result));
    }
    results
}

fn report_health(
    env: &environment::Environment,
    results: &[(String, health::ProbeResult)],
    as_json: bool,
) -> Result<ExitCode> {
    let healthy = !results.is_empty() && results.iter().all(|(_, r)| r.ok());
    if as_json {
        let rows: Vec<_> = results
            .iter()
            .map(|(who, r)| json!({ "target": who, "probe": r, "ok": r.ok() }))
            .collect();
        report::print_json(&json!({ "environment": env.name, "healthy": healthy, "probes": rows }));
    } else {
        let mut table = report::Table::new(
            &format!("health of {}", env.name),
            &["target", "url", "result", "latency"],
        );
        for (who, r) in results {
            table.row(vec![
                who.clone(),
                r.url.clone(),
                if r.ok() {
                    r.describe()
                } else {
                    format!("FAIL {}", r.describe())
                },
                format!("{:.1}ms", r.latency_ms),
            ]);
        }
        table.emit();
    }
    if !healthy {
        report::error(&format!("{} is unhealthy", env.name));
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
