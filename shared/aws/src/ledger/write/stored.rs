//! What became of one new event's write, and the two answers every writer gives the same
//! way: a stored event's digest when its condition failed, and retry-or-quarantine when
//! DynamoDB refused the write.

use kore_ingest_core::delivery::Outcome;
use kore_ingest_core::event::DedupeKey;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind};
use kore_ingest_core::stored::StoredDigest;
use tokio::time::Instant;

use super::plan::Pending;
use crate::ledger::items::attrs::Item;
use crate::ledger::items::event::{digest_of, event_key};
use crate::ledger::quarantine::QuarantineStore;
use crate::ledger::table::Table;

/// What became of one new event's write.
#[derive(Debug, Clone)]
pub enum Stored {
    New,
    /// Already stored (by another copy, another writer): the stored hash and deliveries.
    Existing(StoredDigest),
    /// Not stored: retry, or quarantined for good.
    Failed(Outcome),
}

/// The stored digest of `key`: from the item a failed condition returned, or, if DynamoDB
/// did not return it, a consistent read.
pub async fn existing_or_fetch(
    table: &Table,
    old: Option<Item>,
    key: &DedupeKey,
) -> Result<StoredDigest, LedgerError> {
    if let Some(old) = old {
        return Ok(digest_of(&old));
    }
    match table.get(event_key(key)).await? {
        Some(item) => Ok(digest_of(&item)),
        None => Err(LedgerError::Retryable {
            operation: "GetItem",
            code: None,
            message: format!("event {key} failed its condition but was not found"),
        }),
    }
}

/// A write of one event failed: retry for a passing reason, else the quarantine (DynamoDB
/// refused the item itself, e.g. over 400 KB).
pub async fn refused(
    quarantine: &QuarantineStore,
    pending: &Pending<'_>,
    error: LedgerError,
    deadline: Option<Instant>,
) -> Outcome {
    if error.is_retryable() {
        return Outcome::Retry {
            reason: error.to_string(),
        };
    }
    let entry = QuarantineEntry {
        kind: QuarantineKind::Event,
        payload: pending.event.raw.as_bytes(),
        reason: error.to_string(),
        delivery: pending.delivery,
        related_event: Some(&pending.event.key),
    };
    quarantine.put_or_retry(entry, deadline).await
}
