//! The baseline in the same run: the seed's shell deploy (docker CLI + curl
//! loop, `seed-deploy.sh`) behind nginx rendered from the same template with
//! fixed upstream ports, under the same load.
use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bollard::{
    query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder},
    Docker,
};

use crate::{daemon, load::Load, nginx};

const SCRIPT: &str = include_str!("seed-deploy.sh");

pub struct SeedFigures {
    pub deploy_seconds: f64,
    pub deploy_failed: u64,
    pub rollback_seconds: f64,
    pub rollback_failed: u64,
    pub ok: u64,
}

fn script(
    dir: &Path,
    docker_host: &str,
    image: &str,
    ports: &[u16],
    extra_env: &str,
    tries: u32,
) -> Result<bool> {
    let path = dir.join("seed-deploy.sh");
    std::fs::write(&path, SCRIPT)?;
    let mut args = vec![path.to_string_lossy().into_owned(), image.to_owned()];
    args.extend(ports.iter().map(|p| p.to_string()));
    let status = duct::cmd("bash", &args)
        .env("DOCKER_HOST", docker_host)
        .env("EXTRA_ENV", extra_env)
        .env("TRIES", tries.to_string())
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .context("running the seed deploy script")?
        .status;
    Ok(status.success())
}

async fn remove_seed_containers(docker: &Docker) {
    let filters = HashMap::from([("label".to_owned(), vec!["xtask.bench=seed".to_owned()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        let _ = docker
            .remove_container(
                &c.id.unwrap_or_default(),
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
}

pub async fn run(docker: &Docker, docker_host: &str, v1: &str, v2: &str) -> Result<SeedFigures> {
    if which::which("docker").is_err() || which::which("curl").is_err() {
        bail!("the seed baseline needs the docker CLI and curl on PATH");
    }
    let dir = tempfile::tempdir()?;
    let ports: Vec<u16> = (0..3).map(|_| super::free_port()).collect::<Result<_>>()?;
    let (http, https) = (super::free_port()?, super::free_port()?);
    let upstreams = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut settings = nginx::NginxSettings::local(dir.path(), http, https, upstreams);
    settings.api_rate = 1_000_000;
    settings.create_dirs()?;
    let (cert, _) = nginx::write_dev_certificate(&dir.path().join("tls"))?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx::render(&settings)?)?;
    let conf_arg = conf.to_string_lossy().into_owned();
    let pid = daemon::spawn(
        "nginx",
        &[
            "-c",
            &conf_arg,
            "-e",
            &dir.path().join("logs/error.log").to_string_lossy(),
            "-g",
            "daemon off;",
        ],
        &dir.path().join("nginx.out"),
    )?;
    let result = async {
        remove_seed_containers(docker).await;
        if !script(dir.path(), docker_host, v1, &ports, "", 30)? {
            bail!("the seed script could not deploy {v1}");
        }
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&cert)?)?)
            .build()?;
        let load = Load::start(client, format!("https://127.0.0.1:{https}/version"), 4);
        while load.ok_so_far() < 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failed_before = load.failed_so_far();
        let t = Instant::now();
        let deployed =
            tokio::task::block_in_place(|| script(dir.path(), docker_host, v2, &ports, "", 30))?;
        let deploy_seconds = t.elapsed().as_secs_f64();
        let deploy_failed = load.failed_so_far() - failed_before;
        if !deployed {
            bail!("the seed script could not deploy {v2}");
        }
        // A release that never gets ready: the script gives up after 10 tries,
        // then rollback.sh runs it again with the previous image.
        let failed_before = load.failed_so_far();
        let t = Instant::now();
        let bad = tokio::task::block_in_place(|| {
            script(
                dir.path(),
                docker_host,
                v1,
                &ports[..1],
                "-e DATABASE_URL=postgres://127.0.0.1:1/x",
                10,
            )
        })?;
        let restored = tokio::task::block_in_place(|| {
            script(dir.path(), docker_host, v2, &ports[..1], "", 30)
        })?;
        let rollback_seconds = t.elapsed().as_secs_f64();
        let rollback_failed = load.failed_so_far() - failed_before;
        if bad || !restored {
            bail!("the seed failure scenario did not behave as expected");
        }
        let report = load.stop().await;
        Ok(SeedFigures {
            deploy_seconds,
            deploy_failed,
            rollback_seconds,
            rollback_failed,
            ok: report.ok,
        })
    }
    .await;
    remove_seed_containers(docker).await;
    daemon::stop(pid, &conf_arg, Duration::from_secs(5))?;
    result
}
