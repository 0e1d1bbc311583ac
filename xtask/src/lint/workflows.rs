//! GitHub workflows call `cargo xtask ...` and nothing else of ours; each
//! such call must parse with the real CLI definition, or CI would fail only
//! once pushed.
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use serde_yaml_ng::Value;

use crate::cli::Cli;

pub fn check(file: &Path) -> Result<()> {
    let doc: Value = serde_yaml_ng::from_str(&super::read(file)?)
        .with_context(|| format!("{}: not valid YAML", file.display()))?;
    let jobs = doc["jobs"]
        .as_mapping()
        .with_context(|| format!("{}: no `jobs`", file.display()))?;
    let mut problems = Vec::new();
    for (job, body) in jobs {
        let job = job.as_str().unwrap_or("?");
        for (i, step) in body["steps"]
            .as_sequence()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(script) = step["run"].as_str() else {
                continue;
            };
            let step_name = step["name"]
                .as_str()
                .map_or(format!("#{}", i + 1), str::to_owned);
            for args in xtask_calls(script) {
                if let Err(e) = parse(&args) {
                    problems.push(format!(
                        "job `{job}` step `{step_name}`: `cargo xtask {}` is not a valid command: {e}",
                        args.join(" ")
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", file.display(), problems.join("; "));
    }
    Ok(())
}

/// The arguments after each `cargo xtask` in a shell script, up to the end
/// of that command (`&&`, `||`, `;`, `|`, a newline or a comment).
pub fn xtask_calls(script: &str) -> Vec<Vec<String>> {
    let mut calls = Vec::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        while i + 1 < words.len() {
            if words[i] == "cargo" && words[i + 1] == "xtask" {
                let args: Vec<String> = words[i + 2..]
                    .iter()
                    .take_while(|w| {
                        !matches!(**w, "&&" | "||" | ";" | "|" | "&") && !w.starts_with('#')
                    })
                    .map(|w| {
                        w.trim_end_matches(';')
                            .trim_matches(|c| c == '"' || c == '\'')
                            .to_owned()
                    })
                    .collect();
                i += 2 + args.len();
                calls.push(args);
            } else {
                i += 1;
            }
        }
    }
    calls
}

/// Parses with clap exactly as `cargo xtask` would; asking for help is valid.
pub fn parse(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("cargo-xtask".to_owned()).chain(args.iter().cloned());
    match Cli::command().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e
            .to_string()
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("rejected by the CLI")
            .to_owned()),
    }
}
