//! `watch`: the active release watched after its deploy (a bake period),
//! and rolled back by itself when it fails then. The verification window
//! ends when the deploy does; a release that crashes under real traffic
//! ten minutes later would otherwise stay active until a person noticed.
//! The conditions are `gate::watch` (pure); this is the loop and the
//! rollback, through the one deploy frame.
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::json;

use super::releases::{connect, load_env, print_report, EnvArg};
use crate::{
    deploy::{self, lock::LockStore, records::HistoryStore, Source},
    gate::{self, watch::Watch},
    progress::Step,
    report,
    targets::Target,
};

#[derive(clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// How long to watch the active release, in seconds (1 to 86400)
    #[arg(long = "for", value_name = "SECONDS", default_value_t = 300)]
    pub seconds: u64,
    /// Only report a failure: leave the release serving (default: roll back
    /// to the previous good release, as `rollback` does)
    #[arg(long)]
    pub no_rollback: bool,
    #[arg(long)]
    pub json: bool,
}

pub async fn watch_command(args: WatchArgs) -> Result<ExitCode> {
    if !(1..=86_400).contains(&args.seconds) {
        bail!(
            "--for {}: watch for 1 to 86400 seconds (e.g. --for 600 after a production deploy)",
            args.seconds
        );
    }
    let env = load_env(&args.env)?;
    let target = connect(&env, &args.env).await?;
    let history = target.read_history().await?;
    let Some(active) = history.active().cloned() else {
        bail!("{}: nothing is deployed, so nothing to watch", env.name);
    };
    if let Some((_, lock)) = target.lock_read().await? {
        bail!(
            "{}: a run holds the lock ({}); watch after it ends (its own gate and verification watch its release)",
            env.name,
            lock.describe()
        );
    }
    let step = Step::start(&format!("watching {}", active.id), args.json);
    let watched = watch(&target, &env, &active.id, args.seconds, &step).await?;
    step.finish(match &watched.verdict {
        Verdict::Failed(_) => "FAILED",
        other => other.name(),
    });
    let summary = json!({
        "environment": env.name,
        "release": active.id,
        "seconds": watched.started.elapsed().as_secs_f64(),
        "rounds": watched.rounds,
        "verdict": watched.verdict.name(),
        "reason": watched.verdict.reason(),
    });
    let Verdict::Failed(reason) = &watched.verdict else {
        if args.json {
            report::print_json(&summary);
        } else {
            eprintln!(
                "{}: {} {} after {} rounds over {:.0}s{}",
                env.name,
                active.id,
                watched.verdict.name(),
                watched.rounds,
                watched.started.elapsed().as_secs_f64(),
                watched
                    .verdict
                    .reason()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let message = format!("{} failed after verification: {reason}", active.id);
    report::error(&message);
    if args.no_rollback {
        if args.json {
            report::print_json(&summary);
        } else {
            eprintln!("{message}; --no-rollback: it keeps serving");
        }
        return Ok(ExitCode::FAILURE);
    }
    if !args.json {
        eprintln!("{message}; rolling back to the previous good release");
    }
    let options = deploy::Options {
        quiet: args.json,
        command: "watch (rollback)".into(),
        cause: Some(reason.clone()),
        ..Default::default()
    };
    let rolled = deploy::run(&target, &env, Source::Restore { to: None }, &options).await?;
    if args.json {
        let mut out = summary;
        out["rollback"] = serde_json::to_value(&rolled).expect("serialisable report");
        out["rollback"]["release"] =
            serde_json::to_value(rolled.release.redacted()).expect("serialisable release");
        report::print_json(&out);
    } else {
        print_report(&rolled, false);
    }
    // The watched release failed whether or not the rollback worked: the
    // job must go red either way.
    Ok(ExitCode::FAILURE)
}

enum Verdict {
    /// Watched for the whole time without a failure.
    Held,
    Failed(String),
    /// Stopped early without a verdict (another run began, a signal).
    Ended(String),
}

impl Verdict {
    fn name(&self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Failed(_) => "failed",
            Verdict::Ended(_) => "ended",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Held => None,
            Verdict::Failed(r) | Verdict::Ended(r) => Some(r),
        }
    }
}

struct Watched {
    verdict: Verdict,
    rounds: u32,
    started: Instant,
}

/// Another run's lock or a new active release ends the watch: that run
/// gates its own release. Looked at every few rounds (a history read is an
/// engine call), so a deploy that begins is noticed within seconds.
const RECHECK: Duration = Duration::from_secs(3);

async fn watch(
    target: &impl Target,
    env: &crate::environment::Environment,
    release: &str,
    seconds: u64,
    step: &Step,
) -> Result<Watched> {
    let health = &env.file.health;
    let urls: Vec<String> = target
        .public_urls()
        .into_iter()
        .filter(|u| !u.is_empty())
        .flat_map(|u| gate::round_urls(&u, health))
        .collect();
    let client = target.public_client()?;
    let mut tally = Watch::new(
        release,
        &target.instances().await?,
        health.failure_threshold,
    );
    if urls.is_empty() && tally.following() == 0 {
        bail!(
            "{}: {release} has no public URL and no running instance to watch",
            env.name
        );
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut checked = started;
    let mut rounds = 0;
    let stop = deploy::interrupted();
    tokio::pin!(stop);
    let verdict = loop {
        let probes = gate::probe_round(&client, &urls, health.timeout()).await;
        rounds += 1;
        if let Some(reason) = tally.take(&probes, &target.instances().await?) {
            break Verdict::Failed(reason);
        }
        if checked.elapsed() >= RECHECK {
            checked = Instant::now();
            if let Some(ended) = superseded(target, release).await? {
                break Verdict::Ended(ended);
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        step.line(&format!(
            "{release}: {rounds} rounds ok, {}s left",
            left.as_secs()
        ));
        if left.is_zero() {
            break Verdict::Held;
        }
        tokio::select! {
            _ = tokio::time::sleep(health.interval().min(left)) => {}
            signal = &mut stop => break Verdict::Ended(format!("stopped by {signal}")),
        }
    };
    Ok(Watched {
        verdict,
        rounds,
        started,
    })
}

/// Why the watch of `release` should end now, if it should.
async fn superseded(target: &impl Target, release: &str) -> Result<Option<String>> {
    if let Some((_, lock)) = target.lock_read().await? {
        return Ok(Some(format!("a run took the lock ({})", lock.describe())));
    }
    let history = target.read_history().await?;
    Ok(match history.active() {
        Some(active) if active.id == release => None,
        Some(active) => Some(format!("{} is active now", active.id)),
        None => Some("no release is active any more".into()),
    })
}
