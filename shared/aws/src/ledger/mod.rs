//! The exactly-once usage ledger on DynamoDB.
//!
//! Every event is one item keyed on its dedupe key, written with a conditional put. A new
//! usage event is written in one transaction with its share of the usage rollups and the
//! booking list that lets it be found again, so a usage count can never be applied twice or
//! lost, even if the process dies between calls. Copies of an event that arrive again
//! (retries, the other provider) are found by one batched consistent read before anything
//! is written and only add their provider and path to the event's `deliveries` (unless its
//! day is archived: then they are quarantined); a copy whose `data` differs is a conflict
//! and is quarantined.
//!
//! The layers, each depending only on those above it:
//!
//! - `error`, `config`, `keys`: how SDK errors read, the ledger's settings, every key;
//! - `items`: each item type attribute by attribute, and back;
//! - `table`: the table's primitives (conditional puts, queries, batched reads,
//!   transactions and their retries), with the capacity they consumed;
//! - `write`, `read`, `quarantine`, `callbacks`, `closes`, `documents`, `pushes`, `rebuild`, `stream`: one
//!   concern each, on a `Table`;
//! - `usage_ledger`: [`UsageLedger`], which hands each concern its table and implements the
//!   functions' port.

mod alerts;
mod archived;
mod cache;
mod callbacks;
mod closes;
mod config;
mod definition;
mod documents;
mod error;
mod items;
pub mod keys;
mod pushes;
mod quarantine;
mod read;
mod rebuild;
mod stream;
mod table;
mod usage_ledger;
mod write;

pub use alerts::{Alerts, AppliedRules, ApplyError, SeenSim};
pub use archived::ArchivedDays;
pub use callbacks::{Callbacks, Unforwarded};
pub use closes::Closes;
pub use config::LedgerConfig;
pub use definition::{TABLE_DEFINITION_JSON, TableDefinition, create_table};
pub use documents::{Document, Documents};
pub use items::attrs::Item;
pub use items::callback::SimStatusEntry;
pub use items::event::event_item as event_record_item;
pub use items::rollup::rollup_item;
pub use pushes::Pushes;
pub use quarantine::QuarantineStore;
pub use read::events::Events;
pub use read::rollups::{CellNames, Rollups};
pub use read::sims::SimActivity;
pub use rebuild::{RebuildReport, Rebuilder, RollupDifference};
pub use stream::{
    inserted_alert, inserted_callback, inserted_event, is_alert_insert, is_callback_insert,
    is_event_insert,
};
pub use table::Table;
pub use usage_ledger::UsageLedger;
pub use write::Recorder;
