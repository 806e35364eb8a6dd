//! From backend events (delivered on backend threads) to changes on the bus and logs, and the
//! periodic re-read for figures that change without an event (COW usage).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{status, Change, Service};
use crate::backend::{BackendEvent, EventSink, SnapshotId};
use crate::service::logging::{MESSAGE_ID_MERGE_FINISHED, MESSAGE_ID_SNAPSHOT_INVALIDATED};
use crate::service::notify;

/// How often every set is re-read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A sink for the backend and the receiving end for [`pump`].
pub fn channel() -> (EventSink, UnboundedReceiver<BackendEvent>) {
    let (tx, rx) = unbounded_channel();
    let sink: EventSink = Arc::new(move |event| {
        // Fails only after the pump ended, i.e. during shutdown: nothing left to tell.
        let _ = tx.send(event);
    });
    (sink, rx)
}

/// Handles events in order until the backend drops its sink.
pub async fn pump(service: Arc<Service>, mut events: UnboundedReceiver<BackendEvent>) {
    while let Some(event) = events.recv().await {
        service.handle(event).await;
    }
}

impl Service {
    async fn handle(&self, event: BackendEvent) {
        match event {
            BackendEvent::SnapshotChanged(id) => self.refresh_after_event(id, Vec::new()).await,
            BackendEvent::SnapshotRemoved(id) => {
                let mut published = self.lock().await;
                let removed = published.remove(id);
                self.show(removed.into_iter().collect()).await;
            }
            BackendEvent::MergeFinished { id, ok, message } => {
                if ok {
                    let detail =
                        if message.is_empty() { String::new() } else { format!(": {message}") };
                    tracing::info!(
                        message_id = MESSAGE_ID_MERGE_FINISHED,
                        snapshot_id = id,
                        ok,
                        "merge of snapshot set {id} finished, the volumes are back at the snapshot{detail}"
                    );
                } else {
                    tracing::error!(
                        message_id = MESSAGE_ID_MERGE_FINISHED,
                        snapshot_id = id,
                        ok,
                        "merge of snapshot set {id} failed: {message}"
                    );
                }
                // Properties (or the object's removal) first, so a client woken by the signal
                // reads the final state.
                self.refresh_after_event(id, vec![Change::MergeFinished { id, ok, message }]).await;
            }
            BackendEvent::SnapshotInvalidated { id, volume, reason } => {
                tracing::warn!(
                    message_id = MESSAGE_ID_SNAPSHOT_INVALIDATED,
                    snapshot_id = id,
                    volume = %volume,
                    "snapshot set {id} invalidated on volume {volume}: {reason}; the volume keeps \
                     working, the snapshot can only be deleted"
                );
                self.refresh_after_event(id, Vec::new()).await;
            }
        }
    }

    /// Re-reads set `id` and shows what changed, then `then`.
    async fn refresh_after_event(&self, id: SnapshotId, then: Vec<Change>) {
        let mut published = self.lock().await;
        let mut changes = Vec::new();
        match self.refresh(&mut published, id).await {
            Ok(change) => changes.extend(change),
            Err(e) => tracing::warn!(snapshot_id = id, "cannot refresh snapshot set: {e}"),
        }
        changes.extend(then);
        self.show(changes).await;
    }
}

/// Re-reads every set periodically and keeps systemd's STATUS= line current.
pub async fn poll(service: Arc<Service>) {
    let mut last_summary = String::new();
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let sets = {
            let mut published = service.lock().await;
            match service.refresh_all(&mut published).await {
                Ok((sets, changes)) => {
                    service.show(changes).await;
                    Ok(sets)
                }
                Err(e) => Err(e),
            }
        };
        match sets {
            Ok(sets) => {
                let summary = status::summary(&sets);
                if summary != last_summary {
                    notify::status(&summary);
                    last_summary = summary;
                }
            }
            Err(e) => tracing::warn!("cannot re-read snapshot sets: {e}"),
        }
    }
}
