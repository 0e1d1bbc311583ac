//! `compose-config`: what the compose files mount into the official HAProxy
//! image, rendered by the same code as the deploy targets' balancer.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;

use crate::haproxy::{
    compose::{self, ComposeSettings},
    dev_pem,
};

#[derive(clap::Args)]
pub struct ComposeConfigArgs {
    /// For docker-compose.prod.yml: no certificate is written (it comes from
    /// the tls_cert and tls_key secrets) and the redirect goes to 443
    #[arg(long)]
    pub prod: bool,
    /// Folder to write into [default: target/balancer-compose, which
    /// docker-compose.yml mounts; with --prod, target/balancer-compose-prod]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The host port of BALANCER_HTTPS_PORT, for the redirect (dev only)
    #[arg(long, value_name = "PORT", default_value_t = compose::DEV_HTTPS_PORT, conflicts_with = "prod")]
    pub https_port: u16,
}

pub fn run(args: ComposeConfigArgs) -> Result<ExitCode> {
    let (settings, pem, default_dir) = if args.prod {
        let dir = crate::workspace::root().join("target/balancer-compose-prod");
        (ComposeSettings::prod(), None, dir)
    } else {
        let pem = dev_pem()?.1;
        let settings = ComposeSettings::dev(args.https_port);
        (settings, Some(pem), compose::dev_dir())
    };
    let dir = args.out.unwrap_or(default_dir);
    let config = compose::write(&dir, &settings, pem.as_deref())?;
    eprintln!("wrote {}", config.display());
    if pem.is_some() {
        eprintln!(
            "wrote {} (self-signed, localhost)",
            dir.join("balancer.pem").display()
        );
        eprintln!("next: docker-compose -f infrastructure/docker/docker-compose.yml up --build");
    } else {
        eprintln!("next: copy it next to docker-compose.prod.yml as balancer/ (or set BALANCER_RENDERED_DIR)");
    }
    Ok(ExitCode::SUCCESS)
}
