//! `snapbackctl rollback ID [--wait]`: merge a snapshot set into its origins.
//!
//! Exit status 3 when the daemon scheduled the merge for next boot (an origin is busy).

use std::collections::HashMap;

use serde_json::json;

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::events::{Change, Event, Events};
use crate::output::progress::{self, Bars};
use crate::Outcome;

pub async fn run(client: &Client, format: Format, id: u32, wait: bool) -> Result<Outcome, Error> {
    let path = snapback_dbus::snapshot_path(id);
    // Subscribe before the call: a short merge can finish before the reply arrives.
    let events = if wait { Some(Events::subscribe(client.connection()).await?) } else { None };
    let view = client.snapshot(id).await?;
    let result = client.manager().rollback(&path.as_ref(), HashMap::new()).await?;
    match result.as_str() {
        snapback_dbus::rollback::SCHEDULED => {
            let text = match format {
                Format::Human => format!("{}\n", scheduled_sentence(id, &view.volumes)),
                Format::Json => json_line(json!({ "id": id, "result": "scheduled" })),
            };
            crate::print(&text)?;
            Ok(Outcome::Scheduled)
        }
        snapback_dbus::rollback::MERGING => match events {
            Some(events) => wait_for_merge(events, format, id, &path).await,
            None => {
                let text = match format {
                    Format::Human => format!(
                        "rollback to snapshot set {id} started; follow it with `snapbackctl watch {id}`\n"
                    ),
                    Format::Json => json_line(json!({ "id": id, "result": "merging" })),
                };
                crate::print(&text)?;
                Ok(Outcome::Done)
            }
        },
        other => Err(Error::Protocol(format!("Rollback returned {other:?}"))),
    }
}

fn json_line(body: serde_json::Value) -> String {
    crate::output::json::pretty(body) + "\n"
}

/// "volume root is busy: rollback … scheduled for next boot".
pub fn scheduled_sentence(id: u32, volumes: &[String]) -> String {
    let subject = match volumes {
        [one] => format!("volume {one} is busy"),
        many => format!("a volume of {} is busy", many.join(", ")),
    };
    format!("{subject}: rollback to snapshot set {id} scheduled for next boot")
}

/// Follows the merge from signals until MergeFinished (or the set's removal).
async fn wait_for_merge(
    mut events: Events,
    format: Format,
    id: u32,
    path: &zbus::OwnedObjectPath,
) -> Result<Outcome, Error> {
    let bars = Bars::new();
    let bar = (format == Format::Human).then(|| bars.add(format!("rollback {id}"), 0.0));
    let outcome = loop {
        let Some(event) = events.next().await else {
            break Err(Error::Protocol("the bus connection closed during the merge".into()));
        };
        let event = event?;
        if event.path() != path {
            continue;
        }
        match event {
            Event::Changed { changes, .. } => {
                for change in changes {
                    if let (Change::MergeProgress(f), Some(bar)) = (&change, &bar) {
                        progress::set(bar, *f);
                    }
                }
            }
            Event::MergeFinished { ok: true, .. } | Event::Removed(_) => break Ok(()),
            Event::MergeFinished { ok: false, message, .. } => {
                break Err(Error::MergeFailed { id, message });
            }
            Event::Created(_) | Event::RollbackScheduled(_) => {}
        }
    };
    if let Some(bar) = &bar {
        if outcome.is_ok() {
            progress::set(bar, 1.0);
        }
        bar.finish_and_clear();
    }
    outcome?;
    let text = match format {
        Format::Human => format!("rollback to snapshot set {id} finished\n"),
        Format::Json => json_line(json!({ "id": id, "result": "merged" })),
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_sentences() {
        assert_eq!(
            scheduled_sentence(3, &["root".into()]),
            "volume root is busy: rollback to snapshot set 3 scheduled for next boot"
        );
        assert_eq!(
            scheduled_sentence(4, &["root".into(), "var".into()]),
            "a volume of root, var is busy: rollback to snapshot set 4 scheduled for next boot"
        );
    }
}
