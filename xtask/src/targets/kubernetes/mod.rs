//! The Kubernetes target: the overlay's objects applied with server-side
//! apply, the Deployment's own rolling update doing the rollout (a native
//! rollout: see `release`), a Lease as the deploy lock and a ConfigMap
//! holding the release history.
pub mod autoscaling;
pub mod blue_green;
pub mod digest;
pub mod history;
pub mod kustomize;
pub mod lease;
pub mod manifests;
mod release;
mod repair;
pub mod rollout;

use std::{sync::Mutex, time::Duration};

use anyhow::{Context, Result};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

use crate::{
    deploy::release::Release,
    environment::{Environment, KubeSettings},
    gate::{Gate, ProbeResult},
    progress::Step,
    targets::{Caps, InstanceState, InstanceView, Observation, Split, Target},
};

pub struct KubeTarget {
    pub client: Client,
    pub settings: KubeSettings,
    /// `<deployment>-<env>`: prefixes the lock Lease and the history ConfigMap.
    pub prefix: String,
    /// The history ConfigMap's resourceVersion as last read or written: a
    /// write with an older one is refused by the API server (optimistic concurrency).
    history_version: Mutex<Option<String>>,
    /// What this process rendered and did in the current run, for `undo`.
    run: Mutex<Option<release::KubeRun>>,
    /// How long a rollout may take (health.deadline_seconds).
    deadline: Duration,
}

/// What `--context` or the environment file's `target.context` selects.
fn options(settings: &KubeSettings, context: Option<&str>) -> KubeConfigOptions {
    KubeConfigOptions {
        context: context
            .map(str::to_owned)
            .or_else(|| settings.context.clone()),
        ..Default::default()
    }
}

impl KubeTarget {
    /// From the kubeconfig (KUBECONFIG or ~/.kube/config) and its context;
    /// without a kubeconfig, and with no context asked for, in-cluster
    /// config as kube-rs infers it.
    pub async fn connect(env: &Environment, context: Option<&str>) -> Result<KubeTarget> {
        let settings = env.kube()?;
        let opts = options(&settings, context);
        let config = match Config::from_kubeconfig(&opts).await {
            Ok(config) => config,
            Err(e) if opts.context.is_some() => {
                return Err(e).with_context(|| {
                    format!(
                        "{}: kubeconfig context {:?} (target.context or --context) cannot be loaded; check `kubectl config get-contexts`",
                        env.path.display(),
                        opts.context.as_deref().unwrap_or_default()
                    )
                })
            }
            Err(_) => Config::infer().await.with_context(|| {
                format!(
                    "{}: no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster; point KUBECONFIG at one",
                    env.path.display()
                )
            })?,
        };
        Self::with_config(env, config)
    }

    /// From a kubeconfig file, as a test or a runner with its own file uses it.
    pub async fn from_kubeconfig_file(
        env: &Environment,
        path: &std::path::Path,
        context: Option<&str>,
    ) -> Result<KubeTarget> {
        let settings = env.kube()?;
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &options(&settings, context))
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?;
        Self::with_config(env, config)
    }

    pub fn with_config(env: &Environment, config: Config) -> Result<KubeTarget> {
        let settings = env.kube()?;
        let client = Client::try_from(config).context("creating the Kubernetes client")?;
        Ok(KubeTarget {
            prefix: format!("{}-{}", settings.deployment, env.name),
            client,
            settings,
            history_version: Mutex::new(None),
            run: Mutex::new(None),
            deadline: env.file.health.deadline(),
        })
    }
}

impl Target for KubeTarget {
    fn caps(&self) -> Caps {
        Caps {
            native_rollout: true,
        }
    }

    fn public_url(&self) -> String {
        self.settings.public_url.clone().unwrap_or_default()
    }

