//! Cleanup policy: which snapshot sets to delete, and why.
//!
//! Automatic snapshots (one per dnf transaction) pile up, and a full pool invalidates
//! snapshots, so the daemon prunes them the way snapper users expect:
//!
//! - **number**: keep at most `number_limit` ordinary sets and, separately,
//!   `number_limit_important` important ones; the oldest go first;
//! - **space**: while the pool is used above `pool_usage_limit_percent`, delete the oldest
//!   deletable sets (ordinary ones before important ones) until it would be below;
//! - **invalid**: a set whose COW overflowed can no longer be rolled back to; delete it;
//! - never delete a set younger than `min_age_seconds`, nor one with a pending, running or
//!   failed rollback (`merge-scheduled`, `merging`, `merge-failed`).
//!
//! This module only decides ([`plan`]) and runs the deletions through a caller-given function
//! ([`execute`]), so the policy is tested without a pool. The service calls both after each
//! new snapshot set and every `interval_seconds`.
//!
//! ```toml
//! [cleanup]
//! enabled = true
//! number_limit = 10
//! number_limit_important = 5
//! min_age_seconds = 1800
//! pool_usage_limit_percent = 80
//! delete_invalid = true
//! interval_seconds = 3600
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backend::{PoolStatus, SetState, SnapshotId, SnapshotSetInfo};

/// The `[cleanup]` table of `snapback.toml`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// Run cleanup at all.
    pub enabled: bool,
    /// Most ordinary (not important) snapshot sets kept; 0 turns the number rule off for them.
    pub number_limit: u32,
    /// Most important snapshot sets kept; 0 turns the number rule off for them.
    pub number_limit_important: u32,
    /// No rule deletes a set younger than this (seconds since it was taken).
    pub min_age_seconds: u64,
    /// Space rule threshold: pool used / pool size, in percent (1..=100); 100 turns it off.
    pub pool_usage_limit_percent: u8,
    /// Delete sets whose state is `invalid` (their COW overflowed; no rollback possible).
    pub delete_invalid: bool,
    /// Seconds between periodic runs (cleanup also runs after each new set); 0 = only then.
    pub interval_seconds: u64,
}

impl Default for CleanupConfig {
    /// snapper's defaults for its number cleanup (NUMBER_LIMIT=50 is for cheap btrfs
    /// snapshots; a COW pool is smaller, so 10), and a space limit that leaves room for the
    /// next transaction's copies.
    fn default() -> Self {
        CleanupConfig {
            enabled: true,
            number_limit: 10,
            number_limit_important: 5,
            min_age_seconds: 1800,
            pool_usage_limit_percent: 80,
            delete_invalid: true,
            interval_seconds: 3600,
        }
    }
}

/// A `[cleanup]` value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleanupConfigError {
    #[error("[cleanup] pool_usage_limit_percent = {0}: must be between 1 and 100")]
    UsageLimit(u8),
}

impl CleanupConfig {
    /// Checks values serde cannot: the service calls it after parsing the file.
    pub fn validate(&self) -> Result<(), CleanupConfigError> {
        if self.pool_usage_limit_percent == 0 || self.pool_usage_limit_percent > 100 {
            return Err(CleanupConfigError::UsageLimit(self.pool_usage_limit_percent));
        }
        Ok(())
    }
}

/// Which rule asked for a deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Invalid,
    Number,
    NumberImportant,
    Space,
}

/// One set to delete, with the sentence that goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: SnapshotId,
    pub rule: Rule,
    pub reason: String,
}

/// What one cleanup run decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// In the order they should run: invalid, number, then space deletions, oldest first.
    pub deletions: Vec<Deletion>,
    /// Set when the space rule could not bring usage under the limit with deletable sets:
    /// a warning for the log (the rest are too young or have a rollback pending).
    pub space_shortfall: Option<String>,
}

