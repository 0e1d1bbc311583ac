//! The Kubernetes target: the overlay's objects applied with server-side
//! apply, the Deployment's own rolling update doing the rollout, a Lease as
//! the deploy lock and a ConfigMap holding the release history. Kubernetes
//! replaces pods and routes the Service itself, so this target does not
//! implement the slot-based `Target` trait: `kube_deploy` drives it instead.
pub mod blue_green;
pub mod history;
pub mod lease;
pub mod manifests;
pub mod rollout;

use std::sync::Mutex;

use anyhow::{Context, Result};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

use crate::environment::{Environment, KubeSettings};

pub struct KubeTarget {
    pub client: Client,
    pub settings: KubeSettings,
    /// `<deployment>-<env>`: prefixes the lock Lease and the history ConfigMap.
    pub prefix: String,
    /// The history ConfigMap's resourceVersion as last read or written: a
    /// write with an older one is refused by the API server (optimistic concurrency).
    history_version: Mutex<Option<String>>,
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
        })
    }

    pub fn public_url(&self) -> String {
        self.settings.public_url.clone().unwrap_or_default()
    }
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}
