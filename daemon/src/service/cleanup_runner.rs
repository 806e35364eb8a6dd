//! Runs the cleanup policy (`crate::cleanup`) after each new snapshot set and periodically,
//! deleting through the backend like `Delete` does and taking the deleted sets off the bus.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zbus::Connection;

use super::publish::unpublish;
use super::shared::Shared;
use crate::cleanup;

/// One run. The caller holds `Shared::mutations`: deletions are mutations.
pub async fn run(shared: &Arc<Shared>, connection: &Connection) {
    let config = shared.cleanup.clone();
    if !config.enabled {
        return;
    }
    let now_us =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    let report = shared
        .read(move |backend| {
            let plan = cleanup::plan(&config, &backend.snapshots(), &backend.pool(), now_us);
            cleanup::execute(&plan, |id| backend.delete(id))
        })
        .await;
    match report {
        Ok(report) => {
            for id in report.deleted {
                unpublish(shared, connection, id).await;
            }
        }
        Err(e) => tracing::warn!("cleanup did not run: {e}"),
    }
}

/// Every `interval_seconds` (0 = never; cleanup still follows each new set).
pub async fn periodic(shared: Arc<Shared>, connection: Connection) {
    let seconds = shared.cleanup.interval_seconds;
    if !shared.cleanup.enabled || seconds == 0 {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let _mutation = shared.mutations.lock().await;
        run(&shared, &connection).await;
    }
}
