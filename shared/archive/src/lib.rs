//! The archive of settled days: a day's events, as the ledger's `export` reads them, written as
//! Parquet parts with deterministic names and bytes, and the manifest that is written last.
//! Sealing a day again from the same events gives the same bytes, so a seal is exactly once by
//! construction: a part or a manifest is the same object whether it is written once or twice.
//!
//! The schema keeps to what Athena and DuckDB both read without surprises: signed 64-bit
//! integers, UTF-8 strings, a list of strings, and timestamps in milliseconds, adjusted to UTC
//! (no unsigned, INT96 or nanosecond types).

mod manifest;
mod parts;
mod read;
mod rollup;
mod row;

pub use manifest::{
    BookingKey, BookingSum, DayTables, MANIFESTS, Manifest, PartEntry, SealedDay, TABLES,
    TableEntry, day_of_manifest_key, manifest_key, part_key,
};
pub use parts::{ArchiveError, Part, Table, part_name, write_parts};
pub use read::read_events;
pub use rollup::RollupRow;
pub use row::ArchiveRow;
