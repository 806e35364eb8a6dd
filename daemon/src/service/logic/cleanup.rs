//! Runs the cleanup policy (`crate::cleanup`) after each new snapshot set and periodically,
//! deleting through the backend like `Delete` does; the deleted sets leave the bus.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Change, Published, Service};
use crate::cleanup;

impl Service {
    /// One run; the caller holds the mutation lock (deletions are mutations) and puts the
    /// returned removals on the bus.
    pub(super) async fn run_cleanup(&self, published: &mut Published) -> Vec<Change> {
        let config = self.cleanup.clone();
        if !config.enabled {
            return Vec::new();
        }
        let now_us =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let report = self
            .read(move |backend| {
                let plan = cleanup::plan(&config, &backend.snapshots(), &backend.pool(), now_us);
                cleanup::execute(&plan, |id| backend.delete(id))
            })
            .await;
        match report {
            Ok(report) => {
                report.deleted.into_iter().filter_map(|id| published.remove(id)).collect()
            }
            Err(e) => {
                tracing::warn!("cleanup did not run: {e}");
                Vec::new()
            }
        }
    }
}

/// Every `interval_seconds` (0 = never; cleanup still follows each new set).
pub async fn periodic(service: Arc<Service>) {
    let seconds = service.cleanup.interval_seconds;
    if !service.cleanup.enabled || seconds == 0 {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let mut published = service.lock().await;
        let changes = service.run_cleanup(&mut published).await;
        service.show(changes).await;
    }
}
