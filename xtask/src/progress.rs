//! Progress for long steps: an indicatif spinner showing the latest output
//! line and the elapsed time on a terminal; plain streamed lines in CI logs,
//! where a spinner would only add noise.
use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Step {
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Step {
    /// `quiet` (used with `--json`) keeps stdout/stderr clean of step output.
    pub fn start(name: &str, quiet: bool) -> Step {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() && !quiet {
            if crate::report::github_actions() {
                // A collapsible group per phase in the Actions log.
                println!("::group::{name}");
            }
            eprintln!("--> {name}");
        }
        Step {
            name: name.to_owned(),
            started: Instant::now(),
            bar,
            quiet,
        }
    }

    /// One line of the step's own output.
    pub fn line(&self, line: &str) {
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        match &self.bar {
            Some(bar) => bar.set_message(line.to_owned()),
            None if !self.quiet => eprintln!("    {line}"),
            None => {}
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(self, outcome: &str) -> Duration {
        let elapsed = self.started.elapsed();
        let text = format!("{} {} in {:.1}s", self.name, outcome, elapsed.as_secs_f64());
        match &self.bar {
            Some(bar) => {
                bar.finish_with_message(format!("{outcome} in {:.1}s", elapsed.as_secs_f64()))
            }
            None if !self.quiet => {
                eprintln!("<-- {text}");
                if crate::report::github_actions() {
                    println!("::endgroup::");
                }
            }
            None => {}
        }
        elapsed
    }
}