/// Why a set may not be deleted by any rule, if it may not.
fn protection(set: &SnapshotSetInfo, config: &CleanupConfig, now_us: u64) -> Option<String> {
    match set.state {
        SetState::MergeScheduled => return Some("a rollback is scheduled".into()),
        SetState::Merging => return Some("a rollback is running".into()),
        SetState::MergeFailed => {
            return Some("its rollback failed and awaits the administrator".into())
        }
        SetState::Active | SetState::Invalid | SetState::Overflow => {}
    }
    let age_us = now_us.saturating_sub(set.created_us);
    let min_age_us = config.min_age_seconds.saturating_mul(1_000_000);
    if age_us < min_age_us {
        return Some(format!(
            "it is {}s old, younger than min_age_seconds = {}",
            age_us / 1_000_000,
            config.min_age_seconds
        ));
    }
    None
}

/// Decides which sets to delete. `now_us` is microseconds since the Unix epoch (as `Created`).
///
/// Pure: the same inputs give the same plan. Sets are considered oldest first (by creation
/// time, then id), whatever order `sets` comes in.
pub fn plan(
    config: &CleanupConfig,
    sets: &[SnapshotSetInfo],
    pool: &PoolStatus,
    now_us: u64,
) -> Plan {
    let mut out = Plan::default();
    if !config.enabled {
        return out;
    }
    let mut ordered: Vec<&SnapshotSetInfo> = sets.iter().collect();
    ordered.sort_by_key(|s| (s.created_us, s.id));
    let deletable: Vec<bool> =
        ordered.iter().map(|s| protection(s, config, now_us).is_none()).collect();
    let mut chosen = vec![false; ordered.len()];

    if config.delete_invalid {
        for (i, set) in ordered.iter().enumerate() {
            if set.state == SetState::Invalid && deletable[i] {
                chosen[i] = true;
                out.deletions.push(Deletion {
                    id: set.id,
                    rule: Rule::Invalid,
                    reason: format!(
                        "snapshot set {} is invalid (its COW overflowed or failed): it can no \
                         longer be rolled back to",
                        set.id
                    ),
                });
            }
        }
    }

    for important in [false, true] {
        let (limit, rule, kind) = if important {
            (config.number_limit_important, Rule::NumberImportant, "important")
        } else {
            (config.number_limit, Rule::Number, "ordinary")
        };
        if limit == 0 {
            continue;
        }
        let group: Vec<usize> = (0..ordered.len())
            .filter(|&i| ordered[i].important == important && !chosen[i])
            .collect();
        let total = group.len();
        let mut excess = total.saturating_sub(limit as usize);
        for &i in &group {
            if excess == 0 {
                break;
            }
            if !deletable[i] {
                continue; // counted, but kept: a younger or rolling-back set is never deleted
            }
            chosen[i] = true;
            excess -= 1;
            out.deletions.push(Deletion {
                id: ordered[i].id,
                rule,
                reason: format!(
                    "number limit: {total} {kind} snapshot sets, keeping the newest {limit}; \
                     set {} is among the oldest",
                    ordered[i].id
                ),
            });
        }
    }

    if config.pool_usage_limit_percent < 100 && pool.size_bytes > 0 {
        let limit_bytes = (u128::from(pool.size_bytes)
            * u128::from(config.pool_usage_limit_percent)
            / 100) as u64;
        // A deleted set frees the COW space reserved for it.
        let freed: u64 = (0..ordered.len())
            .filter(|&i| chosen[i])
            .map(|i| ordered[i].size_bytes)
            .fold(0u64, u64::saturating_add);
        let mut projected = pool.used_bytes.saturating_sub(freed);
        if projected > limit_bytes {
            let start_percent = percent(pool.used_bytes, pool.size_bytes);
            // Ordinary sets go before important ones; within each, oldest first.
            let candidates = (0..ordered.len())
                .filter(|&i| !ordered[i].important)
                .chain((0..ordered.len()).filter(|&i| ordered[i].important));
            for i in candidates {
                if projected <= limit_bytes {
                    break;
                }
                if chosen[i] || !deletable[i] {
                    continue;
                }
                chosen[i] = true;
                projected = projected.saturating_sub(ordered[i].size_bytes);
                out.deletions.push(Deletion {
                    id: ordered[i].id,
                    rule: Rule::Space,
                    reason: format!(
                        "pool {}% used, above pool_usage_limit_percent = {}: deleting the \
                         oldest {}set {} frees {} bytes",
                        start_percent,
                        config.pool_usage_limit_percent,
                        if ordered[i].important { "important " } else { "" },
                        ordered[i].id,
                        ordered[i].size_bytes
                    ),
                });
            }
            if projected > limit_bytes {
                out.space_shortfall = Some(format!(
                    "pool stays {}% used after cleanup, above pool_usage_limit_percent = {}: \
                     the remaining snapshot sets are younger than min_age_seconds or have a \
                     rollback pending",
                    percent(projected, pool.size_bytes),
                    config.pool_usage_limit_percent
                ));
            }
        }
    }
    out
}

fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (u128::from(part) * 100 / u128::from(whole)) as u64
}

/// What happened when a plan ran.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub deleted: Vec<SnapshotId>,
    /// Sets whose deletion failed, with the error; the others were still tried.
    pub failed: Vec<(SnapshotId, String)>,
}

/// Runs every deletion of `plan` through `delete`, logging each with its reason. A failure is
/// logged and recorded, and the next deletion is still tried.
pub fn execute<E: fmt::Display>(
    plan: &Plan,
    mut delete: impl FnMut(SnapshotId) -> Result<(), E>,
) -> Report {
    let mut report = Report::default();
    for d in &plan.deletions {
        match delete(d.id) {
            Ok(()) => {
                tracing::info!(snapshot_id = d.id, reason = %d.reason, "cleanup: deleted snapshot set");
                report.deleted.push(d.id);
            }
            Err(e) => {
                tracing::warn!(
                    snapshot_id = d.id,
                    reason = %d.reason,
                    error = %e,
                    "cleanup: could not delete snapshot set"
                );
                report.failed.push((d.id, e.to_string()));
            }
        }
    }
    if let Some(warning) = &plan.space_shortfall {
        tracing::warn!("cleanup: {warning}");
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    const HOUR_US: u64 = 3_600_000_000;
    const NOW: u64 = 1_000 * HOUR_US;
    const MIB: u64 = 1 << 20;

    fn set(id: SnapshotId, hours_old: u64, important: bool) -> SnapshotSetInfo {
        SnapshotSetInfo {
            id,
            description: format!("set {id}"),
            created_us: NOW - hours_old * HOUR_US,
            volumes: vec!["root".into()],
            state: SetState::Active,
            used_bytes: 0,
            size_bytes: 100 * MIB,
            merge_progress: 0.0,
            userdata: BTreeMap::new(),
            important,
            boot_entry: None,
        }
    }

    fn pool(size_mib: u64, used_mib: u64) -> PoolStatus {
        PoolStatus {
            path: PathBuf::from("/pool"),
            size_bytes: size_mib * MIB,
            used_bytes: used_mib * MIB,
        }
    }

    fn roomy() -> PoolStatus {
        pool(100_000, 0)
    }

    fn ids(plan: &Plan) -> Vec<SnapshotId> {
        plan.deletions.iter().map(|d| d.id).collect()
    }

    fn config(number_limit: u32, number_limit_important: u32) -> CleanupConfig {
        CleanupConfig { number_limit, number_limit_important, ..CleanupConfig::default() }
    }

    #[test]
    fn number_rule_deletes_the_oldest_beyond_the_limit() {
        // Given out of order: the policy sorts by creation time.
        let sets = vec![set(3, 10, false), set(1, 30, false), set(4, 5, false), set(2, 20, false)];
        let p = plan(&config(2, 5), &sets, &roomy(), NOW);
        assert_eq!(ids(&p), vec![1, 2]);
        assert!(p.deletions.iter().all(|d| d.rule == Rule::Number));
        assert_eq!(
            p.deletions[0].reason,
            "number limit: 4 ordinary snapshot sets, keeping the newest 2; set 1 is among the oldest"
        );
        assert_eq!(p.space_shortfall, None);
    }

    #[test]
    fn important_sets_have_their_own_limit() {
        let sets = vec![
            set(1, 50, true),
            set(2, 40, false),
            set(3, 30, true),
            set(4, 20, true),
            set(5, 10, false),
        ];
        let p = plan(&config(2, 2), &sets, &roomy(), NOW);
        assert_eq!(ids(&p), vec![1]);
        assert_eq!(p.deletions[0].rule, Rule::NumberImportant);
        assert!(p.deletions[0].reason.contains("3 important snapshot sets, keeping the newest 2"));
    }

    #[test]
    fn zero_limit_turns_the_number_rule_off() {
        let sets: Vec<_> = (1..=30).map(|i| set(i, 100 - u64::from(i), false)).collect();
        assert!(plan(&config(0, 0), &sets, &roomy(), NOW).deletions.is_empty());
    }

    #[test]
    fn young_sets_are_kept_and_still_counted() {
        // min age 1800 s: sets 3 and 4 (10 minutes old) are protected.
        let mut sets = vec![set(1, 5, false), set(2, 4, false)];
        let mut young = set(3, 0, false);
        young.created_us = NOW - 600_000_000;
        let mut younger = set(4, 0, false);
        younger.created_us = NOW - 300_000_000;
        sets.push(young);
        sets.push(younger);
        // limit 1: three must go, but only the two old ones may.
        let p = plan(&config(1, 5), &sets, &roomy(), NOW);
        assert_eq!(ids(&p), vec![1, 2]);
    }

    #[test]
    fn sets_with_a_rollback_are_never_deleted() {
        let mut sets =
            vec![set(1, 50, false), set(2, 40, false), set(3, 30, false), set(4, 20, false)];
        sets[0].state = SetState::MergeScheduled;
        sets[1].state = SetState::Merging;
        sets[2].state = SetState::MergeFailed;
        let p = plan(&config(1, 1), &sets, &pool(1000, 990), NOW);
        // Number rule wants 3 gone, space rule wants everything: only set 4 is deletable.
        assert_eq!(ids(&p), vec![4]);
        assert!(p.space_shortfall.is_some());
    }

    #[test]
    fn invalid_sets_are_deleted_first_and_leave_the_count() {
        let mut sets = vec![set(1, 50, false), set(2, 40, false), set(3, 30, false)];
        sets[1].state = SetState::Invalid;
        let p = plan(&config(2, 5), &sets, &roomy(), NOW);
        // Set 2 goes as invalid; then 2 ordinary sets remain, within the limit.
        assert_eq!(ids(&p), vec![2]);
        assert_eq!(p.deletions[0].rule, Rule::Invalid);
        assert!(p.deletions[0].reason.contains("can no longer be rolled back to"));

        let keep_invalid = CleanupConfig { delete_invalid: false, ..config(2, 5) };
        let p = plan(&keep_invalid, &sets, &roomy(), NOW);
        assert_eq!(ids(&p), vec![1], "without delete_invalid it is counted like any set");
    }

    #[test]
    fn space_rule_deletes_oldest_ordinary_first_until_under_the_limit() {
        // 1000 MiB pool, 950 used, limit 80% = 800: 150 MiB must go, 100 MiB per set -> 2 sets.
        let sets = vec![set(1, 50, true), set(2, 40, false), set(3, 30, false), set(4, 20, false)];
        let cfg = config(0, 0);
        let p = plan(&cfg, &sets, &pool(1000, 950), NOW);
        assert_eq!(ids(&p), vec![2, 3]);
        assert!(p.deletions.iter().all(|d| d.rule == Rule::Space));
        assert_eq!(
            p.deletions[0].reason,
            format!(
                "pool 95% used, above pool_usage_limit_percent = 80: deleting the oldest set 2 \
                 frees {} bytes",
                100 * MIB
            )
        );
        assert_eq!(p.space_shortfall, None);
    }

    #[test]
    fn space_rule_reaches_important_sets_after_ordinary_ones() {
        let sets = vec![set(1, 50, true), set(2, 40, false), set(3, 30, true)];
        let p = plan(&config(0, 0), &sets, &pool(1000, 1000), NOW);
        // 200 MiB must go: the ordinary set, then the oldest important one.
        assert_eq!(ids(&p), vec![2, 1]);
        assert!(p.deletions[1].reason.contains("oldest important set 1"));
    }

    #[test]
    fn space_rule_counts_what_the_number_rule_already_frees() {
        let sets = vec![set(1, 50, false), set(2, 40, false), set(3, 30, false)];
        // Number rule deletes set 1 (100 MiB): 880 -> 780, under 800: no space deletion.
        let p = plan(&config(2, 5), &sets, &pool(1000, 880), NOW);
        assert_eq!(ids(&p), vec![1]);
        assert_eq!(p.deletions[0].rule, Rule::Number);
    }

    #[test]
    fn space_shortfall_is_reported_when_nothing_more_may_go() {
        let mut young = set(1, 0, false);
        young.created_us = NOW - 1;
        let p = plan(&config(0, 0), &[young], &pool(1000, 900), NOW);
        assert!(p.deletions.is_empty());
        assert_eq!(
            p.space_shortfall.as_deref(),
            Some(
                "pool stays 90% used after cleanup, above pool_usage_limit_percent = 80: the \
                 remaining snapshot sets are younger than min_age_seconds or have a rollback \
                 pending"
            )
        );
    }

    #[test]
    fn disabled_cleanup_decides_nothing() {
        let sets: Vec<_> = (1..=20).map(|i| set(i, 100 - u64::from(i), false)).collect();
        let cfg = CleanupConfig { enabled: false, ..config(1, 1) };
        assert_eq!(plan(&cfg, &sets, &pool(1000, 1000), NOW), Plan::default());
    }

    #[test]
    fn an_empty_pool_figure_does_not_trigger_the_space_rule() {
        let p = plan(&config(0, 0), &[set(1, 50, false)], &pool(0, 0), NOW);
        assert!(p.deletions.is_empty());
        assert_eq!(p.space_shortfall, None);
    }

    #[test]
    fn execute_goes_on_after_a_failure_and_reports_it() {
        let sets = vec![set(1, 50, false), set(2, 40, false), set(3, 30, false), set(4, 20, false)];
        let p = plan(&config(1, 1), &sets, &roomy(), NOW);
        assert_eq!(ids(&p), vec![1, 2, 3]);
        let mut tried = Vec::new();
        let report = execute(&p, |id| {
            tried.push(id);
            if id == 2 {
                Err("device busy")
            } else {
                Ok(())
            }
        });
        assert_eq!(tried, vec![1, 2, 3]);
        assert_eq!(report.deleted, vec![1, 3]);
        assert_eq!(report.failed, vec![(2, "device busy".to_string())]);
    }

    #[test]
    fn config_keys_parse_from_toml_with_defaults_for_missing_ones() {
        let cfg: CleanupConfig = toml::from_str(
            "number_limit = 3\nmin_age_seconds = 60\npool_usage_limit_percent = 90\n",
        )
        .unwrap();
        assert_eq!(
            cfg,
            CleanupConfig {
                number_limit: 3,
                min_age_seconds: 60,
                pool_usage_limit_percent: 90,
                ..CleanupConfig::default()
            }
        );
        assert_eq!(cfg.validate(), Ok(()));
        assert!(toml::from_str::<CleanupConfig>("number_limt = 3\n").is_err(), "typo must fail");
        let bad: CleanupConfig = toml::from_str("pool_usage_limit_percent = 0\n").unwrap();
        assert_eq!(bad.validate(), Err(CleanupConfigError::UsageLimit(0)));
    }

    #[test]
    fn the_documented_example_parses_to_the_defaults() {
        let doc = "enabled = true\nnumber_limit = 10\nnumber_limit_important = 5\n\
                   min_age_seconds = 1800\npool_usage_limit_percent = 80\ndelete_invalid = true\n\
                   interval_seconds = 3600\n";
        assert_eq!(toml::from_str::<CleanupConfig>(doc).unwrap(), CleanupConfig::default());
    }
}
