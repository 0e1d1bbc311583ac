//! The swarm service of one colour: its spec (built from a release), and
//! create, update, scale, server-side rollback and removal, each with the
//! registry auth the nodes need to pull. Secrets become Docker secrets,
//! mounted as files; only their file paths are in the environment.
use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::{
    models::{
        EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig,
        SecretSpec, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
        ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
        ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
        ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
        ServiceUpdateStatusStateEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
        TaskSpecContainerSpecSecrets, TaskSpecResources, TaskSpecRestartPolicy,
        TaskSpecRestartPolicyConditionEnum,
    },
    query_parameters::{ListSecretsOptionsBuilder, UpdateServiceOptionsBuilder},
};

use super::SwarmTarget;
use crate::{deploy::release::Release, targets::docker::labels};

const NS: f64 = 1e9;

fn ns(seconds: f64) -> i64 {
    (seconds * NS) as i64
}

/// Status codes that mean "not there".
fn missing(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

pub fn release_of(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .labels
        .as_ref()?
        .get(labels::RELEASE)
        .cloned()
}

pub fn replicas_of(service: &Service) -> i64 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
}

/// Swarm's own view of the last update: its state and message.
pub fn update_state(service: &Service) -> (Option<ServiceUpdateStatusStateEnum>, String) {
    let status = service.update_status.clone().unwrap_or_default();
    (status.state, status.message.unwrap_or_default())
}

impl SwarmTarget {
    pub async fn inspect_service(&self, name: &str) -> Result<Option<Service>> {
        match self.docker.inspect_service(name, None).await {
            Ok(service) => Ok(Some(service)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting service {name}")),
        }
    }

    /// The service that runs `release` in `colour`: update and rollback
    /// policies are swarm's, start-first both ways (a stop-first rollback
    /// drops capacity: moby#34111, moby#43081).
    pub fn spec(
        &self,
        colour: &str,
        release: &Release,
        vars: &BTreeMap<String, String>,
        secrets: Vec<TaskSpecContainerSpecSecrets>,
        replicas: usize,
    ) -> ServiceSpec {
        let s = &self.settings;
        let mut env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for secret in &secrets {
            let name = secret
                .file
                .as_ref()
                .and_then(|f| f.name.clone())
                .unwrap_or_default();
            env.push(format!("{name}_FILE=/run/secrets/{name}"));
        }
        // The balancer reaches each task at its overlay address on this port.
        if !vars.contains_key("PORT") {
            env.push(format!("PORT={}", self.app_port));
        }
        env.push(format!("DRAIN_SECONDS={}", self.drain_seconds));
        let labels = HashMap::from([
            (labels::SCOPE.to_owned(), self.scope.clone()),
            (labels::ROLE.to_owned(), "service".to_owned()),
            (labels::ENV.to_owned(), self.env_name.clone()),
            (labels::RELEASE.to_owned(), release.id.clone()),
            (labels::COLOR.to_owned(), colour.to_owned()),
        ]);
        let interval = s.healthcheck_interval_ms as f64 / 1000.0;
        let monitor = ns(s.monitor_seconds);
        ServiceSpec {
            name: Some(self.service_name(colour)),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    // Pinned: a task swarm starts later runs the same image.
                    image: Some(release.runnable_image().to_owned()),
                    labels: Some(labels),
                    env: Some(env),
                    stop_grace_period: Some(ns(self.drain_seconds + 10.0)),
                    // The image's HEALTHCHECK command, run often enough that an update does not crawl.
                    health_check: Some(HealthConfig {
                        test: None,
                        interval: Some(ns(interval)),
                        timeout: Some(ns(interval.max(1.0))),
                        retries: Some(3),
                        start_period: None,
                        start_interval: None,
                    }),
                    secrets: (!secrets.is_empty()).then_some(secrets),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: s.cpus.map(ns),
                        memory_bytes: s.memory_mb.map(|m| (m * 1024 * 1024) as i64),
                        pids: None,
                    }),
                    ..Default::default()
                }),
                // No placement constraint: swarm spreads the tasks over its
                // nodes; the overlay carries the balancer's traffic to them.
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(self.network.clone()),
                    ..Default::default()
                }]),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(ns(1.0)),
                    max_attempts: None,
                    window: None,
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas as i64),
                }),
                ..Default::default()
            }),
            // DNS round-robin: no virtual IP, which needs IPVS; the balancer
            // addresses each task anyway.
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: Some(ns(s.update_delay_seconds)),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(monitor),
                max_failure_ratio: Some(0.0),
                order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            }),
            rollback_config: Some(ServiceSpecRollbackConfig {
                // All at once: the previous release is known good and the way back should be short.
                parallelism: Some(0),
                delay: Some(0),
                failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
                monitor: Some(monitor),
                max_failure_ratio: Some(0.0),
                order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
            }),
            ..Default::default()
        }
    }

    /// Creates the service, or updates it from the version just read.
    pub async fn apply(&self, spec: ServiceSpec, current: Option<&Service>) -> Result<()> {
        let name = spec.name.clone().unwrap_or_default();
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let auth = self.registry_auth(&image)?;
        match current {
            None => self
                .docker
                .create_service(spec, auth)
                .await
                .map(|_| ())
                .with_context(|| format!("creating service {name} with {image}")),
            Some(current) => {
                let options = UpdateServiceOptionsBuilder::default()
                    .version(version_of(current))
                    .build();
                self.docker
                    .update_service(&name, spec, options, auth)
                    .await
                    .map(|_| ())
                    .with_context(|| format!("updating service {name} to {image}"))
            }
        }
    }

    pub async fn scale(&self, current: &Service, replicas: usize) -> Result<()> {
        let mut spec = current.spec.clone().unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas as i64),
            }),
            ..Default::default()
        });
        self.apply(spec, Some(current))
            .await
            .with_context(|| format!("scaling service {name} to {replicas}"))
    }

    /// `docker service rollback`: swarm puts the previous spec back, with the rollback policy.
    pub async fn rollback(&self, current: &Service) -> Result<()> {
        let spec = current.spec.clone().unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        let options = UpdateServiceOptionsBuilder::default()
            .version(version_of(current))
            .rollback("previous")
            .build();
        self.docker
            .update_service(&name, spec, options, None)
            .await
            .map(|_| ())
            .with_context(|| format!("rolling service {name} back"))
    }

    pub async fn remove_service(&self, name: &str) -> Result<()> {
        match self.docker.delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) if missing(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing service {name}")),
        }
    }

    /// One Docker secret per secret of the release (`<scope>-<release>-<name>`),
    /// mounted read-only for the app's user at /run/secrets/<NAME>.
    pub async fn create_secrets(
        &self,
        release: &Release,
        values: &BTreeMap<String, String>,
    ) -> Result<Vec<TaskSpecContainerSpecSecrets>> {
        let mut refs = vec![];
        for name in release.secrets.keys() {
            let value = values
                .get(name)
                .context("secret resolved before the spec")?;
            let secret_name = format!("{}-{}-{}", self.scope, release.id, name.to_lowercase());
            let spec = SecretSpec {
                name: Some(secret_name.clone()),
                labels: Some(HashMap::from([(
                    labels::SCOPE.to_owned(),
                    self.scope.clone(),
                )])),
                data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                ..Default::default()
            };
            let id = match self.docker.create_secret(spec).await {
                Ok(created) => created.id,
                // Left by an earlier attempt of this very release id: the same value.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => self
                    .docker
                    .inspect_secret(&secret_name)
                    .await
                    .with_context(|| format!("inspecting secret {secret_name}"))?
                    .id
                    .unwrap_or_default(),
                // The error names the secret, never its value.
                Err(e) => return Err(e).with_context(|| format!("creating secret {secret_name}")),
            };
            refs.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(name.clone()),
                    uid: Some(crate::targets::docker::APP_UID.to_string()),
                    gid: Some(crate::targets::docker::APP_UID.to_string()),
                    mode: Some(0o400),
                }),
                secret_id: Some(id),
                secret_name: Some(secret_name),
            });
        }
        Ok(refs)
    }
}

