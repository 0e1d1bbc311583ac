use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Every --json flag is spelled so; a failure then still answers in JSON.
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let cli = xtask::cli::Cli::parse();
    // Before the runtime's threads exist: it may put an ssh wrapper on PATH.
    let ssh = xtask::ssh::from_environment();
    let outcome = match ssh {
        Ok(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(xtask::cli::run(cli))),
        Err(ref e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            xtask::report::error(&format!("{e:#}"));
            eprintln!("error: {e:#}");
            if json {
                xtask::report::print_json_error(&format!("{e:#}"));
            }
            ExitCode::FAILURE
        }
    };
    // The identity's folder (key included) goes before the process does.
    drop(ssh);
    code
}
