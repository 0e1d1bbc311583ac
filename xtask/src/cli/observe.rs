//! status and health: what runs now, and whether it answers. The same for
//! every target: the trait says what instances there are and probes them.
use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use serde_json::json;

use super::releases::{connect, load_env, EnvJsonArgs};
use crate::{
    deploy::{self, lock::LockStore, records::HistoryStore},
    environment, gate, report,
    targets::Target,
};

pub async fn status(args: EnvJsonArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let target = connect(&env, &args.env).await?;
    let recovered = deploy::recover_if_abandoned(&target, &env, args.json).await?;
    let history = target.read_history().await?;
    let lock = target.lock_read().await?.map(|(_, info)| info);
    let instances = target.instances().await?;
    let active = history.active();
    let diagnosis = super::diagnose::traffic(&env.name, active, &instances);
    let out = json!({
        "environment": env.name,
        "kind": env.file.target.kind(),
        "public_url": target.public_url(),
        "active_release": active.map(|r| r.redacted()),
        "in_progress": history.in_progress().map(|r| r.id.clone()),
        // The newest release, active or not: a failed canary's measurements.
        "latest_release": history.releases.last().map(|r| r.redacted()),
        "instances": instances,
        "lock": lock,
        "recovered_abandoned_run": recovered,
        "diagnosis": diagnosis,
    });
    if args.json {
        report::print_json(&out);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{}: {}",
        env.name,
        active
            .map(|r| format!(
                "release {} ({}) deployed {} by {}",
                r.id,
                r.image,
                r.finished_at.as_deref().unwrap_or("?"),
                r.by
            ))
            .unwrap_or_else(|| "nothing deployed".into())
    );
    eprintln!("public url: {}", target.public_url());
    match &lock {
        Some(info) => eprintln!("lock: held by {}", info.describe()),
        None => eprintln!("lock: free"),
    }
    if let Some(diagnosis) = &diagnosis {
        eprintln!("warning: {diagnosis}");
    }
    if recovered {
        eprintln!(
            "an abandoned run was cleaned up (see `cargo xtask history -e {}`)",
            env.name
        );
    }
    let mut table = report::Table::new(
        "instances",
        &["instance", "release", "colour", "state", "traffic"],
    );
    for i in &instances {
        table.row(vec![
            i.name.clone(),
            i.release.clone(),
            i.colour.clone(),
            serde_json::to_value(&i.state)
                .ok()
                .and_then(|v| v["state"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            i.traffic.map_or("-".into(), |t| format!("{t:.0}%")),
        ]);
    }
    table.emit();
    if let Some(latest) = history.releases.last() {
        super::releases::print_analysis(latest);
    }
    Ok(ExitCode::SUCCESS)
}

/// health-check.sh, typed: the public URL and every instance that takes traffic, on the three health paths.
pub async fn health_command(args: EnvJsonArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let timeout = env.file.health.timeout().max(Duration::from_secs(2));
    let target = connect(&env, &args.env).await?;
    let mut results = public_probes(&target, timeout).await;
    for path in ["/health", "/ready", "/health/detailed"] {
        results.extend(target.probes(path, timeout).await?);
    }
    let history = target.read_history().await?;
    let instances = target.instances().await?;
    let diagnosis = super::diagnose::traffic(&env.name, history.active(), &instances);
    report_health(&env, &results, diagnosis.as_deref(), args.json)
}

/// The public URL on the three health paths, through the balancer's client.
async fn public_probes(
    target: &impl Target,
    timeout: Duration,
) -> Vec<(String, gate::ProbeResult)> {
    let public_url = target.public_url();
    if public_url.is_empty() {
        return vec![];
    }
    let client = target.public_client();
    let mut results = Vec::new();
    for path in ["/health", "/ready", "/health/detailed"] {
        let url = format!("{public_url}{path}");
        let result = match &client {
            Ok(client) => gate::probe(client, &url, timeout).await,
            Err(e) => gate::ProbeResult {
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
    results: &[(String, gate::ProbeResult)],
    diagnosis: Option<&str>,
    as_json: bool,
) -> Result<ExitCode> {
    let healthy = diagnosis.is_none() && !results.is_empty() && results.iter().all(|(_, r)| r.ok());
    if as_json {
        let rows: Vec<_> = results
            .iter()
            .map(|(who, r)| json!({ "target": who, "probe": r, "ok": r.ok() }))
            .collect();
        report::print_json(
            &json!({ "environment": env.name, "healthy": healthy, "probes": rows, "diagnosis": diagnosis }),
        );
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
    if let Some(diagnosis) = diagnosis {
        if !as_json {
            eprintln!("{diagnosis}");
        }
        report::error(diagnosis);
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
