//! deploy, rollback and history, and the environment arguments they share.
use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    deploy::{self, records::HistoryStore, release, DeployReport, Source},
    environment::{self, Environment, Strategy, TargetKind},
    image, report,
    targets::{self, AnyTarget, Target},
};

#[derive(Args, Clone)]
pub struct EnvArg {
    /// Environment: a name in infrastructure/environments/, or a path to a .toml file
    #[arg(
        short = 'e',
        long = "env-file",
        visible_alias = "environment",
        default_value = "dev",
        value_name = "ENV"
    )]
    pub environment: String,
    /// Kubernetes targets: the kubeconfig context to use (overrides target.context)
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
}

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// Image to deploy (default: the image built from the current tree, built if missing)
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// KEY=VALUE app variable for this release, or KEY to take its value from this
    /// environment (kept out of the command line); kept in the release record, so
    /// rollback restores it
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    pub vars: Vec<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// Release id to restore (default: the previous good release)
    #[arg(long)]
    pub to: Option<String>,
    /// When it needs an older schema: revert the newer migrations first, in the active release's image
    #[arg(long, conflicts_with = "restore")]
    pub migrate_down: bool,
    /// When it needs an older schema: restore this backup first (`cargo xtask backup list`)
    #[arg(long, value_name = "BACKUP")]
    pub restore: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EnvJsonArgs {
    #[command(flatten)]
    pub env: EnvArg,
    #[arg(long)]
    pub json: bool,
}

/// The environment's target, whatever its kind; `--context` applies to Kubernetes.
pub async fn connect(env: &Environment, arg: &EnvArg) -> Result<AnyTarget> {
    targets::connect(env, arg.context.as_deref()).await
}

/// Loads the environment; `--context` on a docker one is a mistake worth naming.
pub fn load_env(arg: &EnvArg) -> Result<Environment> {
    let env = environment::load(&arg.environment)?;
    if arg.context.is_some() && env.file.target.kind() != TargetKind::Kubernetes {
        bail!(
            "--context: {} is not a kubernetes target (target.kind in {}); drop the flag",
            env.name,
            env.path.display()
        );
    }
    Ok(env)
}

fn parse_vars(vars: &[String]) -> Result<BTreeMap<String, String>> {
    vars.iter()
        .map(|kv| parse_var(kv, |name| std::env::var(name).ok()))
        .collect()
}

/// `KEY=VALUE`, or `KEY` alone for the value this process has in its
/// environment (as `docker run -e KEY` does): the value then never appears
/// in the command line other users of the machine can read with `ps`.
fn parse_var(kv: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(String, String)> {
    let (k, v) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("--env {k}…: a variable name is letters, digits and _ (KEY=VALUE, or KEY to take its value from this environment)");
    }
    let v = match v {
        Some(v) => v,
        None => lookup(k).with_context(|| {
            format!(
                "--env {k}: {k} is not set in this environment; set it, or pass --env {k}=VALUE"
            )
        })?,
    };
    Ok((k.to_owned(), v))
}

/// The image from this tree, built into the target's engine when it does
/// not have it yet. A cluster pulls it itself: CI built and pushed it.
pub(super) async fn current_image(
    target: &AnyTarget,
    env: &Environment,
    quiet: bool,
) -> Result<String> {
    let reference = format!(
        "{}:{}",
        env.file.image.repo,
        image::revision::current()?.tag()
    );
    let Some(docker) = target.docker() else {
        return Ok(reference);
    };
    if docker.inspect_image(&reference).await.is_err() {
        eprintln!("{reference} is not built yet: building it");
        let request = image::BuildRequest {
            repo: env.file.image.repo.clone(),
            extra_tags: vec![],
            quiet,
            ..Default::default()
        };
        image::build(docker, &request).await?;
    }
    Ok(reference)
}

