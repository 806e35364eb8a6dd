//! `snapbackctl delete ID…`: remove snapshot sets. Every id is tried; the command fails if any
//! deletion failed, after reporting each failure.

use serde_json::json;

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::Outcome;

pub async fn run(client: &Client, format: Format, ids: &[u32]) -> Result<Outcome, Error> {
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for &id in ids {
        let path = snapback_dbus::snapshot_path(id);
        match client.manager().delete(&path.as_ref()).await {
            Ok(()) => deleted.push(id),
            Err(e) => failed.push((id, Error::from(e))),
        }
    }
    let text = match format {
        Format::Human => deleted.iter().map(|id| format!("deleted snapshot set {id}\n")).collect(),
        Format::Json => {
            let failures: Vec<_> =
                failed.iter().map(|(id, e)| json!({ "id": id, "error": e.to_string() })).collect();
            crate::output::json::pretty(json!({ "deleted": deleted, "failed": failures })) + "\n"
        }
    };
    crate::print(&text)?;
    match failed.len() {
        0 => Ok(Outcome::Done),
        1 => {
            let (id, e) = failed.remove(0);
            Err(Error::Failed(format!("snapshot set {id}: {e}")))
        }
        n => {
            for (id, e) in &failed {
                eprintln!("snapbackctl: snapshot set {id}: {e}");
            }
            Err(Error::Failed(format!("{n} of {} snapshot sets were not deleted", ids.len())))
        }
    }
}