    fn public_client(&self) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .build()
            .context("building the public client")
    }

    /// A new image has no id yet: the digest the nodes pull is recorded after
    /// its rollout (`image_ran`). A rollback keeps the digest its release
    /// recorded, so the pod spec pins it; anything but a digest reference
    /// (a hand-edited record) is dropped for the tag. With an autoscaler, the
    /// release runs (and is recorded with) the count it chose.
    async fn admit(&self, release: &mut Release) -> Result<()> {
        if digest::digest_reference(&release.image_id).is_none() {
            release.image_id.clear();
        }
        self.autoscaled_replicas(release).await
    }

    async fn prepare(&self, release: &Release) -> Result<()> {
        self.prepare_release(release).await
    }

    async fn start(&self, _release: &Release, _count: usize) -> Result<()> {
        self.apply_beside().await
    }

    async fn replace(&self, _release: &Release) -> Result<()> {
        self.apply_all().await
    }

    async fn observe(&self, release: &Release) -> Result<Observation> {
        self.observe_rollout(release).await
    }

    /// The digest every pod of the release pulled, as the kubelet reports it.
    async fn image_ran(&self, release: &Release) -> Result<Option<String>> {
        self.pulled_digest(&release.id).await
    }

    async fn follow(&self, _release: &Release, _ready: &[String]) -> Result<()> {
        Ok(())
    }

    async fn shift(&self, split: &Split) -> Result<()> {
        self.switch(split).await
    }

    async fn split(&self) -> Result<Split> {
        Ok(Split::default())
    }

    /// What this process did in the run is reversed; with nothing done here
    /// (a run that died in another process), the cluster is repaired to `to`.
    async fn undo(&self, to: Option<&Release>, gate: &Gate<'_>, step: &Step) -> Result<()> {
        let run = self.run.lock().expect("run state").take();
        match run {
            Some(run) => self.undo_run(run).await,
            None => self.repair_to(to, gate, step).await,
        }
    }

    async fn retire(&self, _release: &str, _keep: usize) -> Result<()> {
        self.retire_old().await
    }

    /// Events and log lines of the release's pods that are not ready.
    async fn logs(&self, release: &Release, _instance: Option<&str>, lines: usize) -> String {
        self.diagnostics(&release.id, lines as i64)
            .await
            .unwrap_or_else(|e| format!("(no pod details: {e:#})"))
    }

    /// The Deployment that serves (the live colour's, on blue-green), as its controller reports it.
    async fn instances(&self) -> Result<Vec<InstanceView>> {
        let colour = self.live_colour().await?;
        let serving = match &colour {
            Some(c) => self.colour_deployment(c),
            None => self.settings.deployment.clone(),
        };
        let summary = self.rollout_summary(&serving).await?;
        Ok(vec![InstanceView {
            id: serving,
            name: summary,
            release: String::new(),
            colour: colour.unwrap_or_default(),
            state: InstanceState::Running { restarts: 0 },
            traffic: None,
        }])
    }

    /// The cluster's own readiness probes gate the pods: none are sent from here.
    async fn probes(&self, _path: &str, _timeout: Duration) -> Result<Vec<(String, ProbeResult)>> {
        Ok(vec![])
    }

    async fn repair(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }

    async fn stop_all(&self) -> Result<()> {
        anyhow::bail!(
            "down is not done on Kubernetes targets: scale Deployment {} in namespace {} with kubectl",
            self.settings.deployment,
            self.settings.namespace
        )
    }

    /// The kubelet collects unused images on each node by itself.
    async fn prune(
        &self,
        _kept: &[Release],
        _dry_run: bool,
    ) -> Result<Option<crate::targets::docker::Pruned>> {
        Ok(None)
    }

    /// What `--dry-run` prints: the variables redacted here, whoever calls,
    /// and the count the deploy would run: the HPA's, read as `admit` reads it
    /// (reads only), not the file's.
    async fn plan(&self, release: &Release) -> Result<serde_json::Value> {
        let mut shown = release.redacted();
        self.autoscaled_replicas(&mut shown).await?;
        Ok(
            serde_json::json!({ "kind": "kubernetes", "replicas": shown.replicas,
            "objects": manifests::render(self, &shown)? }),
        )
    }
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
