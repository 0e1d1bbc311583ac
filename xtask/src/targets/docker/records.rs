//! The release history and the lock, kept in the Docker engine itself as
//! never-started containers of a tiny FROM-scratch image: a container name
//! is unique, so creating one is an atomic "create if absent", and its labels
//! carry the record. Any runner that reaches the engine sees the same state.
use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::{
    models::ContainerCreateBody, query_parameters::CreateContainerOptionsBuilder, Docker,
};

use super::labels;
use crate::{
    deploy::{lock::LockInfo, release::History},
    image,
};

const STATE_IMAGE: &str = "xtask-state:1";

/// The empty image the record containers are made from; built once, nothing pulled.
async fn ensure_state_image(docker: &Docker) -> Result<()> {
    if docker.inspect_image(STATE_IMAGE).await.is_ok() {
        return Ok(());
    }
    let tar = image::context::tar(
        "FROM scratch\nLABEL xtask.role=state-image\nCMD [\"/record\"]\n",
        &[],
    )?;
    image::build_context(docker, tar, &[STATE_IMAGE.to_owned()], true)
        .await
        .map(|_| ())
}

/// Creates a never-started record container; false when the name is taken.
async fn create_record(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<bool> {
    ensure_state_image(docker).await?;
    let body = ContainerCreateBody {
        image: Some(STATE_IMAGE.into()),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    match docker.create_container(Some(options), body).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating record {name}")),
    }
}

async fn remove(docker: &Docker, id: &str) -> Result<()> {
    super::remove_forced(docker, id).await
}

/// (container id, labels) of every record of `kind` for this environment.
async fn list(
    docker: &Docker,
    scope: &str,
    kind: &str,
) -> Result<Vec<(String, HashMap<String, String>)>> {
    let containers = super::list_scoped(docker, scope, Some(kind)).await?;
    Ok(containers
        .into_iter()
        .map(|c| (c.id.unwrap_or_default(), c.labels.unwrap_or_default()))
        .collect())
}

/// History lives in `<scope>-history-<seq>`: a new record is written before
/// the old ones are removed, so a crash in between leaves two (the newer wins),
/// never none.
pub async fn read_history(docker: &Docker, scope: &str) -> Result<History> {
    let newest = list(docker, scope, "history")
        .await?
        .into_iter()
        .filter_map(|(_, l)| {
            Some((
                l.get(labels::SEQ)?.parse::<u64>().ok()?,
                l.get(labels::DATA)?.clone(),
            ))
        })
        .max_by_key(|(seq, _)| *seq);
    match newest {
        None => Ok(History::default()),
        Some((seq, data)) => serde_json::from_str(&data)
            .with_context(|| format!("parsing history record {seq} of {scope}")),
    }
}

pub async fn write_history(docker: &Docker, scope: &str, history: &History) -> Result<()> {
    let existing = list(docker, scope, "history").await?;
    let seq = existing
        .iter()
        .filter_map(|(_, l)| l.get(labels::SEQ)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let labels = HashMap::from([
        (labels::SCOPE.to_owned(), scope.to_owned()),
        (labels::ROLE.to_owned(), "history".to_owned()),
        (labels::SEQ.to_owned(), seq.to_string()),
        (labels::DATA.to_owned(), serde_json::to_string(history)?),
    ]);
    if !create_record(docker, &format!("{scope}-history-{seq}"), labels).await? {
        anyhow::bail!("history record {seq} of {scope} already exists: another process is writing history without the lock");
    }
    for (id, _) in existing {
        remove(docker, &id).await?;
    }
    Ok(())
}

pub async fn lock_create(docker: &Docker, scope: &str, info: &LockInfo) -> Result<bool> {
    let labels = HashMap::from([
        (labels::SCOPE.to_owned(), scope.to_owned()),
        (labels::ROLE.to_owned(), "lock".to_owned()),
        (labels::DATA.to_owned(), serde_json::to_string(info)?),
    ]);
    create_record(docker, &format!("{scope}-lock"), labels).await
}

pub async fn lock_read(docker: &Docker, scope: &str) -> Result<Option<(String, LockInfo)>> {
    let Some((id, labels)) = list(docker, scope, "lock").await?.into_iter().next() else {
        return Ok(None);
    };
    let data = labels
        .get(labels::DATA)
        .context("lock record without data")?;
    let info = serde_json::from_str(data).context("parsing the lock record")?;
    Ok(Some((id, info)))
}

pub async fn lock_remove(docker: &Docker, id: &str) -> Result<()> {
    remove(docker, id).await
}
