//! The balancer template, rendered the way the container renders it (but
//! with the certificate, socket and state file in a temp folder), then `haproxy -c` in
//! zero-warning mode: a warning is a config HAProxy would half-understand.
//! The same for the compose stacks' rendering of it (`check_compose`).
use std::path::Path;

use anyhow::{Context, Result};

use crate::{
    haproxy::{
        compose::{self, ComposeSettings},
        config::{self, HaproxySettings},
        dev_pem,
    },
    setup,
};

pub fn check(template: &Path) -> Result<()> {
    let text = super::read(template)?;
    let dir = tempfile::tempdir().context("creating a temp dir for haproxy -c")?;
    let settings = in_dir(dir.path(), HaproxySettings::default())?;
    let rendered = config::render_template(&text, &settings)
        .with_context(|| format!("{}", template.display()))?;
    haproxy_c(template, dir.path(), &rendered)
}

/// The template as `cargo xtask compose-config` renders it for the dev and
/// the prod compose files (servers from Docker's DNS, the official image's paths).
pub fn check_compose(template: &Path) -> Result<()> {
    let text = super::read(template)?;
    for (name, mut settings) in [
        ("dev", ComposeSettings::dev(compose::DEV_HTTPS_PORT)),
        ("prod", ComposeSettings::prod()),
    ] {
        let dir = tempfile::tempdir().context("creating a temp dir for haproxy -c")?;
        settings.haproxy = in_dir(dir.path(), settings.haproxy)?;
        let rendered = compose::render_template(&text, &settings)
            .with_context(|| format!("{} (compose, {name})", template.display()))?;
        haproxy_c(template, dir.path(), &rendered)
            .with_context(|| format!("the {name} compose rendering"))?;
    }
    Ok(())
}

/// `settings` with the certificate (a fresh one) and the admin socket in `dir`.
fn in_dir(dir: &Path, settings: HaproxySettings) -> Result<HaproxySettings> {
    let pem = dir.join("balancer.pem");
    std::fs::write(&pem, dev_pem()?.1).context("writing the test certificate")?;
    // As the image ships it: a state file of no servers.
    let state_file = match settings.state_file {
        Some(_) => {
            let state = dir.join("server-state");
            std::fs::write(&state, config::EMPTY_STATE).context("writing the empty state file")?;
            Some(state.to_string_lossy().into_owned())
        }
        None => None,
    };
    Ok(HaproxySettings {
        cert_path: pem.to_string_lossy().into_owned(),
        socket_path: dir.join("admin.sock").to_string_lossy().into_owned(),
        state_file,
        ..settings
    })
}

fn haproxy_c(template: &Path, dir: &Path, rendered: &str) -> Result<()> {
    setup::ensure(setup::HAPROXY)?;
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, rendered).context("writing the rendered haproxy.cfg")?;
    super::tool(template, "haproxy", &["-c", "-dW", "-f", &file.to_string_lossy()])
        .context("haproxy rejects the rendered template (line numbers are those of the rendered file, close to the template's)")?;
    Ok(())
}
