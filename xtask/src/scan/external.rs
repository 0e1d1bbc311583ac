//! trivy and grype, when either is installed: their OS-package and language
//! findings merged into ours. Neither is required: absent means not run.
use anyhow::{Context, Result};

use super::{Finding, Severity};

/// Runs every installed scanner; one result per scanner found on PATH.
pub async fn run_available(image: &str) -> Vec<Result<(&'static str, Vec<Finding>)>> {
    let mut results = Vec::new();
    if which::which("trivy").is_ok() {
        results.push(
            run("trivy", &["image", "--quiet", "--format", "json", image])
                .await
                .and_then(|out| parse_trivy(&out))
                .map(|f| ("trivy", f)),
        );
    }
    if which::which("grype").is_ok() {
        results.push(
            run("grype", &[&format!("docker:{image}"), "-o", "json", "-q"])
                .await
                .and_then(|out| parse_grype(&out))
                .map(|f| ("grype", f)),
        );
    }
    results
}

async fn run(program: &'static str, args: &[&str]) -> Result<Vec<u8>> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = duct::cmd(program, &args)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            anyhow::bail!(
                "{program} failed: {}",
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        Ok(output.stdout)
    })
    .await?
}

fn external(
    source: &str,
    id: &str,
    severity: &str,
    title: &str,
    package: &str,
    version: &str,
) -> Finding {
    Finding {
        id: id.to_owned(),
        severity: Severity::from_word(severity),
        title: title.to_owned(),
        detail: format!("reported by {source}"),
        source: source.to_owned(),
        location: format!("{package}@{version}"),
    }
}

pub fn parse_trivy(json: &[u8]) -> Result<Vec<Finding>> {
    let report: serde_json::Value = serde_json::from_slice(json).context("parsing trivy's JSON")?;
    let mut out = Vec::new();
    for result in report["Results"].as_array().into_iter().flatten() {
        for v in result["Vulnerabilities"].as_array().into_iter().flatten() {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            out.push(external(
                "trivy",
                &s("VulnerabilityID"),
                &s("Severity"),
                &s("Title"),
                &s("PkgName"),
                &s("InstalledVersion"),
            ));
        }
    }
    Ok(out)
}

pub fn parse_grype(json: &[u8]) -> Result<Vec<Finding>> {
    let report: serde_json::Value = serde_json::from_slice(json).context("parsing grype's JSON")?;
    let mut out = Vec::new();
    for m in report["matches"].as_array().into_iter().flatten() {
        let v = &m["vulnerability"];
        let a = &m["artifact"];
        let s = |x: &serde_json::Value, k: &str| x[k].as_str().unwrap_or_default().to_owned();
        out.push(external(
            "grype",
            &s(v, "id"),
            &s(v, "severity"),
            &s(v, "description"),
            &s(a, "name"),
            &s(a, "version"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivy_and_grype_reports_become_findings() {
        let trivy = br#"{"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-1","PkgName":"openssl","InstalledVersion":"3.0","Severity":"CRITICAL","Title":"t"}]}]}"#;
        let f = parse_trivy(trivy).unwrap();
        assert_eq!(
            (f[0].id.as_str(), f[0].severity, f[0].location.as_str()),
            ("CVE-1", Severity::Critical, "openssl@3.0")
        );
        let grype = br#"{"matches":[{"vulnerability":{"id":"GHSA-x","severity":"Negligible"},"artifact":{"name":"zlib","version":"1.2"}}]}"#;
        let g = parse_grype(grype).unwrap();
        assert_eq!(
            (g[0].severity, g[0].source.as_str()),
            (Severity::Info, "grype")
        );
    }
}
