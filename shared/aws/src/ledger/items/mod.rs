//! Each item type the ledger writes, attribute by attribute, and back. Sizes matter:
//! DynamoDB bills a write per started kilobyte (twice in a transaction), so the event record
//! and the rollup are kept under 1 KB in the shape real traffic has, with short attribute
//! names and nothing that can be derived from the stored `data`.

pub mod attrs;
pub mod booking_list;
pub mod callback;
pub mod close;
pub mod event;
pub mod quarantine;
pub mod rollup;
