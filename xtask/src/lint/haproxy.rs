//! The balancer template, rendered the way the container renders it (but
//! with the certificate and socket in a temp folder), then `haproxy -c` in
//! zero-warning mode: a warning is a config HAProxy would half-understand.
use std::path::Path;

use anyhow::{Context, Result};

use crate::{
    haproxy::{config, dev_pem},
    setup,
};

pub fn check(template: &Path) -> Result<()> {
    setup::ensure(setup::HAPROXY)?;
    let text = super::read(template)?;
    let dir = tempfile::tempdir().context("creating a temp dir for haproxy -c")?;
    let pem = dir.path().join("balancer.pem");
    std::fs::write(&pem, dev_pem()?.1).context("writing the test certificate")?;
    let settings = config::HaproxySettings {
        cert_path: pem.to_string_lossy().into_owned(),
        socket_path: dir.path().join("admin.sock").to_string_lossy().into_owned(),
        ..Default::default()
    };
    let rendered = config::render_template(&text, &settings)
        .with_context(|| format!("{}", template.display()))?;
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, rendered).context("writing the rendered haproxy.cfg")?;
    super::tool(template, "haproxy", &["-c", "-dW", "-f", &file.to_string_lossy()])
        .context("haproxy rejects the rendered template (line numbers are those of the rendered file, close to the template's)")?;
    Ok(())
}
