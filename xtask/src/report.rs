//! How commands talk: a summary table for people, `--json` for machines,
//! and GitHub Actions groups, annotations and a job summary when
//! `GITHUB_ACTIONS=true`. Workflow commands (groups, annotations) go to
//! stderr, where the runner reads them as well: stdout carries only what a
//! command reports, so `--json` output stays one JSON document.
use std::{io::Write, time::Duration};

use serde::Serialize;

pub fn github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Opens a collapsible group in the Actions log; closes it when dropped.
pub struct Group(bool);

pub fn group(title: &str) -> Group {
    let on = github_actions();
    if on {
        eprintln!("::group::{title}");
    } else {
        eprintln!("==> {title}");
    }
    Group(on)
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.0 {
            eprintln!("::endgroup::");
        }
    }
}

/// An error for people, and an annotation on the run when under Actions
/// (on stderr: never inside a `--json` report).
pub fn error(message: &str) {
    if github_actions() {
        eprintln!("{}", annotation(message));
    }
}

/// `::error::` and the message on one line: newlines must be escaped.
fn annotation(message: &str) -> String {
    format!(
        "::error::{}",
        message
            .replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    )
}

/// What a `--json` run that failed before its report prints on stdout, so
/// stdout is JSON whether the command succeeded or not.
pub fn print_json_error(message: &str) {
    print_json(&serde_json::json!({ "error": message }));
}

pub fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serialisable report")
    );
}

/// A small table: a header row and rows of cells, aligned for the terminal
/// and rendered as markdown for the Actions job summary.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Table {
            title: title.to_owned(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render_text(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain(std::iter::once(&self.header[i]))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = vec![line(&self.header)];
        out.push(
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("  "),
        );
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }

    pub fn render_markdown(&self) -> String {
        let esc = |c: &String| c.replace('|', "\\|");
        let mut out = format!(
            "### {}\n\n| {} |\n|{}|\n",
            self.title,
            self.header.join(" | "),
            vec!["---"; self.header.len()].join("|")
        );
        for row in &self.rows {
            out.push_str(&format!(
                "| {} |\n",
                row.iter().map(esc).collect::<Vec<_>>().join(" | ")
            ));
        }
        out
    }

    /// Prints for people and appends to the Actions job summary when there is one.
    pub fn emit(&self) {
        eprintln!("\n{}\n{}", self.title, self.render_text());
        append_job_summary(&self.render_markdown());
    }
}

pub fn append_job_summary(markdown: &str) {
    let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY") else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(file, "{markdown}");
    }
}

pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_escapes_markdown_pipes() {
        let mut t = Table::new("Steps", &["step", "result"]);
        t.row(vec!["fmt".into(), "ok".into()]);
        t.row(vec!["clippy|x".into(), "failed".into()]);
        assert_eq!(
            t.render_text(),
            "step      result\n--------  ------\nfmt       ok\nclippy|x  failed"
        );
        assert!(t.render_markdown().contains("| clippy\\|x | failed |"));
    }

    #[test]
    fn annotations_are_one_line() {
        assert_eq!(annotation("a\nb 100%"), "::error::a%0Ab 100%25");
    }
}
