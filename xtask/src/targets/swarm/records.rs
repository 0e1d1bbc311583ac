//! The record store of a swarm: config objects. They live in the swarm's
//! raft store, so every manager (and every fresh runner) sees the same ones,
//! prune never touches them, and a config name is unique, so creating one is
//! an atomic "create if absent". History and lock on top: `deploy::records`.

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::{models::ConfigSpec, query_parameters::ListConfigsOptionsBuilder, Docker};

use crate::deploy::records::{self, Record, RecordStore};

pub struct ConfigStore {
    pub docker: Docker,
    pub scope: String,
}

fn data_of(config: &bollard::models::Config) -> Result<String> {
    let encoded = config
        .spec
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("a record config whose data is not base64")?;
    String::from_utf8(bytes).context("a record config whose data is not UTF-8")
}

impl RecordStore for ConfigStore {
    fn scope(&self) -> &str {
        &self.scope
    }

    async fn create(&self, name: &str, role: &str, data: &str) -> Result<Option<String>> {
        let spec = ConfigSpec {
            name: Some(name.to_owned()),
            labels: Some(records::labels(&self.scope, role)),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.docker.create_config(spec).await {
            Ok(created) => Ok(Some(created.id)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("creating config {name}")),
        }
    }

    async fn list(&self, role: &str) -> Result<Vec<Record>> {
        let filters = records::label_filter(&self.scope, role);
        let options = ListConfigsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let configs = self
            .docker
            .list_configs(Some(options))
            .await
            .with_context(|| format!("listing the {role} configs of {}", self.scope))?;
        configs
            .iter()
            .map(|c| {
                Ok(Record {
                    token: c.id.clone().unwrap_or_default(),
                    name: c
                        .spec
                        .as_ref()
                        .and_then(|s| s.name.clone())
                        .unwrap_or_default(),
                    data: data_of(c)?,
                })
            })
            .collect()
    }

    async fn remove(&self, token: &str) -> Result<()> {
        match self.docker.delete_config(token).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing config {token}")),
        }
    }
}
