//! `snapbackctl`: parse, run, map the outcome to an exit status (see `snapbackctl::exit`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap exits with status 2 on usage errors, 0 for --help/--version.
    let cli = snapbackctl::cli::Cli::parse();
    match snapbackctl::run(cli) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("snapbackctl: {e}");
            ExitCode::from(snapbackctl::exit::ERROR)
        }
    }
}
