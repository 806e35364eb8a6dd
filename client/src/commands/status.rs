//! `snapbackctl status`: backend, volumes, pool usage and merges.

use serde_json::Value;

use crate::bus::Client;
use crate::cli::Format;
use crate::error::Error;
use crate::model::StatusView;
use crate::output::{table::key_values, table::Table, units};
use crate::Outcome;

pub async fn run(client: &Client, format: Format) -> Result<Outcome, Error> {
    let status = client.status().await?;
    let text = match format {
        Format::Human => render_human(&status),
        Format::Json => crate::output::json::pretty(to_json(&status)) + "\n",
    };
    crate::print(&text)?;
    Ok(Outcome::Done)
}

/// The status body (inside the schema envelope).
pub fn to_json(status: &StatusView) -> Value {
    status.to_json()
}

fn ids(ids: &[u32]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// Summary lines, then the volume table.
pub fn render_human(s: &StatusView) -> String {
    let mut out = key_values(&[
        ("Daemon", format!("snapbackd {}", s.version)),
        ("Backend", s.backend.clone()),
        (
            "Pool",
            format!(
                "{} used of {} ({}){}",
                units::human_size(s.pool_used_bytes),
                units::human_size(s.pool_size_bytes),
                units::percent(s.pool_used_bytes, s.pool_size_bytes),
                if s.pool_path.is_empty() { String::new() } else { format!(" on {}", s.pool_path) }
            ),
        ),
        ("Merging", ids(&s.running_merges)),
        (
            "Next boot",
            if s.pending_merges.is_empty() {
                "nothing scheduled".to_owned()
            } else {
                format!("rollback to {}", ids(&s.pending_merges))
            },
        ),
    ]);
    out.push('\n');
    if s.volumes.is_empty() {
        out.push_str("No volumes configured.\n");
        return out;
    }
    let mut table =
        Table::new(&["VOLUME", "STATE", "SIZE", "AUTO", "DEVICE", "BACKING"]).align_right(2);
    for v in &s.volumes {
        table.row(vec![
            v.name.clone(),
            v.state.to_string(),
            units::human_size(v.size_bytes),
            if v.auto { "yes" } else { "no" }.to_owned(),
            if v.device.is_empty() { "-".to_owned() } else { v.device.clone() },
            v.backing.clone(),
        ]);
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VolumeView;

    #[test]
    fn human_summary_and_volume_table() {
        let s = StatusView {
            version: "0.1.0".into(),
            backend: "userspace".into(),
            volumes: vec![
                VolumeView {
                    name: "root".into(),
                    device: "/dev/loop3".into(),
                    backing: "/var/lib/snapback/root.img".into(),
                    state: snapback_dbus::VolumeState::Active,
                    size_bytes: 8 << 30,
                    auto: true,
                },
                VolumeView {
                    name: "var".into(),
                    backing: "/dev/vdb".into(),
                    state: snapback_dbus::VolumeState::Inactive,
                    size_bytes: 512 << 20,
                    ..Default::default()
                },
            ],
            pool_path: "/var/lib/snapback/pool.img".into(),
            pool_size_bytes: 4 << 30,
            pool_used_bytes: 1 << 30,
            pending_merges: vec![3],
            running_merges: vec![],
        };
        assert_eq!(
            render_human(&s),
            "   Daemon: snapbackd 0.1.0
  Backend: userspace
     Pool: 1.0 GiB used of 4.0 GiB (25%) on /var/lib/snapback/pool.img
  Merging: none
Next boot: rollback to 3

VOLUME  STATE          SIZE  AUTO  DEVICE      BACKING
root    active      8.0 GiB  yes   /dev/loop3  /var/lib/snapback/root.img
var     inactive  512.0 MiB  no    -           /dev/vdb
"
        );
        let v = crate::output::json::document(to_json(&s));
        assert_eq!(v["pool"]["size_bytes"], 4u64 << 30);
        assert_eq!(v["volumes"][1]["device"], "");
        assert_eq!(v["pending_merges"][0], 3);
    }
}
