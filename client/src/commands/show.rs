//! `snapbackctl show ID`: one snapshot set in detail.

use serde_json::{json, Value};

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::model::SnapshotView;
use crate::output::{table::key_values, time, units};
use crate::Outcome;

pub async fn run(client: &Client, format: Format, id: u32) -> Result<Outcome, Error> {
    let snapshot = client.snapshot(id).await?;
    let text = match format {
        Format::Human => render_human(&snapshot, time::now_usec()),
        Format::Json => crate::output::json::pretty(to_json(&snapshot)) + "\n",
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

/// `{"snapshot": {...}}` (inside the schema envelope).
pub fn to_json(snapshot: &SnapshotView) -> Value {
    json!({ "snapshot": snapshot.to_json() })
}

/// Key/value block; `now_usec` makes relative times reproducible in tests.
pub fn render_human(s: &SnapshotView, now_usec: u64) -> String {
    let userdata = s.userdata.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    key_values(&[
        ("ID", s.id.to_string()),
        ("Description", s.description.clone()),
        (
            "Created",
            format!(
                "{} ({})",
                time::rfc3339(s.created_usec),
                time::relative(s.created_usec, now_usec)
            ),
        ),
        ("Volumes", s.volumes.join(", ")),
        ("State", s.state_label()),
        (
            "COW used",
            format!(
                "{} of {} ({})",
                units::human_size(s.used_bytes),
                units::human_size(s.size_bytes),
                units::percent(s.used_bytes, s.size_bytes)
            ),
        ),
        ("Important", if s.important { "yes" } else { "no" }.to_owned()),
        (
            "Boot entry",
            if s.boot_entry.is_empty() { "none".to_owned() } else { s.boot_entry.clone() },
        ),
        ("Userdata", userdata),
        ("Object", s.path.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_block() {
        let now = 1_795_463_869_000_000u64;
        let s = SnapshotView {
            id: 7,
            path: "/org/snapback/Snapback1/snapshot/7".into(),
            description: "before dnf upgrade".into(),
            created_usec: now - 90 * 1_000_000,
            volumes: vec!["root".into(), "var".into()],
            state: snapback_dbus::SetState::MergeScheduled,
            used_bytes: 256 << 20,
            size_bytes: 1 << 30,
            userdata: [("tx".to_owned(), "42".to_owned()), ("by".to_owned(), "dnf".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            render_human(&s, now),
            "         ID: 7
Description: before dnf upgrade
    Created: 2026-11-23T19:56:19Z (1 minute ago)
    Volumes: root, var
      State: merge-scheduled
   COW used: 256.0 MiB of 1.0 GiB (25%)
  Important: no
 Boot entry: none
   Userdata: by=dnf tx=42
     Object: /org/snapback/Snapback1/snapshot/7
"
        );
    }
}
