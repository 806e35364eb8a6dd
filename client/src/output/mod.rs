//! Presentation: human units, relative times, aligned tables and the JSON envelope.

pub mod json;
pub mod progress;
pub mod table;
pub mod time;
pub mod units;
