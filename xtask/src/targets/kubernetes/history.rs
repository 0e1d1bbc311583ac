//! The release history in a ConfigMap, so every runner sees the same one.
//! Written with replace carrying the resourceVersion last read: when another
//! writer got there first the API server answers 409 and nothing is lost.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{ObjectMeta, PostParams},
    Api,
};

use super::{api_code, KubeTarget};
use crate::deploy::{records::HistoryStore, release::History};

const KEY: &str = "history.json";

impl KubeTarget {
    pub fn history_name(&self) -> String {
        format!("{}-xtask-history", self.prefix)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}

impl HistoryStore for KubeTarget {
    async fn read_history(&self) -> Result<History> {
        let name = self.history_name();
        let found = self
            .config_maps()
            .get_opt(&name)
            .await
            .with_context(|| format!("reading ConfigMap {name} (the release history)"))?;
        let Some(map) = found else {
            *self.history_version.lock().unwrap() = None;
            return Ok(History::default());
        };
        *self.history_version.lock().unwrap() = map.metadata.resource_version.clone();
        match map.data.as_ref().and_then(|d| d.get(KEY)) {
            Some(json) => serde_json::from_str(json)
                .with_context(|| format!("ConfigMap {name}: {KEY} is not a release history")),
            None => Ok(History::default()),
        }
    }

    async fn write_history(&self, history: &History) -> Result<()> {
        let name = self.history_name();
        let version = self.history_version.lock().unwrap().clone();
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version: version.clone(),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "xtask".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                KEY.to_owned(),
                serde_json::to_string_pretty(history)?,
            )])),
            ..Default::default()
        };
        let api = self.config_maps();
        let written = match &version {
            Some(_) => api.replace(&name, &PostParams::default(), &map).await,
            None => api.create(&PostParams::default(), &map).await,
        };
        let written = written.map_err(|e| {
            let why = if api_code(&e) == Some(409) {
                "it changed since it was read (another deploy or a hand edit); nothing was overwritten, run again"
            } else {
                "the deployer needs get, create and update on configmaps"
            };
            anyhow::Error::new(e).context(format!("writing ConfigMap {name}: {why}"))
        })?;
        *self.history_version.lock().unwrap() = written.metadata.resource_version;
        Ok(())
    }
}
