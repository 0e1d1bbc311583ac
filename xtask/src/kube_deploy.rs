//! deploy and rollback on Kubernetes. Same shape as `deploy::run` (lock,
//! record, roll out, gate, activate or roll back and record the failure,
//! unlock) but a separate function: there the engine starts instances and
//! moves balancer slots itself, here the Deployment controller replaces pods
//! and the Service routes to them, so the steps in between have nothing in common.
use std::time::Instant;

use anyhow::{bail, Result};

use crate::{
    deploy::lock,
    deploy::release::{self, History, Release},
    deploy::{DeployReport, Options, Source},
    environment::{Environment, Strategy},
    gate as health,
    progress::Step,
    targets::kubernetes::{blue_green, KubeTarget},
};
use serde_json::Value;

pub async fn run(
    target: &KubeTarget,
    env: &Environment,
    source: Source,
    options: &Options,
) -> Result<DeployReport> {
    lock::while_held(target, env, &options.command, async |_| {
        locked(target, env, source, options).await
    })
    .await
}

async fn locked(
    target: &KubeTarget,
    env: &Environment,
    source: Source,
    options: &Options,
) -> Result<DeployReport> {
    let mut history = target.read_history().await?;
    // A run that died mid-rollout: the cluster keeps whatever it applied (the
    // Deployment controller finishes or stalls on its own), and this run's
    // apply supersedes it. Only the record needs closing.
    if let Some(id) = history.close_interrupted() {
        eprintln!("{id} was left in progress by an interrupted run: recorded it failed");
    }
    let release = new_release(env, &history, source, options)?;
    let id = history.begin(release);
    target.write_history(&history).await?;
    let release = history.get(&id).expect("just recorded").clone();
    // Render before touching the cluster: a broken overlay fails the release without a change.
    let objects = match crate::targets::kubernetes::manifests::render(target, &release) {
        Ok(objects) => objects,
        Err(e) => {
            history.fail(&id, &format!("{e:#}"), &release::now());
            target.write_history(&history).await?;
            return Err(e);
        }
    };
    let deployment = objects
        .iter()
        .find(|o| {
            o["kind"] == "Deployment"
                && o["metadata"]["name"] == target.settings.deployment.as_str()
        })
        .expect("render checked the Deployment is there")
        .clone();
    // Rolling undoes to the revision before this run; blue-green switches back to the live colour.
    let before = match release.strategy {
        Strategy::Rolling => target.revision().await?,
        Strategy::BlueGreen => None,
    };
    let live = match release.strategy {
        Strategy::Rolling => None,
        Strategy::BlueGreen => target.live_colour().await?,
    };
    let colour = blue_green::other(live.as_deref().unwrap_or("green"));
    let started = Instant::now();
    let step = crate::deploy::announce(
        &release,
        &format!(", {} replicas", release.replicas),
        options.quiet,
    );

    let mut rolled_out = None;
    let mut switched = false;
    // Ctrl-C or a CI cancel mid-rollout is a failure like any other: undone and recorded.
    let outcome: Result<(), String> = tokio::select! {
        outcome = async {
            match release.strategy {
                Strategy::Rolling => rolling(target, &objects, env, started, &mut rolled_out).await,
                Strategy::BlueGreen => {
                    let colours = (live.as_deref(), colour);
                    blue_green(target, &objects, env, colours, started, &mut rolled_out, &mut switched).await
                }
            }
        } => outcome,
        signal = crate::deploy::interrupted() => Err(format!("interrupted by {signal}")),
    };

    let run = crate::deploy::Run {
        env,
        release: release.clone(),
        started,
        public_url: target.public_url(),
    };
    match outcome {
        Ok(()) => {
            step.finish("done");
            if release.strategy == Strategy::BlueGreen {
                // After verification only: until here the old colour could take traffic back at once.
                // The overlay's own Deployment goes too, left from rolling deploys before.
                let old = live.iter().map(|c| target.colour_deployment(c));
                for name in old.chain([target.settings.deployment.clone()]) {
                    if let Err(e) = target.scale(&name, 0).await {
                        eprintln!("warning: {e:#}; scale it down by hand");
                    }
                }
            }
            let report = run.succeeded(&mut history, rolled_out);
            target.write_history(&history).await?;
            Ok(report)
        }
        Err(reason) => {
            step.finish("FAILED");
            eprintln!("{id} failed: {reason}; rolling back");
            let failed_at = Instant::now();
            let logs = target
                .diagnostics(&id, 20)
                .await
                .unwrap_or_else(|e| format!("(no pod details: {e:#})"));
            let undo_step = Step::start("automatic rollback", options.quiet);
            let undone = match release.strategy {
                Strategy::Rolling => undo(target, before.as_deref(), &deployment, env).await,
                Strategy::BlueGreen => {
                    switch_back(target, &objects, live.as_deref(), colour, switched).await
                }
            };
            undo_step.finish(if undone.is_ok() { "done" } else { "FAILED" });
            let logs = (!logs.is_empty()).then_some(logs);
            let rollback_seconds = Some(failed_at.elapsed().as_secs_f64());
            let report = run.failed(
                &mut history,
                &reason,
                &undone,
                rolled_out,
                rollback_seconds,
                logs,
            );
            target.write_history(&history).await?;
            Ok(report)
        }
    }
}

