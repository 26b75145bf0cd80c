//! Super SIM Connection Events (and Event Streams test events) as KORE and Twilio send them:
//! CloudEvents 1.0 in JSON, one object or an array, `data` as an object or as a string holding
//! JSON. [`parse_events`] turns the bytes of a Kinesis record or of a webhook body into typed
//! [`ConnectionEvent`]s; a bad element of an array fails alone, with its raw text kept so that it
//! can be quarantined.
//!
//! - [`types`]: the event's typed form and its errors;
//! - [`parse`]: envelope, provider, key and booking instant;
//! - [`fields`]: `data`'s fields, each error naming its field;
//! - [`canonical`]: the canonical form the data hash is taken over.

mod canonical;
mod fields;
mod parse;
mod types;

pub use parse::{from_stored, parse_event, parse_events};

/// The largest payload a function takes: a webhook body at `MAX_BODY_BYTES`'s ceiling (a
/// Function URL takes 6 MB; a Kinesis record holds 1 MiB). [`parse_events`] refuses larger
/// ones, so `replay` and `quarantine redrive` quarantine what the functions would never
/// see, rather than store `data` that reading back (`rebuild`, `evidence`, `export`) refuses.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
pub use types::{
    ConnectionEvent, ConnectionKind, DataHash, DataSession, DataVolume, DedupeKey, EventError,
    EventKind, KindName, MAX_AMOUNT, Network, ParsedItem, Provider, RejectedEvent,
};

#[cfg(test)]
mod tests;
