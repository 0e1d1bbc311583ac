//! Canary figures on the Docker target, in the same run and under the same
//! load: a canary of three steps with zero pause against blue-green (what
//! the steps and their analysis cost), and a canary with errors: the time
//! from the failing evaluation to the stable release serving alone. A real
//! Prometheus (Debian `prometheus`) scrapes the balancer's exporter.
use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use serde::Serialize;

use crate::{
    deploy::{self, DeployReport, Source},
    environment::{self, AnalysisConfig, CanaryConfig, Strategy},
    load::Load,
    prometheus::Prometheus,
    setup,
    targets::{docker::DockerTarget, Target},
};

#[derive(Debug, Serialize)]
pub struct CanaryFigures {
    /// Zero-pause canary, steps 10/50/100: start to all traffic on it.
    pub canary_traffic_moved_seconds: Option<f64>,
    pub blue_green_traffic_moved_seconds: Option<f64>,
    /// Failing evaluation to the stable release alone.
    pub abort_seconds: Option<f64>,
    pub aborted: bool,
    pub failed_requests: u64,
    pub requests_ok: u64,
}

async fn prometheus(exporter: u16) -> Result<Prometheus> {
    setup::ensure(&[setup::Tool {
        program: "prometheus",
        package: "prometheus",
    }])?;
    Prometheus::start(exporter).await
}

/// `[canary]` for the bench: zero pause, judged on the balancer being up (a
/// query that always has data, so a zero-pause canary passes on evidence);
/// or one second per step, judged on the canary's error ratio.
fn canary_config(prometheus: &str, on_errors: bool) -> CanaryConfig {
    let (pause, query, max, min) = if on_errors {
        (
            1.0,
            r#"sum(rate(haproxy_server_http_responses_total{proxy="app",server=~"{{canary}}",code="5xx"}[2s])) / sum(rate(haproxy_server_http_responses_total{proxy="app",server=~"{{canary}}"}[2s]))"#,
            Some(0.05),
            None,
        )
    } else {
        (0.0, r#"min(up{job="balancer"})"#, None, Some(1.0))
    };
    CanaryConfig {
        steps: vec![10, 50, 100],
        pause_seconds: pause,
        prometheus_url: prometheus.to_owned(),
        query_timeout_ms: 2000,
        analysis: vec![AnalysisConfig {
            name: if on_errors {
                "error-ratio"
            } else {
                "balancer-up"
            }
            .into(),
            query: query.into(),
            max,
            min,
            dry_run: false,
        }],
    }
}

async fn deploy_with(
    target: &DockerTarget,
    env: &environment::Environment,
    image: &str,
    vars: &[(&str, &str)],
    strategy: Strategy,
) -> Result<DeployReport> {
    deploy::run(
        target,
        env,
        Source::Image {
            image: image.to_owned(),
            overrides: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        &deploy::Options {
            strategy: Some(strategy),
            quiet: true,
            command: "bench".into(),
            ..Default::default()
        },
    )
    .await
}

pub async fn run(v1: &str, v2: &str) -> Result<CanaryFigures> {
    let mut env = super::throwaway_env("dev", "bench-canary")?;
    let exporter = super::free_port()?;
    if let Some(b) = env.file.balancer.as_mut() {
        b.metrics_port = Some(exporter);
    }
    env.file.app.debug_knobs = true;
    let target = DockerTarget::connect(&env).await?;
    let figures = async {
        let first = deploy_with(&target, &env, v1, &[], Strategy::BlueGreen).await?;
        anyhow::ensure!(
            first.succeeded,
            "the first deploy failed: {:?}",
            first.release.reason
        );
        let prometheus = prometheus(exporter).await?;
        let load = Load::start(
            target.public_client()?,
            format!("{}/version", target.public_url()),
            4,
        );
        while load.ok_so_far() < 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        env.file.canary = Some(canary_config(&prometheus.url, false));
        let canary = deploy_with(&target, &env, v2, &[], Strategy::Canary).await?;
        let blue_green = deploy_with(&target, &env, v1, &[], Strategy::BlueGreen).await?;
        env.file.canary = Some(canary_config(&prometheus.url, true));
        let failing = deploy_with(
            &target,
            &env,
            v2,
            &[("APP_DEBUG_ROUTES", "true"), ("APP_ERROR_RATE", "0.5")],
            Strategy::Canary,
        )
        .await?;
        let stats = load.stop().await;
        anyhow::ensure!(
            canary.succeeded,
            "the zero-pause canary failed: {:?}",
            canary.release.reason
        );
        Ok(CanaryFigures {
            canary_traffic_moved_seconds: canary.traffic_moved_seconds,
            blue_green_traffic_moved_seconds: blue_green.traffic_moved_seconds,
            abort_seconds: failing.rollback_seconds,
            aborted: !failing.succeeded,
            failed_requests: stats.failed,
            requests_ok: stats.ok,
        })
    }
    .await;
    let _ = target.destroy().await;
    figures
}
