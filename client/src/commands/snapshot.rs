//! `snapbackctl snapshot`: take a snapshot set.

use serde_json::json;

use crate::bus::Client;
use crate::cli::{Format, SnapshotArgs};
use crate::error::Error;
use crate::Outcome;

pub async fn run(client: &Client, format: Format, args: SnapshotArgs) -> Result<Outcome, Error> {
    let path = client
        .create_snapshot(
            &args.volumes,
            &args.description,
            args.important,
            &args.userdata,
            args.cow_size,
        )
        .await?;
    let view = client.read_snapshot(&path).await?;
    let text = match format {
        Format::Human => format!(
            "created snapshot set {} of {} ({} of COW space)\n",
            view.id,
            view.volumes.join(", "),
            crate::output::units::human_size(view.size_bytes)
        ),
        Format::Json => crate::output::json::pretty(json!({ "snapshot": view.to_json() })) + "\n",
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}
