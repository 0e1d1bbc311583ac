//! The release history and the lock as swarm config objects. Configs live
//! in the swarm's raft store, so every manager sees them; a config name is
//! unique, so creating `<scope>-lock` is an atomic "create if absent".
//! Configs cannot be changed, so the history is rewritten as a new config
//! (`<scope>-history-<seq>`) before the older ones are removed: a crash in
//! between leaves two (the newer wins), never none.
use std::collections::HashMap;

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::{models::ConfigSpec, query_parameters::ListConfigsOptionsBuilder, Docker};

use crate::{
    deploy::{lock::LockInfo, release::History},
    targets::docker::labels,
};

async fn list(
    docker: &Docker,
    scope: &str,
    role: Option<&str>,
) -> Result<Vec<bollard::models::Config>> {
    let mut wanted = vec![format!("{}={scope}", labels::SCOPE)];
    wanted.extend(role.map(|r| format!("{}={r}", labels::ROLE)));
    let filters = HashMap::from([("label".to_owned(), wanted)]);
    let options = ListConfigsOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker
        .list_configs(Some(options))
        .await
        .with_context(|| format!("listing the {} configs of {scope}", role.unwrap_or("all")))
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

fn label<'a>(config: &'a bollard::models::Config, key: &str) -> Option<&'a String> {
    config.spec.as_ref()?.labels.as_ref()?.get(key)
}

/// Creates a record config; false when the name is taken.
async fn create(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
    data: &str,
) -> Result<bool> {
    let spec = ConfigSpec {
        name: Some(name.to_owned()),
        labels: Some(labels),
        data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
        ..Default::default()
    };
    match docker.create_config(spec).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating config {name}")),
    }
}

async fn remove(docker: &Docker, id: &str) -> Result<()> {
    match docker.delete_config(id).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing config {id}")),
    }
}

fn seq_of(config: &bollard::models::Config) -> Option<u64> {
    label(config, labels::SEQ)?.parse().ok()
}

pub async fn read_history(docker: &Docker, scope: &str) -> Result<History> {
    let configs = list(docker, scope, Some("history")).await?;
    match configs
        .iter()
        .filter_map(|c| Some((seq_of(c)?, c)))
        .max_by_key(|(seq, _)| *seq)
    {
        None => Ok(History::default()),
        Some((seq, config)) => serde_json::from_str(&data_of(config)?)
            .with_context(|| format!("parsing history config {seq} of {scope}")),
    }
}

pub async fn write_history(docker: &Docker, scope: &str, history: &History) -> Result<()> {
    let existing = list(docker, scope, Some("history")).await?;
    let seq = existing.iter().filter_map(seq_of).max().unwrap_or(0) + 1;
    let labels = HashMap::from([
        (labels::SCOPE.to_owned(), scope.to_owned()),
        (labels::ROLE.to_owned(), "history".to_owned()),
        (labels::SEQ.to_owned(), seq.to_string()),
    ]);
    let data = serde_json::to_string(history)?;
    if !create(docker, &format!("{scope}-history-{seq}"), labels, &data).await? {
        anyhow::bail!("history config {seq} of {scope} already exists: another process is writing history without the lock");
    }
    for config in existing {
        remove(docker, &config.id.unwrap_or_default()).await?;
    }
    Ok(())
}

pub async fn lock_create(docker: &Docker, scope: &str, info: &LockInfo) -> Result<bool> {
    let labels = HashMap::from([
        (labels::SCOPE.to_owned(), scope.to_owned()),
        (labels::ROLE.to_owned(), "lock".to_owned()),
    ]);
    create(
        docker,
        &format!("{scope}-lock"),
        labels,
        &serde_json::to_string(info)?,
    )
    .await
}

pub async fn lock_read(docker: &Docker, scope: &str) -> Result<Option<(String, LockInfo)>> {
    let Some(config) = list(docker, scope, Some("lock")).await?.into_iter().next() else {
        return Ok(None);
    };
    let info = serde_json::from_str(&data_of(&config)?).context("parsing the lock config")?;
    Ok(Some((config.id.unwrap_or_default(), info)))
}

pub async fn lock_remove(docker: &Docker, id: &str) -> Result<()> {
    remove(docker, id).await
}

/// Every record of the environment: for `destroy` only.
pub async fn remove_all(docker: &Docker, scope: &str) -> Result<()> {
    for config in list(docker, scope, None).await? {
        remove(docker, &config.id.unwrap_or_default()).await?;
    }
    Ok(())
}
