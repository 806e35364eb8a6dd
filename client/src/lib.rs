//! `snapbackctl`: the command line client of snapbackd, and offline tools for COW stores.
//!
//! `main.rs` only parses and exits; each command lives in its own module under [`commands`].
//! The clap definitions ([`cli`]) are public so that `xtask gen` can render completions
//! and man pages from them.

// Tests may unwrap: a panic there is a failed assertion.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bus;
pub mod cli;
pub mod commands;
pub mod error;
pub mod events;
pub mod model;
pub mod output;
pub mod polkit_agent;

use std::io::Write;

pub use error::Error;

/// Exit statuses (documented in `--help`, the man page and docs/snapbackctl.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any error (daemon, bus, I/O, a `cow check` that found problems).
    pub const ERROR: u8 = 1;
    /// Usage error (clap's own status for bad arguments).
    pub const USAGE: u8 = 2;
    /// The rollback was accepted but scheduled for next boot because an origin is busy.
    pub const SCHEDULED: u8 = 3;
}

/// How a successful command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: exit status 0.
    Done,
    /// A rollback was scheduled for next boot: exit status 3.
    Scheduled,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => exit::OK,
            Outcome::Scheduled => exit::SCHEDULED,
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`snapbackctl list | head`) is not an error.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Io { context: "writing to standard output".into(), source: e })
        }
        _ => Ok(()),
    }
}

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> Result<Outcome, Error> {
    commands::run(cli.command, cli.output.format(), !cli.no_ask_password)
}
