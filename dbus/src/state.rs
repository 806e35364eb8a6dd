//! The states of API v1, one type each: what the `State` property of a Snapshot object and the
//! `state` of a volume in `Manager.Status()` say. The daemon's registry stores [`SetState`]
//! under the same names, and clients parse the bus strings back into these types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A snapshot set's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetState {
    #[default]
    Active,
    Invalid,
    Overflow,
    /// A rollback is pending: the merge starts when the volumes are next assembled.
    MergeScheduled,
    /// The merge runs (and resumes after a restart).
    Merging,
    MergeFailed,
}

impl SetState {
    pub const ALL: [SetState; 6] = [
        SetState::Active,
        SetState::Invalid,
        SetState::Overflow,
        SetState::MergeScheduled,
        SetState::Merging,
        SetState::MergeFailed,
    ];

    /// The bus string (also the registry's JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            SetState::Active => "active",
            SetState::Invalid => "invalid",
            SetState::Overflow => "overflow",
            SetState::MergeScheduled => "merge-scheduled",
            SetState::Merging => "merging",
            SetState::MergeFailed => "merge-failed",
        }
    }

    /// Whether a rollback was asked for and has not finished: the set is to be merged when its
    /// volumes are next assembled (a failed merge is retried too).
    pub fn rollback_requested(self) -> bool {
        matches!(self, SetState::MergeScheduled | SetState::Merging | SetState::MergeFailed)
    }
}

/// A volume's state in `Manager.Status()`: the most pressing state of the sets that cover it,
/// else whether it is assembled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    #[default]
    Active,
    Inactive,
    Merging,
    MergeScheduled,
    MergeFailed,
}

impl VolumeState {
    pub const ALL: [VolumeState; 5] = [
        VolumeState::Active,
        VolumeState::Inactive,
        VolumeState::Merging,
        VolumeState::MergeScheduled,
        VolumeState::MergeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Active => "active",
            VolumeState::Inactive => "inactive",
            VolumeState::Merging => "merging",
            VolumeState::MergeScheduled => "merge-scheduled",
            VolumeState::MergeFailed => "merge-failed",
        }
    }
}

/// A state string this version of the API does not define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown state {:?} (a newer snapbackd?)", self.0)
    }
}

impl std::error::Error for UnknownState {}

macro_rules! string_forms {
    ($type:ty) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                Self::ALL
                    .into_iter()
                    .find(|state| state.as_str() == s)
                    .ok_or_else(|| UnknownState(s.to_string()))
            }
        }
    };
}

string_forms!(SetState);
string_forms!(VolumeState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_match_serde() {
        for state in SetState::ALL {
            assert_eq!(state.as_str().parse::<SetState>(), Ok(state));
            assert_eq!(serde_json::to_string(&state).ok(), Some(format!("\"{state}\"")));
        }
        for state in VolumeState::ALL {
            assert_eq!(state.to_string().parse::<VolumeState>(), Ok(state));
        }
        assert_eq!("Merging".parse::<SetState>(), Err(UnknownState("Merging".into())));
        assert!("inactive".parse::<SetState>().is_err(), "a volume state, not a set state");
    }
}
