//! The Dockerfile cannot be built here (no base image can be pulled), so
//! this reads it the way the builder does (continuations, comments,
//! directives) and checks what a bad edit would most likely break: unknown
//! instructions, unpinned base images, a root or missing USER, no HEALTHCHECK.
use std::path::Path;

use anyhow::{bail, Result};

const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// An instruction with the line it starts on.
pub struct Instruction {
    pub line: usize,
    pub keyword: String,
    pub args: String,
}

pub fn check(file: &Path) -> Result<()> {
    let instructions = parse(&super::read(file)?);
    let mut problems = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    let mut final_stage_start = 0;
    for (i, ins) in instructions.iter().enumerate() {
        if !INSTRUCTIONS.contains(&ins.keyword.as_str()) {
            problems.push(format!(
                "line {}: unknown instruction `{}`",
                ins.line, ins.keyword
            ));
        }
        if ins.keyword == "FROM" {
            final_stage_start = i;
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let image = words.first().copied().unwrap_or("");
            let known_stage = stages.iter().any(|s| s.eq_ignore_ascii_case(image));
            if image != "scratch" && !known_stage {
                if let Some(problem) = super::compose::unpinned(image) {
                    problems.push(format!("line {}: base image `{image}` {problem}", ins.line));
                }
            }
            if let (Some(as_kw), Some(name)) = (words.get(1), words.get(2)) {
                if as_kw.eq_ignore_ascii_case("AS") {
                    stages.push((*name).to_owned());
                }
            }
        }
    }
    if stages.is_empty() && instructions.iter().all(|i| i.keyword != "FROM") {
        problems.push("no FROM instruction".into());
    }
    let final_stage = &instructions[final_stage_start.min(instructions.len())..];
    match final_stage.iter().rev().find(|i| i.keyword == "USER") {
        None => problems.push("the final stage sets no USER: the app would run as root".into()),
        Some(u) => {
            let user = u.args.split(':').next().unwrap_or("").trim();
            if user == "root" || user == "0" {
                problems.push(format!(
                    "line {}: USER {} runs the app as root",
                    u.line, u.args
                ));
            }
        }
    }
    if !final_stage.iter().any(|i| i.keyword == "HEALTHCHECK") {
        problems.push("the final stage has no HEALTHCHECK".into());
    }
    if !problems.is_empty() {
        bail!("{}: {}", file.display(), problems.join("; "));
    }
    Ok(())
}

/// Joins `\` continuations, skips comments and blank lines.
pub fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        // Comments (including `# syntax=` directives) may sit inside continuations too.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (content, continues) = match trimmed.strip_suffix('\\') {
            Some(rest) => (rest, true),
            None => (trimmed, false),
        };
        let entry = current.get_or_insert_with(|| (index + 1, String::new()));
        entry.1.push_str(content);
        entry.1.push(' ');
        if !continues {
            let (line, text) = current.take().expect("set above");
            let text = text.trim();
            let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
            out.push(Instruction {
                line,
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
        }
    }
    out
}
