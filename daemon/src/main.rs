//! `snapbackd`: see `snapbackd --help`; the logic lives in the library (`snapbackd::cli`).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    snapbackd::cli::run(snapbackd::cli::Cli::parse())?;
    Ok(())
}
