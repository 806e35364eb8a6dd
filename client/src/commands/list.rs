//! `snapbackctl list`: every snapshot set, oldest first.

use serde_json::{json, Value};

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::model::SnapshotView;
use crate::output::{table::Table, time, units::human_size};
use crate::Outcome;

pub async fn run(client: &Client, format: Format) -> Result<Outcome, Error> {
    let snapshots = client.snapshots().await?;
    let text = match format {
        Format::Human => render_human(&snapshots, time::now_usec()),
        Format::Json => crate::output::json::pretty(to_json(&snapshots)) + "\n",
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

/// `{"snapshots": [...]}` (inside the schema envelope).
pub fn to_json(snapshots: &[SnapshotView]) -> Value {
    json!({ "snapshots": snapshots.iter().map(SnapshotView::to_json).collect::<Vec<_>>() })
}

/// The table; `now_usec` makes relative times reproducible in tests.
pub fn render_human(snapshots: &[SnapshotView], now_usec: u64) -> String {
    if snapshots.is_empty() {
        return "No snapshot sets.\n".to_owned();
    }
    let mut table =
        Table::new(&["ID", "CREATED", "STATE", "VOLUMES", "USED", "SIZE", "DESCRIPTION"])
            .align_right(0)
            .align_right(4)
            .align_right(5);
    for s in snapshots {
        let mut description = s.description.clone();
        if s.important {
            description = format!("[important] {description}").trim_end().to_owned();
        }
        table.row(vec![
            s.id.to_string(),
            time::relative(s.created_usec, now_usec),
            s.state_label(),
            s.volumes.join(","),
            human_size(s.used_bytes),
            human_size(s.size_bytes),
            description,
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Vec<SnapshotView> {
        let now = 1_795_463_869_000_000u64;
        vec![
            SnapshotView {
                id: 1,
                path: "/org/snapback/Snapback1/snapshot/1".into(),
                description: "before dnf upgrade".into(),
                created_usec: now - 3 * 3_600 * 1_000_000,
                volumes: vec!["root".into(), "var".into()],
                state: snapback_dbus::SetState::Active,
                used_bytes: 3 * 1024 * 1024 / 2,
                size_bytes: 1 << 30,
                important: true,
                ..Default::default()
            },
            SnapshotView {
                id: 12,
                path: "/org/snapback/Snapback1/snapshot/12".into(),
                created_usec: now - 5 * 60 * 1_000_000,
                volumes: vec!["root".into()],
                state: snapback_dbus::SetState::Merging,
                merge_progress: 0.426,
                used_bytes: 0,
                size_bytes: 64 << 20,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn human_table() {
        let now = 1_795_463_869_000_000u64;
        assert_eq!(
            render_human(&sample(), now),
            "\
ID  CREATED        STATE        VOLUMES      USED      SIZE  DESCRIPTION
 1  3 hours ago    active       root,var  1.5 MiB   1.0 GiB  [important] before dnf upgrade
12  5 minutes ago  merging 42%  root          0 B  64.0 MiB
"
        );
    }

    #[test]
    fn empty_list_says_so() {
        assert_eq!(render_human(&[], 0), "No snapshot sets.\n");
        assert_eq!(
            crate::output::json::line(to_json(&[])),
            r#"{"schema":"snapbackctl/1","snapshots":[]}"#
        );
    }

    #[test]
    fn json_keys() {
        let v = crate::output::json::document(to_json(&sample()));
        assert_eq!(v["schema"], "snapbackctl/1");
        let first = &v["snapshots"][0];
        assert_eq!(first["id"], 1);
        assert_eq!(first["created"], "2026-11-23T16:57:49Z");
        assert_eq!(first["volumes"], json!(["root", "var"]));
        assert_eq!(first["important"], true);
        assert_eq!(v["snapshots"][1]["merge_progress"], 0.426);
    }
}
