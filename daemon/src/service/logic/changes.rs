//! What the logic tells the bus: a list of changes, applied in order by the owner of the
//! connection (`service::bus`), which acknowledges each list once it is on the bus.
//!
//! The logic decides what changed by keeping [`Published`], the sets as it last announced
//! them, behind the mutation lock. A call sends its changes and waits for the acknowledgement
//! before it releases the lock and replies, so that a client finds the object of a path it was
//! just given, and no later change can be applied before an earlier one.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use crate::backend::{SnapshotId, SnapshotSetInfo};

/// One thing the bus must show.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A set appeared: add its object (InterfacesAdded), then emit SnapshotCreated.
    Created(SnapshotSetInfo),
    /// Properties of a published set changed: store `info`, emit PropertiesChanged for
    /// `properties`.
    Changed { info: SnapshotSetInfo, properties: Vec<Property> },
    /// A set is gone: remove its object (InterfacesRemoved), then emit SnapshotRemoved.
    Removed(SnapshotId),
    /// Manager.RollbackScheduled.
    RollbackScheduled(SnapshotId),
    /// Manager.MergeFinished.
    MergeFinished { id: SnapshotId, ok: bool, message: String },
}

/// The properties of a Snapshot object that can change (Id, Created and Volumes cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    Description,
    State,
    UsedBytes,
    SizeBytes,
    MergeProgress,
    Userdata,
    Important,
    BootEntry,
}

impl Property {
    /// The properties whose values differ between `old` and `new`, in introspection order.
    pub fn changed(old: &SnapshotSetInfo, new: &SnapshotSetInfo) -> Vec<Property> {
        let checks = [
            (Property::Description, old.description != new.description),
            (Property::State, old.state != new.state),
            (Property::UsedBytes, old.used_bytes != new.used_bytes),
            (Property::SizeBytes, old.size_bytes != new.size_bytes),
            (Property::MergeProgress, old.merge_progress != new.merge_progress),
            (Property::Userdata, old.userdata != new.userdata),
            (Property::Important, old.important != new.important),
            (Property::BootEntry, old.boot_entry != new.boot_entry),
        ];
        checks.into_iter().filter(|(_, changed)| *changed).map(|(p, _)| p).collect()
    }
}

/// The sets as last announced on the bus. Only the holder of the mutation lock has it.
#[derive(Debug, Default)]
pub struct Published {
    sets: BTreeMap<SnapshotId, SnapshotSetInfo>,
}

impl Published {
    /// The change that brings the bus to `info`: Created for a new set, Changed when a
    /// property differs, nothing when the bus already shows it.
    pub fn upsert(&mut self, info: SnapshotSetInfo) -> Option<Change> {
        match self.sets.insert(info.id, info.clone()) {
            None => Some(Change::Created(info)),
            Some(old) => {
                let properties = Property::changed(&old, &info);
                (!properties.is_empty()).then_some(Change::Changed { info, properties })
            }
        }
    }

    /// Removed when the bus shows the set, nothing otherwise (a set is announced gone once).
    pub fn remove(&mut self, id: SnapshotId) -> Option<Change> {
        self.sets.remove(&id).map(|_| Change::Removed(id))
    }

    /// The changes that bring the bus to exactly `sets`.
    pub fn sync_all(&mut self, sets: &[SnapshotSetInfo]) -> Vec<Change> {
        let mut changes: Vec<Change> =
            sets.iter().filter_map(|info| self.upsert(info.clone())).collect();
        let gone: Vec<SnapshotId> =
            self.sets.keys().filter(|id| !sets.iter().any(|s| s.id == **id)).copied().collect();
        changes.extend(gone.into_iter().filter_map(|id| self.remove(id)));
        changes
    }
}

/// A list of changes and where to say that they are on the bus.
#[derive(Debug)]
pub struct Batch {
    pub changes: Vec<Change>,
    pub applied: oneshot::Sender<()>,
}

/// The logic's end of the queue to the owner of the connection.
#[derive(Debug, Clone)]
pub struct ChangeQueue {
    sender: mpsc::UnboundedSender<Batch>,
}

/// A queue and the owner's end of it.
pub fn queue() -> (ChangeQueue, mpsc::UnboundedReceiver<Batch>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (ChangeQueue { sender }, receiver)
}

impl ChangeQueue {
    /// Hands `changes` to the owner and waits until they are on the bus.
    pub async fn apply(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let (applied, done) = oneshot::channel();
        if self.sender.send(Batch { changes, applied }).is_err() {
            // The owner stops only when the service does: nobody is left to tell.
            tracing::debug!("the bus owner is gone; changes not shown");
            return;
        }
        if done.await.is_err() {
            tracing::debug!("the bus owner stopped before showing the changes");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::SetState;

    fn set(id: SnapshotId) -> SnapshotSetInfo {
        SnapshotSetInfo {
            id,
            description: "d".into(),
            created_us: 1,
            volumes: vec!["root".into()],
            state: SetState::Active,
            used_bytes: 0,
            size_bytes: 10,
            merge_progress: 0.0,
            userdata: BTreeMap::new(),
            important: false,
            boot_entry: None,
        }
    }

    #[test]
    fn a_set_is_created_once_changed_by_property_and_removed_once() {
        let mut published = Published::default();
        assert_eq!(published.upsert(set(1)), Some(Change::Created(set(1))));
        assert_eq!(published.upsert(set(1)), None, "nothing changed");
        let mut merging = set(1);
        merging.state = SetState::Merging;
        merging.merge_progress = 0.5;
        assert_eq!(
            published.upsert(merging.clone()),
            Some(Change::Changed {
                info: merging,
                properties: vec![Property::State, Property::MergeProgress]
            })
        );
        assert_eq!(published.remove(1), Some(Change::Removed(1)));
        assert_eq!(published.remove(1), None);
    }

    #[test]
    fn sync_all_adds_the_new_and_removes_the_vanished() {
        let mut published = Published::default();
        published.upsert(set(1));
        published.upsert(set(2));
        let changes = published.sync_all(&[set(2), set(3)]);
        assert_eq!(changes, vec![Change::Created(set(3)), Change::Removed(1)]);
        assert!(published.sync_all(&[set(2), set(3)]).is_empty());
    }
}
