//! The archived days: a day whose final seal is being made or was made. Every writer reads
//! them (through a copy at most `closed_periods_ttl` old) and quarantines an event booked on
//! one instead of storing it: its day is in the archive, and its ledger copy may have
//! expired, so storing it would count it twice. A copy of a stored event of the day that
//! would add a delivery is quarantined too, so the record stays what the seal holds. The archiver marks a day before it reads the
//! day for its final seal, and waits until every writer has seen the mark.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{day_text, timestamp};

use super::cache::TtlCache;
use super::items::attrs::{key, s};
use super::keys;
use super::table::{Query, Table};

/// The archived days of one ledger table.
#[derive(Debug, Clone)]
pub struct ArchivedDays {
    table: Table,
    cache: Arc<TtlCache<BTreeSet<NaiveDate>>>,
}

impl ArchivedDays {
    pub fn new(table: Table) -> Self {
        ArchivedDays {
            table,
            cache: Arc::default(),
        }
    }

    /// Every archived day, read consistently.
    pub async fn all(&self) -> Result<BTreeSet<NaiveDate>, LedgerError> {
        let query = Query::partition(keys::ARCHIVED_PK.to_owned()).consistent(true);
        Ok(self
            .table
            .query(query)
            .await?
            .iter()
            .filter_map(|item| super::items::attrs::string_attr(item, "sk")?.parse().ok())
            .collect())
    }

    /// The archived days from the per-process copy.
    pub async fn cached(&self) -> Result<Arc<BTreeSet<NaiveDate>>, LedgerError> {
        let ttl = self.table.config().closed_periods_ttl;
        self.cache.get(ttl, self.all()).await
    }

    /// Marks `day` archived: from when every writer has seen it, its events are quarantined.
    pub async fn mark(&self, day: NaiveDate) -> Result<(), LedgerError> {
        let mut item = key(keys::ARCHIVED_PK, day_text(day));
        item.insert("marked_at".into(), s(timestamp(Utc::now())));
        self.table.put(item).await
    }

    /// Takes `day` in again: its events are stored once more.
    pub async fn unmark(&self, day: NaiveDate) -> Result<(), LedgerError> {
        self.table
            .delete(key(keys::ARCHIVED_PK, day_text(day)))
            .await
            .map(|_| ())
    }
}
