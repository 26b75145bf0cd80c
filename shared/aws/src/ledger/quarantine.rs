//! The quarantine store: entries written once per kind, path and bytes, listed newest first,
//! read whole, deleted after a redrive.

use kore_ingest_core::delivery::Outcome;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::quarantine::{
    QuarantineEntry, QuarantineSummary, QuarantinedPayload, quarantine_or_retry,
};
use tokio::time::Instant;

use super::items::attrs::{Item, key};
use super::items::quarantine::{
    entry_items, inline_payload, part_bytes, parts_complete, parts_of, payload_of, summary_of,
};
use super::keys;
use super::table::{Query, Table};

/// The quarantine of one ledger table.
#[derive(Debug, Clone)]
pub struct QuarantineStore {
    table: Table,
}

impl QuarantineStore {
    pub fn new(table: Table) -> Self {
        QuarantineStore { table }
    }

    /// Keeps the first `keep` bytes of the payload (all of it when `keep` is at least its
    /// length, with its full size and SHA-256 otherwise) and returns the id of the whole
    /// payload. Already quarantined from the same path: the first copy, with its origin, is
    /// kept.
    pub async fn put(
        &self,
        entry: QuarantineEntry<'_>,
        keep: usize,
    ) -> Result<String, LedgerError> {
        let items = entry_items(&entry, keep);
        // Parts first: an entry that exists always has its parts. Writing them again (a
        // retry) writes the same bytes, since the id is a hash of them.
        futures::future::try_join_all(items.parts.into_iter().map(|part| self.table.put(part)))
            .await?;
        self.table.put_if_absent(items.entry).await?;
        Ok(items.id)
    }

    /// Quarantines a whole payload on the write path, or hands the input back to be retried
    /// (`kore_ingest_core::quarantine::quarantine_or_retry`).
    pub async fn put_or_retry(
        &self,
        entry: QuarantineEntry<'_>,
        deadline: Option<Instant>,
    ) -> Outcome {
        let reason = entry.reason.clone();
        quarantine_or_retry(&reason, deadline, || self.put(entry, usize::MAX)).await
    }

    /// The quarantine, newest first, at most `limit` entries.
    pub async fn list(&self, limit: usize) -> Result<Vec<QuarantineSummary>, LedgerError> {
        self.table
            .newest(keys::TIME_INDEX, "gsi1pk", keys::QUARANTINE_INDEX_PK, limit)
            .await?
            .iter()
            .map(summary_of)
            .collect()
    }

    /// One quarantined payload, in full.
    pub async fn get(&self, id: &str) -> Result<Option<QuarantinedPayload>, LedgerError> {
        let pk = keys::quarantine_pk(id);
        let Some(item) = self.table.get(key(pk.clone(), keys::SINGLE)).await? else {
            return Ok(None);
        };
        let payload = match inline_payload(&item)? {
            Some(payload) => payload,
            None => self.read_parts(&pk, &item).await?,
        };
        payload_of(&item, payload).map(Some)
    }

    /// The parts of a parted entry, joined in order and checked against the entry.
    async fn read_parts(&self, pk: &str, item: &Item) -> Result<Vec<u8>, LedgerError> {
        let parts = self
            .table
            .query(Query::prefix(pk.to_owned(), keys::PART_SK_PREFIX).consistent(true))
            .await?;
        let mut payload = Vec::new();
        for part in &parts {
            payload.extend_from_slice(part_bytes(pk, part)?);
        }
        if !parts_complete(item, &payload) {
            return Err(LedgerError::CorruptItem {
                pk: pk.to_owned(),
                reason: "the payload's parts do not add up to it".into(),
            });
        }
        Ok(payload)
    }

    /// Removes a quarantined payload (after a successful redrive): the entry first, so that
    /// it is gone at once, then its parts.
    pub async fn delete(&self, id: &str) -> Result<(), LedgerError> {
        let pk = keys::quarantine_pk(id);
        let old = self.table.delete(key(pk.clone(), keys::SINGLE)).await?;
        let parts = old.as_ref().map_or(0, parts_of);
        for index in 0..parts as usize {
            self.table
                .delete(key(pk.clone(), keys::part_sk(index)))
                .await?;
        }
        Ok(())
    }
}
