//! From backend events (delivered on backend threads) to bus signals, properties and logs.

use std::sync::Arc;
use std::time::Duration;

use snapback_dbus::snapshot_path;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use zbus::Connection;

use super::logging::{MESSAGE_ID_MERGE_FINISHED, MESSAGE_ID_SNAPSHOT_INVALIDATED};
use super::manager::Manager;
use super::publish::{manager_emitter, refresh, refresh_all, unpublish};
use super::shared::Shared;
use super::{notify, status};
use crate::backend::{BackendEvent, EventSink};

/// How often every set is re-read, for figures that change without an event (COW usage).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A sink for the backend and the receiving end for `pump`.
pub fn channel() -> (EventSink, UnboundedReceiver<BackendEvent>) {
    let (tx, rx) = unbounded_channel();
    let sink: EventSink = Arc::new(move |event| {
        // Fails only after the pump ended, i.e. during shutdown: nothing left to tell.
        let _ = tx.send(event);
    });
    (sink, rx)
}

/// Handle events in order until the backend drops its sink.
pub async fn pump(
    shared: Arc<Shared>,
    connection: Connection,
    mut events: UnboundedReceiver<BackendEvent>,
) {
    while let Some(event) = events.recv().await {
        handle(&shared, &connection, event).await;
    }
}

async fn handle(shared: &Arc<Shared>, connection: &Connection, event: BackendEvent) {
    match event {
        BackendEvent::SnapshotChanged(id) => {
            let _mutation = shared.mutations.lock().await;
            if let Err(e) = refresh(shared, connection, id).await {
                tracing::warn!(snapshot_id = id, "cannot refresh snapshot set: {e}");
            }
        }
        BackendEvent::SnapshotRemoved(id) => {
            let _mutation = shared.mutations.lock().await;
            unpublish(shared, connection, id).await;
        }
        BackendEvent::MergeFinished { id, ok, message } => {
            {
                // Properties (or the object's removal) first, so a client woken by the signal
                // reads the final state.
                let _mutation = shared.mutations.lock().await;
                if let Err(e) = refresh(shared, connection, id).await {
                    tracing::warn!(snapshot_id = id, "cannot refresh snapshot set: {e}");
                }
            }
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
            match manager_emitter(connection) {
                Ok(emitter) => {
                    let path = snapshot_path(id);
                    if let Err(e) =
                        Manager::merge_finished(&emitter, path.as_ref(), ok, &message).await
                    {
                        tracing::warn!(snapshot_id = id, "cannot emit MergeFinished: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot emit MergeFinished: {e}"),
            }
        }
        BackendEvent::SnapshotInvalidated { id, volume, reason } => {
            tracing::warn!(
                message_id = MESSAGE_ID_SNAPSHOT_INVALIDATED,
                snapshot_id = id,
                volume = %volume,
                "snapshot set {id} invalidated on volume {volume}: {reason}; the volume keeps \
                 working, the snapshot can only be deleted"
            );
            let _mutation = shared.mutations.lock().await;
            if let Err(e) = refresh(shared, connection, id).await {
                tracing::warn!(snapshot_id = id, "cannot refresh snapshot set: {e}");
            }
        }
    }
}

/// Re-read every set periodically and keep systemd's STATUS= line current.
pub async fn poll(shared: Arc<Shared>, connection: Connection) {
    let mut last_summary = String::new();
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let sets = {
            let _mutation = shared.mutations.lock().await;
            refresh_all(&shared, &connection).await
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

/// Ping systemd's watchdog at half its interval; runs only when WATCHDOG_USEC is set for us.
pub async fn watchdog() {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    loop {
        notify::watchdog_ping();
        tokio::time::sleep(interval).await;
    }
}
