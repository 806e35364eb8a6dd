//! The snapback exception engine: Linux dm-snapshot's snapshot / snapshot-origin /
//! snapshot-merge semantics over the kernel's persistent exception store format.
//!
//! No D-Bus, no async runtime: everything here is synchronous and testable alone.
