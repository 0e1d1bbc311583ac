//! The deploy lock as a `coordination.k8s.io/v1` Lease. The API server makes
//! create atomic (409 when the Lease exists) and deletes with preconditions
//! (uid and resourceVersion), so only the very Lease that was read is removed.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    api::{DeleteParams, ObjectMeta, PostParams, Preconditions},
    Api,
};

use super::{api_code, KubeTarget};
use crate::deploy::lock::{LockInfo, LockStore, Renewal};

/// The full LockInfo as JSON: host and pid are what the takeover rules need,
/// and a Lease has no fields for them.
const ANNOTATION: &str = "xtask.dev/lock";

impl KubeTarget {
    pub fn lease_name(&self) -> String {
        format!("{}-deploy-lock", self.prefix)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}

impl LockStore for KubeTarget {
    async fn lock_create(&self, info: &LockInfo) -> Result<Option<String>> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION.to_owned(),
                    serde_json::to_string(info)?,
                )])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(info.holder.clone()),
                lease_duration_seconds: Some(info.ttl_seconds.min(i32::MAX as u64) as i32),
                // For `kubectl get lease -o yaml` and other tools; xtask reads the annotation.
                acquire_time: k8s_openapi::jiff::Timestamp::from_second(info.since)
                    .ok()
                    .map(MicroTime),
                ..Default::default()
            }),
        };
        match self.leases().create(&PostParams::default(), &lease).await {
            Ok(created) => Ok(Some(created.metadata.uid.unwrap_or_default())),
            Err(e) if api_code(&e) == Some(409) => Ok(None),
            // The lock lives in the namespace, so it must exist before the first deploy.
            Err(e) if api_code(&e) == Some(404) => Err(e).with_context(|| {
                format!(
                    "namespace {ns} (target.namespace) does not exist; create it first: kubectl create namespace {ns}",
                    ns = self.settings.namespace
                )
            }),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "creating Lease {}/{} (the deploy lock); the deployer needs create on leases.coordination.k8s.io",
                    self.settings.namespace,
                    self.lease_name()
                )
            }),
        }
    }

    async fn lock_read(&self) -> Result<Option<(String, LockInfo)>> {
        let Some(lease) = self
            .leases()
            .get_opt(&self.lease_name())
            .await
            .with_context(|| format!("reading Lease {}", self.lease_name()))?
        else {
            return Ok(None);
        };
        let meta = &lease.metadata;
        let info = match meta.annotations.as_ref().and_then(|a| a.get(ANNOTATION)) {
            Some(json) => serde_json::from_str(json).with_context(|| {
                format!(
                    "Lease {}: annotation {ANNOTATION} is not a lock record",
                    self.lease_name()
                )
            })?,
            // Made by hand or another tool: described from the Lease itself. It expires
            // `leaseDurationSeconds` after its renew (or acquire) time; with neither, it is
            // taken as just acquired, so it is never taken over: `lock release` frees it.
            None => LockInfo {
                holder: lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.clone())
                    .unwrap_or_else(|| "unknown".into()),
                host: "unknown".into(),
                pid: 0,
                since: lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.clone().or_else(|| s.acquire_time.clone()))
                    .map_or_else(|| chrono::Utc::now().timestamp(), |t| t.0.as_second()),
                ttl_seconds: lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .unwrap_or(0)
                    .max(0) as u64,
                command: "unknown".into(),
                renewed: None,
            },
        };
        let mut info: LockInfo = info;
        info.renewed = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_second());
        // The uid names this very Lease: one made after it was deleted has another.
        Ok(Some((meta.uid.clone().unwrap_or_default(), info)))
    }

    async fn lock_remove(&self, token: &str) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: (!token.is_empty()).then(|| token.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.leases().delete(&self.lease_name(), &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a newer holder's Lease: not ours to remove.
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting Lease {}", self.lease_name())),
        }
    }

    /// Sets the Lease's renewTime, replacing exactly the version read: a
    /// Lease that is another's now (another uid) is lost.
    async fn lock_renew(&self, token: &str, at: i64) -> Result<Renewal> {
        let name = self.lease_name();
        let Some(mut lease) = self
            .leases()
            .get_opt(&name)
            .await
            .with_context(|| format!("reading Lease {name}"))?
        else {
            return Ok(Renewal::Lost);
        };
        if lease.metadata.uid.as_deref() != Some(token) {
            return Ok(Renewal::Lost);
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.renew_time = k8s_openapi::jiff::Timestamp::from_second(at)
            .ok()
            .map(MicroTime);
        match self
            .leases()
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Renewal::Renewed),
            // Changed since read: try again on the next tick, when it may be ours still.
            Err(e) if api_code(&e) == Some(409) => Ok(Renewal::Renewed),
            Err(e) => Err(e).with_context(|| format!("renewing Lease {name}")),
        }
    }
}
