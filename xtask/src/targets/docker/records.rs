//! The record store of a Docker engine: named volumes, whose labels carry
//! the record. `docker container prune` and `docker system prune` (without
//! `--volumes`) never remove a named volume, while they do remove the
//! never-started containers that held the records before. Creating a volume
//! whose name exists returns the existing one: a nonce label tells whether
//! this call made it, which gives the atomic "create if absent".

use anyhow::{Context, Result};
use bollard::{models::VolumeCreateRequest, query_parameters::ListVolumesOptionsBuilder, Docker};

use super::labels;
use crate::deploy::records::{self, Record, RecordStore};

const NONCE: &str = "xtask.nonce";

pub struct VolumeStore {
    pub docker: Docker,
    pub scope: String,
}

fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RecordStore for VolumeStore {
    fn scope(&self) -> &str {
        &self.scope
    }

    async fn create(&self, name: &str, role: &str, data: &str) -> Result<Option<String>> {
        let ours = nonce();
        let mut labels = records::labels(&self.scope, role);
        labels.insert(labels::DATA.to_owned(), data.to_owned());
        labels.insert(NONCE.to_owned(), ours.clone());
        let options = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        let volume = self
            .docker
            .create_volume(options)
            .await
            .with_context(|| format!("creating record volume {name}"))?;
        Ok((volume.labels.get(NONCE) == Some(&ours)).then(|| format!("{name}@{ours}")))
    }

    async fn list(&self, role: &str) -> Result<Vec<Record>> {
        let filters = records::label_filter(&self.scope, role);
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .with_context(|| format!("listing the {role} records of {}", self.scope))?;
        Ok(volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| Record {
                token: format!(
                    "{}@{}",
                    v.name,
                    v.labels.get(NONCE).cloned().unwrap_or_default()
                ),
                data: v.labels.get(labels::DATA).cloned().unwrap_or_default(),
                name: v.name,
            })
            .collect())
    }

    /// The token is `name@nonce`: a newer record of the same name is left alone.
    async fn remove(&self, token: &str) -> Result<()> {
        let (name, nonce) = token.split_once('@').unwrap_or((token, ""));
        let current = match self.docker.inspect_volume(name).await {
            Ok(volume) => volume,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("inspecting record volume {name}")),
        };
        if current.labels.get(NONCE).map(String::as_str) != Some(nonce) {
            return Ok(());
        }
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing record volume {name}")),
        }
    }
}
