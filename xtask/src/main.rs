use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Every --json flag is spelled so; a failure then still answers in JSON.
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let cli = xtask::cli::Cli::parse();
    match xtask::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            xtask::report::error(&format!("{e:#}"));
            eprintln!("error: {e:#}");
            if json {
                xtask::report::print_json_error(&format!("{e:#}"));
            }
            ExitCode::FAILURE
        }
    }
}