pub async fn deploy_command(args: DeployArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let overrides = parse_vars(&args.vars)?;
    // Before any engine or cluster is reached: a refusal needs neither.
    deploy::sensitive::refuse(&env, &overrides)?;
    let target = connect(&env, &args.env).await?;
    let image = match args.image {
        Some(image) => image,
        None => current_image(&target, &env, args.json).await?,
    };
    let options = deploy::Options {
        strategy: args.strategy,
        quiet: args.json,
        command: "deploy".into(),
        ..Default::default()
    };
    let source = Source::Image { image, overrides };
    if args.dry_run {
        return dry_run(&target, &env, source, &options, args.json).await;
    }
    let report = deploy::run(&target, &env, source, &options).await?;
    Ok(print_report(&report, args.json))
}

pub async fn rollback_command(args: RollbackArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let options = deploy::Options {
        strategy: None,
        quiet: args.json,
        command: "rollback".into(),
        migrate_down: args.migrate_down,
        restore: args.restore.clone(),
        cause: None,
    };
    let target = connect(&env, &args.env).await?;
    let report = deploy::run(&target, &env, Source::Restore { to: args.to }, &options).await?;
    Ok(print_report(&report, args.json))
}

/// The release a deploy would record and what the target would apply for
/// it; nothing changes. Values pass through `redact`.
async fn dry_run(
    target: &AnyTarget,
    env: &Environment,
    source: Source,
    options: &deploy::Options,
    json: bool,
) -> Result<ExitCode> {
    let history = target.read_history().await?;
    let mut planned = deploy::draft_release(env, &history, source, options)?.redacted();
    planned.id = history.begin_preview(&planned.image).id;
    let active = history
        .active()
        .map(|r| format!("{} ({})", r.id, r.image))
        .unwrap_or_else(|| "nothing".into());
    let applied = target.plan(&planned).await?;
    let plan = serde_json::json!({
        "environment": env.name,
        "file": env.path,
        "release": planned,
        "replaces": active,
        "public_url": target.public_url(),
        "health_gate": env.file.health,
        "target": applied,
    });
    if json {
        report::print_json(&plan);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = report::Table::new(
        &format!("plan for {} (dry run: nothing changed)", env.name),
        &["", ""],
    );
    table.row(vec!["release".into(), planned.id.clone()]);
    table.row(vec!["image".into(), planned.image.clone()]);
    table.row(vec!["replaces".into(), active]);
    table.row(vec![
        "strategy".into(),
        format!(
            "{:?} x{} (surge {})",
            planned.strategy,
            // What the target would run: an autoscaler's count on Kubernetes.
            plan["target"]["replicas"]
                .as_u64()
                .unwrap_or(planned.replicas as u64),
            env.file.deploy.surge
        ),
    ]);
    let h = &env.file.health;
    table.row(vec![
        "gate".into(),
        format!(
            "{} every {}ms, {} ok / {} failed, deadline {}s",
            h.path, h.interval_ms, h.success_threshold, h.failure_threshold, h.deadline_seconds
        ),
    ]);
    table.row(vec!["public url".into(), target.public_url()]);
    table.emit();
    Ok(ExitCode::SUCCESS)
}

/// A canary's measurements, one row each: what was asked, what came back,
/// the limit and the verdict (the full query is in `--json`).
pub fn print_analysis(release: &release::Release) {
    if release.analysis.is_empty() {
        return;
    }
    let mut table = report::Table::new(
        &format!("canary analysis of {}", release.id),
        &["step", "query", "value", "limit", "verdict"],
    );
    for m in &release.analysis {
        let verdict = format!(
            "{:?}{}{}",
            m.verdict,
            m.note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            if m.dry_run { " [dry run]" } else { "" }
        )
        .to_lowercase();
        table.row(vec![
            format!("{} %", m.step),
            m.name.clone(),
            m.value
                .map_or_else(|| "-".into(), crate::gate::analysis::shown),
            m.limit.clone(),
            verdict,
        ]);
    }
    table.emit();
}

/// A release's hook runs, one row each (the output is in `--json` and,
/// for a failed one, printed as the failure's log).
pub fn print_hooks(release: &release::Release) {
    if release.hooks.is_empty() {
        return;
    }
    let mut table = report::Table::new(
        &format!("hooks of {}", release.id),
        &["hook", "command", "outcome", "seconds"],
    );
    for run in &release.hooks {
        table.row(vec![
            run.hook.as_str().to_owned(),
            run.command.join(" "),
            match run.exit_code {
                Some(code) if code != 0 => format!("{} (exit {code})", run.outcome),
                _ => run.outcome.clone(),
            },
            format!("{:.1}", run.seconds),
        ]);
    }
    table.emit();
}

pub fn print_report(report: &DeployReport, json: bool) -> ExitCode {
    if json {
        let mut shown = serde_json::to_value(report).expect("serialisable report");
        shown["release"] =
            serde_json::to_value(report.release.redacted()).expect("serialisable release");
        report::print_json(&shown);
    } else {
        let mut table = report::Table::new(
            &format!("{} on {}", report.release.id, report.environment),
            &["", ""],
        );
        table.row(vec!["release".into(), report.release.id.clone()]);
        table.row(vec!["image".into(), report.release.image.clone()]);
        table.row(vec!["strategy".into(), format!("{:?}", report.strategy)]);
        table.row(vec!["duration".into(), format!("{:.1}s", report.seconds)]);
        if let Some(moved) = report.traffic_moved_seconds {
            table.row(vec![
                "traffic moved".into(),
                format!("after {moved:.1}s (then verified)"),
            ]);
        }
        table.row(vec![
            "outcome".into(),
            report.release.outcome.as_str().into(),
        ]);
        if let Some(reason) = &report.release.reason {
            table.row(vec!["reason".into(), reason.clone()]);
        }
        if let Some(seconds) = report.rollback_seconds {
            table.row(vec![
                "rolled back in".into(),
                format!("{seconds:.1}s after the first failed probe"),
            ]);
        }
        table.row(vec!["url".into(), report.public_url.clone()]);
        table.emit();
        print_hooks(&report.release);
        print_analysis(&report.release);
        if let Some(logs) = &report.failure_logs {
            eprintln!(
                "\nlast lines of the failing instance's (or hook's) output:\n{}",
                logs.trim_end()
            );
        }
    }
    if report.succeeded {
        ExitCode::SUCCESS
    } else {
        report::error(&format!(
            "{} failed and was rolled back: {}",
            report.release.id,
            report.release.reason.as_deref().unwrap_or("")
        ));
        ExitCode::FAILURE
    }
}

pub async fn history_command(args: EnvJsonArgs) -> Result<ExitCode> {
    let env = load_env(&args.env)?;
    let history = connect(&env, &args.env).await?.read_history().await?;
    if args.json {
        report::print_json(
            &history
                .releases
                .iter()
                .map(release::Release::redacted)
                .collect::<Vec<_>>(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = report::Table::new(
        &format!("releases of {}", env.name),
        &["release", "image", "started", "by", "outcome", "reason"],
    );
    for r in history.releases.iter().rev() {
        let outcome = match &r.restores {
            Some(to) => format!("{} (restores {to})", r.outcome.as_str()),
            None => r.outcome.as_str().to_owned(),
        };
        table.row(vec![
            r.id.clone(),
            r.image.clone(),
            r.started_at.clone(),
            r.by.clone(),
            outcome,
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    table.emit();
    for r in history.releases.iter().rev() {
        print_hooks(r);
        print_analysis(r);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_var;

    #[test]
    fn an_env_flag_is_a_pair_or_a_name_whose_value_comes_from_the_environment() {
        let lookup = |name: &str| (name == "GREETING").then(|| "hello=world".to_owned());
        assert_eq!(
            parse_var("A=b=c", lookup).unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(
            parse_var("EMPTY=", lookup).unwrap(),
            ("EMPTY".into(), String::new())
        );
        assert_eq!(
            parse_var("GREETING", lookup).unwrap(),
            ("GREETING".into(), "hello=world".into())
        );
        let unset = parse_var("MISSING", lookup).unwrap_err().to_string();
        assert_eq!(
            unset,
            "--env MISSING: MISSING is not set in this environment; set it, or pass --env MISSING=VALUE"
        );
        let bad = parse_var("A-B=1", lookup).unwrap_err().to_string();
        assert!(
            bad.starts_with("--env A-B…: a variable name is letters, digits and _"),
            "{bad}"
        );
    }
}
