//! `cargo xtask lab up|status|down`: the local multi-host lab (see docs/LAB.md).
use std::{process::ExitCode, time::Instant};

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::{lab, report};

#[derive(Subcommand)]
pub enum LabAction {
    /// Start N lab hosts (namespace, dockerd, sshd each) and the lab registry [--swarm]
    Up {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Host 1 becomes the swarm manager, the others join as workers
        #[arg(long)]
        swarm: bool,
    },
    /// Each host: address, dockerd and sshd alive, swarm role; exit 1 unless all are up
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Remove every namespace, daemon, link, mount and folder `up` made
    Down,
}

pub async fn run(action: LabAction) -> Result<ExitCode> {
    match action {
        LabAction::Up { hosts, swarm } => {
            let started = Instant::now();
            let (lab, made) = lab::up(&lab::Options::new(hosts, swarm)).await?;
            let verb = if made { "up" } else { "already up" };
            eprintln!(
                "lab {verb} in {} ({} hosts on {} via {})",
                report::seconds(started.elapsed()),
                lab.hosts.len(),
                lab.subnet,
                lab.bridge
            );
            print_table(&lab::status(&lab).await);
            eprintln!("{}", how_to_use(&lab));
            Ok(ExitCode::SUCCESS)
        }
        LabAction::Status { json } => {
            let Some(lab) = lab::Lab::load_from(&lab::default_dir())? else {
                if json {
                    report::print_json(&json!({ "up": false }));
                } else {
                    eprintln!("no lab: run `cargo xtask lab up`");
                }
                return Ok(ExitCode::FAILURE);
            };
            let status = lab::status(&lab).await;
            if json {
                report::print_json(&status);
            } else {
                print_table(&status);
            }
            Ok(if status.up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        LabAction::Down => {
            let started = Instant::now();
            let removed = lab::down(lab::DEFAULT_PREFIX, &lab::default_dir()).await?;
            if removed.items.is_empty() {
                eprintln!("nothing to remove: no lab is up");
            } else {
                for item in &removed.items {
                    eprintln!("removed {item}");
                }
                eprintln!("lab down in {}", report::seconds(started.elapsed()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_table(status: &lab::LabStatus) {
    let word = |up: bool| if up { "up" } else { "DOWN" }.to_owned();
    let mut table = report::Table::new(
        &format!("lab {} ({})", status.prefix, status.subnet),
        &["host", "address", "dockerd", "sshd", "swarm", "node id"],
    );
    for h in &status.hosts {
        table.row(vec![
            h.name.clone(),
            h.address.clone(),
            word(h.docker_answers),
            word(h.sshd_alive),
            h.swarm.as_ref().map_or("-".into(), |s| s.role.clone()),
            h.swarm.as_ref().map_or("-".into(), |s| s.node_id.clone()),
        ]);
    }
    table.emit();
    if let Some(registry) = &status.registry {
        eprintln!(
            "registry: https://{registry} ({})",
            word(status.registry_alive)
        );
    }
}

fn how_to_use(lab: &lab::Lab) -> String {
    let first = &lab.hosts[0];
    format!(
        "use a host:\n  DOCKER_HOST={} docker info\n  PATH={}:$PATH docker -H {} info   # over ssh, with the lab's ssh config\n  ssh -F {} {}\nregistry credentials: {}",
        first.docker_host(),
        lab.ssh.bin_dir.display(),
        first.ssh_docker_host(),
        lab.ssh.config.display(),
        first.name,
        lab.registry
            .as_ref()
            .map_or("-".into(), |r| r.credentials_file.display().to_string()),
    )
}
