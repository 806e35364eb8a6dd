//! `snapbackctl cancel ID`: un-schedule a rollback planned for next boot.

use serde_json::json;

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::Outcome;

pub async fn run(client: &Client, format: Format, id: u32) -> Result<Outcome, Error> {
    let path = snapback_dbus::snapshot_path(id);
    client.manager().cancel_rollback(&path.as_ref()).await?;
    let text = match format {
        Format::Human => {
            format!("cancelled the rollback to snapshot set {id}; the set stays as a snapshot\n")
        }
        Format::Json => crate::output::json::pretty(json!({ "id": id, "cancelled": true })) + "\n",
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}
