//! deploy on the targets whose orchestrator replaces the instances itself
//! (swarm, Kubernetes): the image is a reference the nodes pull, and
//! `--dry-run` prints what would be applied.
use std::{collections::BTreeMap, process::ExitCode};

use anyhow::Result;

use super::releases::{connect_kube, connect_swarm, current_image, print_report, DeployArgs};
use crate::{
    deploy::{self, Source},
    environment::{Environment, Strategy},
    image, kube_deploy, report, swarm_deploy,
};

/// Swarm deploy: the image from `--image` or this tree (built into the
/// manager's engine when missing; other nodes pull it from its registry).
pub(super) async fn deploy_swarm(
    args: DeployArgs,
    env: Environment,
    overrides: BTreeMap<String, String>,
) -> Result<ExitCode> {
    let target = connect_swarm(&env).await?;
    let image = match args.image {
        Some(image) => image,
        None => current_image(target.docker(), &env, args.json).await?,
    };
    let options = deploy::Options {
        strategy: args.strategy,
        quiet: args.json,
        command: "deploy".into(),
    };
    if args.dry_run {
        let history = target.read_history().await?;
        let mut planned =
            deploy::draft_release(&env, &history, Source::Image { image, overrides }, &options)?
                .redacted();
        planned.id = history.begin_preview(&planned.image).id;
        let secrets = planned
            .secrets
            .keys()
            .map(|name| bollard::models::TaskSpecContainerSpecSecrets {
                secret_name: Some(format!(
                    "{}-{}-{}",
                    target.scope(),
                    planned.id,
                    name.to_lowercase()
                )),
                file: Some(bollard::models::TaskSpecContainerSpecFile {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let live = swarm_deploy::live_colour(&target, &history).await?;
        let colour = match (planned.strategy, live) {
            (Strategy::Rolling, Some(c)) => c,
            (Strategy::BlueGreen, Some("blue")) => "green",
            _ => "blue",
        };
        let spec = target.spec(colour, &planned, &planned.env, secrets, planned.replicas);
        report::print_json(
            &serde_json::json!({ "environment": env.name, "live_colour": live, "service": spec }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report =
        swarm_deploy::run(&target, &env, Source::Image { image, overrides }, &options).await?;
    Ok(print_report(&report, args.json))
}

/// Kubernetes deploy: the cluster pulls the image itself, so it is never built
/// here; the default is this tree's tag, which CI built and pushed (or `kind load`ed).
pub(super) async fn deploy_kube(
    args: DeployArgs,
    env: Environment,
    overrides: BTreeMap<String, String>,
) -> Result<ExitCode> {
    let image = match args.image {
        Some(image) => image,
        None => format!(
            "{}:{}",
            env.file.image.repo,
            image::revision::current()?.tag()
        ),
    };
    let target = connect_kube(&env, &args.env).await?;
    if args.dry_run {
        let mut planned = target.read_history().await?.begin_preview(&image);
        planned.env = env.file.app.env.clone();
        planned.env.extend(overrides);
        planned.replicas = env.file.deploy.replicas;
        let objects = crate::targets::kubernetes::manifests::render(&target, &planned)?;
        report::print_json(&objects);
        return Ok(ExitCode::SUCCESS);
    }
    let options = deploy::Options {
        strategy: args.strategy,
        quiet: args.json,
        command: "deploy".into(),
    };
    let report =
        kube_deploy::run(&target, &env, Source::Image { image, overrides }, &options).await?;
    Ok(print_report(&report, args.json))
}
