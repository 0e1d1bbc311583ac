//! The nginx template, rendered the way tests and the deploy engine render
//! it (temp folder, generated certificate), then `nginx -t`.
use std::path::Path;

use anyhow::{Context, Result};

use crate::nginx::{render_template, write_dev_certificate, NginxSettings};

pub fn check(template: &Path) -> Result<()> {
    let text = super::read(template)?;
    let dir = tempfile::tempdir().context("creating a temp dir for nginx -t")?;
    let settings = NginxSettings::local(
        dir.path(),
        8080,
        8443,
        vec!["127.0.0.1:8081".into(), "127.0.0.1:8082".into()],
    );
    let rendered =
        render_template(&text, &settings).with_context(|| format!("{}", template.display()))?;
    write_dev_certificate(&dir.path().join("tls"))?;
    settings.create_dirs()?;
    let config = dir.path().join("nginx.conf");
    std::fs::write(&config, rendered).context("writing the rendered nginx.conf")?;
    let prefix = dir.path().to_string_lossy().into_owned();
    let error_log = settings.log_dir.join("error.log");
    let (config, error_log) = (config.to_string_lossy(), error_log.to_string_lossy());
    super::tool(
        template,
        "nginx",
        &["-t", "-q", "-p", &prefix, "-e", &error_log, "-c", &config],
    )
    .context("nginx rejects the rendered template (line numbers are those of the rendered file, close to the template's)")?;
    Ok(())
}
