//! `snapbackctl boot list|regenerate`: the boot-menu entries ("Roll back to snapshot N") of the
//! sets that recorded /boot.

use serde_json::{json, Value};

use crate::bus::Client;
use crate::cli::{BootCommand, Format};
use crate::error::Error;
use crate::model::SnapshotView;
use crate::output::table::Table;
use crate::Outcome;

pub async fn run(client: &Client, format: Format, command: BootCommand) -> Result<Outcome, Error> {
    let text = match command {
        BootCommand::List => {
            let snapshots = client.snapshots().await?;
            match format {
                Format::Human => render_list(&snapshots),
                Format::Json => crate::output::json::pretty(list_json(&snapshots)) + "\n",
            }
        }
        BootCommand::Regenerate => {
            let written = client.manager().refresh_boot_entries().await?;
            match format {
                Format::Human if written.is_empty() => {
                    "No snapshot set has a boot entry.\n".to_owned()
                }
                Format::Human => written.iter().map(|path| format!("wrote {path}\n")).collect(),
                Format::Json => crate::output::json::pretty(json!({ "written": written })) + "\n",
            }
        }
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

/// `{"boot_entries": [{"id", "description", "state", "entry"}]}`: the sets that have one.
pub fn list_json(snapshots: &[SnapshotView]) -> Value {
    let entries: Vec<Value> = snapshots
        .iter()
        .filter(|s| !s.boot_entry.is_empty())
        .map(|s| json!({ "id": s.id, "description": s.description, "state": s.state, "entry": s.boot_entry }))
        .collect();
    json!({ "boot_entries": entries })
}

pub fn render_list(snapshots: &[SnapshotView]) -> String {
    let with_entry: Vec<&SnapshotView> =
        snapshots.iter().filter(|s| !s.boot_entry.is_empty()).collect();
    if with_entry.is_empty() {
        return "No snapshot set has a boot entry (only sets of the root volume that recorded /boot do).\n".to_owned();
    }
    let mut table = Table::new(&["ID", "STATE", "ENTRY", "DESCRIPTION"]).align_right(0);
    for s in with_entry {
        table.row(vec![
            s.id.to_string(),
            s.state_label(),
            s.boot_entry.clone(),
            s.description.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets() -> Vec<SnapshotView> {
        vec![
            SnapshotView {
                id: 1,
                state: snapback_dbus::SetState::Active,
                description: "data only".into(),
                ..Default::default()
            },
            SnapshotView {
                id: 2,
                state: snapback_dbus::SetState::MergeScheduled,
                description: "dnf upgrade".into(),
                boot_entry: "/boot/loader/entries/snapback-rollback-2.conf".into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn only_sets_with_an_entry_are_listed() {
        assert_eq!(
            render_list(&sets()),
            "ID  STATE            ENTRY                                          DESCRIPTION\n \
             2  merge-scheduled  /boot/loader/entries/snapback-rollback-2.conf  dnf upgrade\n"
        );
        let json = list_json(&sets());
        assert_eq!(json["boot_entries"].as_array().unwrap().len(), 1);
        assert_eq!(
            json["boot_entries"][0]["entry"],
            "/boot/loader/entries/snapback-rollback-2.conf"
        );
        assert!(render_list(&sets()[..1]).starts_with("No snapshot set has a boot entry"));
    }
}
