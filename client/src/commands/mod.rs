//! One module per command. The D-Bus commands share one connection and one runtime.

pub mod boot;
pub mod cancel;
pub mod cow;
pub mod delete;
pub mod list;
pub mod mount;
pub mod rollback;
pub mod show;
pub mod snapshot;
pub mod status;
pub mod watch;

use crate::bus::Client;
use crate::cli::{Command, Format};
use crate::error::Error;
use crate::polkit_agent::TtyAgent as PolkitAgent;
use crate::Outcome;

/// Runs one command. The D-Bus ones run on a single-threaded runtime (the client does one thing
/// at a time; zbus's connection tasks run on it too); `cow` runs offline, without a connection.
pub fn run(command: Command, format: Format, ask_password: bool) -> Result<Outcome, Error> {
    if let Command::Cow(cmd) = command {
        return cow::run(cmd, format);
    }
    let mutates = matches!(
        command,
        Command::Snapshot(_)
            | Command::Rollback { .. }
            | Command::Cancel { .. }
            | Command::Delete { .. }
            | Command::Mount { .. }
            | Command::Umount { .. }
            | Command::Boot(crate::cli::BootCommand::Regenerate)
    );
    // Kept until the command is done: every call it makes may need the agent.
    let _agent = (mutates && ask_password).then(PolkitAgent::start_if_useful).flatten();
    let runtime =
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .enable_io()
            .build()
            .map_err(|source| Error::Io { context: "starting the async runtime".into(), source })?;
    runtime.block_on(async move {
        let client = Client::connect().await?;
        match command {
            Command::Status => status::run(&client, format).await,
            Command::List => list::run(&client, format).await,
            Command::Show { id } => show::run(&client, format, id).await,
            Command::Snapshot(args) => snapshot::run(&client, format, args).await,
            Command::Rollback { id, wait } => rollback::run(&client, format, id, wait).await,
            Command::Cancel { id } => cancel::run(&client, format, id).await,
            Command::Delete { ids } => delete::run(&client, format, &ids).await,
            Command::Mount { id, volume, dir } => {
                mount::mount(&client, format, id, &volume, &dir).await
            }
            Command::Umount { id, target } => mount::umount(&client, format, id, &target).await,
            Command::Watch { id } => watch::run(&client, format, id).await,
            Command::Boot(cmd) => boot::run(&client, format, cmd).await,
            // Handled above; kept here so that the match stays exhaustive without a panic.
            Command::Cow(cmd) => cow::run(cmd, format),
        }
    })
}