fn version_of(service: &Service) -> i32 {
    service.version.as_ref().and_then(|v| v.index).unwrap_or(0) as i32
}

/// Removes the environment's secrets no service spec refers to any more.
/// Secrets of the spec before (swarm's rollback target) are still in use
/// and the engine refuses to remove those, which is what we want.
pub async fn remove_unused_secrets(target: &SwarmTarget) -> Result<()> {
    let mut used = HashSet::new();
    for colour in super::COLOURS {
        if let Some(service) = target.inspect_service(&target.service_name(colour)).await? {
            let secrets = service
                .spec
                .and_then(|s| s.task_template)
                .and_then(|t| t.container_spec)
                .and_then(|c| c.secrets)
                .unwrap_or_default();
            used.extend(secrets.into_iter().filter_map(|s| s.secret_name));
        }
    }
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{}={}", labels::SCOPE, target.scope)],
    )]);
    let options = ListSecretsOptionsBuilder::default()
        .filters(&filters)
        .build();
    let secrets = target
        .docker
        .list_secrets(Some(options))
        .await
        .with_context(|| format!("listing the secrets of {}", target.scope))?;
    for secret in secrets {
        let name = secret.spec.and_then(|s| s.name).unwrap_or_default();
        if !used.contains(&name) {
            // In use by a task still stopping, or by the previous spec: kept for now.
            let _ = target.docker.delete_secret(&name).await;
        }
    }
    Ok(())
}
