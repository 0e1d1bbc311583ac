use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = xtask::cli::Cli::parse();
    match xtask::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            xtask::report::error(&format!("{e:#}"));
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