async fn rolling(
    target: &KubeTarget,
    objects: &[Value],
    env: &Environment,
    started: Instant,
    rolled_out: &mut Option<f64>,
) -> Result<(), String> {
    let h = &env.file.health;
    for object in objects {
        target.apply(object).await.map_err(|e| format!("{e:#}"))?;
    }
    let name = &target.settings.deployment;
    target.wait_rollout(name, h.deadline()).await?;
    *rolled_out = Some(started.elapsed().as_secs_f64());
    public_gate(target, env).await
}

/// The new colour beside the live one (the preview Service reaches it), then
/// the Service and the autoscaler switched to it, then the public gate.
async fn blue_green(
    target: &KubeTarget,
    objects: &[Value],
    env: &Environment,
    (live, colour): (Option<&str>, &str),
    started: Instant,
    rolled_out: &mut Option<f64>,
    switched: &mut bool,
) -> Result<(), String> {
    let h = &env.file.health;
    let s = &target.settings;
    let text = |e: anyhow::Error| format!("{e:#}");
    let moves = blue_green::switch_objects(objects, s, colour).map_err(text)?;
    let staged = blue_green::coloured(objects, s, colour, live.unwrap_or(colour)).map_err(text)?;
    // With no live colour yet, the Service keeps its earlier selector until the switch.
    let staged = staged
        .iter()
        .filter(|o| live.is_some() || !moves.iter().any(|m| same(m, o)));
    for object in staged {
        target.apply(object).await.map_err(text)?;
    }
    let name = target.colour_deployment(colour);
    target.wait_rollout(&name, h.deadline()).await?;
    *switched = true;
    for object in &moves {
        target.apply(object).await.map_err(text)?;
    }
    *rolled_out = Some(started.elapsed().as_secs_f64());
    public_gate(target, env).await
}

fn same(a: &Value, b: &Value) -> bool {
    a["kind"] == b["kind"] && a["metadata"]["name"] == b["metadata"]["name"]
}

/// Traffic back to the live colour (or to the overlay's own selector when
/// there was none), then the failed colour scaled to 0.
async fn switch_back(
    target: &KubeTarget,
    objects: &[Value],
    live: Option<&str>,
    colour: &str,
    switched: bool,
) -> Result<()> {
    let s = &target.settings;
    if switched {
        let back = match live {
            Some(old) => blue_green::switch_objects(objects, s, old)?,
            None => {
                let moved = blue_green::switch_objects(objects, s, colour)?;
                objects
                    .iter()
                    .filter(|o| moved.iter().any(|m| same(m, o)))
                    .cloned()
                    .collect()
            }
        };
        for object in &back {
            target.apply(object).await?;
        }
    }
    target.scale(&target.colour_deployment(colour), 0).await
}

async fn public_gate(target: &KubeTarget, env: &Environment) -> Result<(), String> {
    match &target.settings.public_url {
        Some(url) => {
            let url = format!("{}{}", url.trim_end_matches('/'), env.file.health.path);
            http_gate(&url, env).await
        }
        None => Ok(()),
    }
}

/// Back to the revision that served before this run, and wait for it.
async fn undo(
    target: &KubeTarget,
    before: Option<&str>,
    deployment: &serde_json::Value,
    env: &Environment,
) -> Result<()> {
    let Some(before) = before else {
        bail!(
            "this was the first revision of Deployment {}: there is none to go back to",
            target.settings.deployment
        );
    };
    if target.revision().await?.as_deref() == Some(before) {
        // The apply never made a new revision (it failed before the Deployment): nothing to undo.
        return Ok(());
    }
    target.undo_to(before, deployment).await?;
    let h = &env.file.health;
    target
        .wait_rollout(&target.settings.deployment, h.deadline())
        .await
        .map_err(|reason| anyhow::anyhow!("revision {before} did not come back: {reason}"))
}

/// The public URL must answer 2xx `success_threshold` times in a row;
/// `failure_threshold` failures in a row, or the deadline, fail it.
async fn http_gate(url: &str, env: &Environment) -> Result<(), String> {
    let h = &env.file.health;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    loop {
        let result = health::probe(&client, url, h.timeout()).await;
        if result.ok() {
            ok += 1;
            failed = 0;
            if ok >= h.success_threshold {
                return Ok(());
            }
        } else {
            ok = 0;
            failed += 1;
            if failed >= h.failure_threshold {
                return Err(format!(
                    "HTTP gate: {url} failed {failed} times in a row ({})",
                    result.describe()
                ));
            }
        }
        if started.elapsed() >= h.deadline() {
            return Err(format!(
                "HTTP gate: {url} not healthy within {}s ({})",
                h.deadline_seconds,
                result.describe()
            ));
        }
        tokio::time::sleep(h.interval()).await;
    }
}

/// The cluster pulls by reference (its digest is only known to the nodes),
/// and secrets stay in the overlay's Secret, which validation enforces.
fn new_release(
    env: &Environment,
    history: &History,
    source: Source,
    options: &Options,
) -> Result<Release> {
    let mut release = crate::deploy::draft_release(env, history, source, options)?;
    release.image_id.clear();
    Ok(release)
}
