//! `snapbackctl cow …`: offline work on a COW store, through the engine, without the daemon.

use crate::cli::{CowCommand, Format};
use crate::error::Error;
use crate::Outcome;

pub fn run(cmd: CowCommand, format: Format) -> Result<Outcome, Error> {
    let _ = format;
    let path = match cmd {
        CowCommand::Inspect { cow }
        | CowCommand::Check { cow }
        | CowCommand::Export { cow, .. }
        | CowCommand::Merge { cow, .. } => cow,
    };
    Err(Error::Cow { path, message: "offline commands are not available in this build yet".into() })
}
