//! The read side. Every read is a key lookup or a query; nothing scans the table.
//!
//! - `rollups`: usage records (any range, bucket, grouping and filter) from the day
//!   partitions of the rollups;
//! - `events`: stored events through the SIMs' booking lists and the time index;
//! - `sims`: SIMs active over a range, from their status history and booked usage.

pub mod events;
pub mod rollups;
pub mod sims;
