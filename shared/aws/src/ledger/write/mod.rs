//! The write path: a batch's inputs recorded exactly once.
//!
//! - `recorder`: the order of things (duplicate pre-check, quarantine of what does not
//!   parse, closed periods, commits, copies) and each input's outcome;
//! - `plan`: new usage events cut into units of one SIM and day, packed into transactions
//!   and waves, decided without touching DynamoDB;
//! - `commit`: the transactions, until every event has an outcome;
//! - `copies`: copies of stored events (new deliveries, conflicts).

mod commit;
mod copies;
mod plan;
mod recorder;
mod stored;

pub use recorder::Recorder;
