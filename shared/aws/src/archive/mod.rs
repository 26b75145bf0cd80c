//! The archive of settled days on a store ([`ArchiveStore`]): a day's tables read back from
//! the ledger as `export` reads them, sealed by `kore_ingest_archive` and written parts first,
//! manifest last; checked again against the ledger; listed by their manifests. The archiver
//! function and `kore-usage archive` both call this, and nothing else writes the archive.

mod store;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kore_ingest_archive::{
    ArchiveError, ArchiveRow, DayTables, Manifest, RollupRow, day_of_manifest_key, part_key,
    read_events,
};
use kore_ingest_core::event::ConnectionEvent;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::retention;
use kore_ingest_core::stored::StoredEvent;
use kore_ingest_core::time::{TimeRange, midnight};

use sha2::{Digest, Sha256};

use crate::ledger::UsageLedger;

pub use kore_ingest_archive::{MANIFESTS, TABLES, manifest_key};
pub use store::{ArchiveStore, DEFAULT_ARCHIVE_URL, StoreError, s3_config};

/// Rows per part: about 25 MB of Parquet at the bench's shape, few objects per day.
pub const ROWS_PER_PART: usize = 100_000;

/// When `day` is settled enough to seal: `seal_after_days` after it ends.
pub fn settled_at(day: NaiveDate, seal_after_days: u64) -> DateTime<Utc> {
    midnight(day) + Duration::days(1) + retention::days(seal_after_days)
}

/// How long a final seal waits after marking its days archived: until every writer's copy
/// of the archived days (`closed_periods_ttl` old at most) shows the mark, and a batch that
/// read the copy just before has committed (the consumer's invocation, 120 s at most).
pub fn mark_settle_time(closed_periods_ttl: std::time::Duration) -> std::time::Duration {
    closed_periods_ttl + std::time::Duration::from_secs(150)
}

/// The `count` newest days settled at `now`, oldest first.
pub fn settled_days(now: DateTime<Utc>, seal_after_days: u64, count: u32) -> Vec<NaiveDate> {
    let newest = now.date_naive() - Duration::days(1) - retention::days(seal_after_days);
    (0..i64::from(count))
        .rev()
        .map(|back| newest - Duration::days(back))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiverError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] ArchiveError),
    #[error("{place} is missing or not what the manifest lists: seal the day again")]
    BadPart { place: String },
    #[error("{place} is not a manifest: {reason}")]
    BadManifest { place: String, reason: String },
    #[error(
        "{day}: not sealed finally: the ledger's events do not add up to its rollups (records expired or missing); {first}"
    )]
    Incomplete { day: NaiveDate, first: String },
}

/// The ledger's days, sealed into a store.
pub struct Archiver<'a> {
    pub ledger: &'a UsageLedger,
    pub store: &'a ArchiveStore,
}

impl Archiver<'_> {
    /// `day`'s tables as the ledger holds them now: its usage events in export order, its
    /// events without usage by time, its rollups by booking.
    pub async fn day_tables(&self, day: NaiveDate) -> Result<DayTables, ArchiverError> {
        // A settled day was written days ago: eventually consistent reads see all of it, and a
        // final seal still refuses events that do not add up to the (consistent) rollups.
        let events = self.ledger.events().eventually_consistent();
        let mut usage_events = Vec::new();
        for sim in self.ledger.rollups().sims_with_usage(&[day]).await? {
            let booked = events.of_sim_booked_on(&sim, day).await?;
            usage_events.extend(booked.iter().map(|(s, e)| ArchiveRow::of(s, e)));
        }
        let other_events = events
            .without_usage(day, TimeRange::day(day))
            .await?
            .iter()
            .map(|(s, e)| ArchiveRow::of(s, e))
            .collect();
        Ok(DayTables {
            usage_events,
            other_events,
            usage_rollups: self.rollups(day, None).await?,
        })
    }

    /// `day`'s rollups (only `sim`'s if given), by booking, read consistently.
    pub async fn rollups(
        &self,
        day: NaiveDate,
        sim: Option<&str>,
    ) -> Result<Vec<RollupRow>, ArchiverError> {
        let mut rollups: Vec<RollupRow> = self
            .ledger
            .rollups()
            .of_days(&[day], sim, true, None)
            .await?
            .iter()
            .map(|stored| RollupRow::of(&stored.totals()))
            .collect();
        rollups.sort_by_key(RollupRow::key);
        Ok(rollups)
    }

    /// Seals `day`, not finally: readers keep reading the ledger, and the day may be sealed
    /// again at any time.
    pub async fn seal(&self, day: NaiveDate) -> Result<Manifest, ArchiverError> {
        self.write_seal(day, false).await
    }

    /// Seals `days` finally: marks them archived (the writers quarantine their events from
    /// when they see the mark), waits `settle` for every writer to have seen it and what it
    /// had in flight to land, then seals each. A day whose seal fails is taken in again
    /// (unmarked) unless it was sealed finally before, so its events are stored as before;
    /// each day's result is returned.
    pub async fn seal_finally(
        &self,
        days: &[NaiveDate],
        settle: std::time::Duration,
    ) -> Result<Vec<(NaiveDate, Result<Manifest, ArchiverError>)>, ArchiverError> {
        let archived = self.ledger.archived_days();
        // A day sealed finally before stays archived whatever becomes of this seal; a mark
        // left by a run that stopped half way is not an archived day.
        let mut sealed_before = Vec::new();
        for day in days {
            if self.manifest(*day).await?.is_some_and(|m| m.is_final) {
                sealed_before.push(*day);
            }
        }
        let take_in = |day: NaiveDate| {
            let archived = archived.clone();
            let keep = sealed_before.contains(&day);
            async move {
                if !keep && let Err(error) = archived.unmark(day).await {
                    tracing::error!(%day, %error, "a day not sealed stays marked archived: run `kore-usage archive reopen`");
                }
            }
        };
        for (marked, day) in days.iter().enumerate() {
            if let Err(error) = archived.mark(*day).await {
                for day in &days[..marked] {
                    take_in(*day).await;
                }
                return Err(error.into());
            }
        }
        tokio::time::sleep(settle).await;
        let mut results = Vec::with_capacity(days.len());
        for day in days {
            let sealed = self.write_seal(*day, true).await;
            if sealed.is_err() {
                take_in(*day).await;
            }
            results.push((*day, sealed));
        }
        Ok(results)
    }

    /// Writes `day`'s seal: its parts, then what an earlier seal wrote and this one does not
    /// (readers take every part of a day's folder), then its manifest. Sealing again from
    /// the same ledger writes the same objects. A final seal is refused when the ledger's
    /// events do not add up to its rollups: some of them expired or are missing, and the
    /// archive must never hold less than was counted.
    async fn write_seal(&self, day: NaiveDate, is_final: bool) -> Result<Manifest, ArchiverError> {
        let tables = self.day_tables(day).await?;
        if is_final && let Some(first) = tables.differences(day).into_iter().next() {
            return Err(ArchiverError::Incomplete { day, first });
        }
        let sealed = tables.seal(day, is_final, ROWS_PER_PART)?;
        let stale = self.day_keys(day).await?;
        for (key, part) in &sealed.objects {
            self.store.put(key, part.bytes.clone()).await?;
        }
        for key in stale {
            if !sealed.objects.iter().any(|(k, _)| *k == key) {
                self.store.delete(&key).await?;
            }
        }
        let text = sealed.manifest.to_json();
        self.store
            .put(&manifest_key(day), text.into_bytes())
            .await?;
        Ok(sealed.manifest)
    }

    /// Every object under `day`'s folders of the tables.
    async fn day_keys(&self, day: NaiveDate) -> Result<Vec<String>, ArchiverError> {
        let mut keys = Vec::new();
        for table in TABLES {
            keys.extend(self.store.list(&format!("{table}/day={day}/")).await?);
        }
        Ok(keys)
    }

    /// The manifest of `day` as stored, or `None` when the day is not sealed.
    pub async fn manifest(&self, day: NaiveDate) -> Result<Option<Manifest>, ArchiverError> {
        let key = manifest_key(day);
        let Some(bytes) = self.store.get(&key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ArchiverError::BadManifest {
                place: self.store.place(&key),
                reason: e.to_string(),
            })
    }

    /// The events of one table (`usage_events` or `other_events`) of `day` as `sealed`
    /// lists them, each part checked against its SHA-256 in the manifest: the events as the
    /// ledger gave them when the day was sealed, in the table's order.
    pub async fn archived_events(
        &self,
        day: NaiveDate,
        sealed: &Manifest,
        table: EventTable,
    ) -> Result<Vec<(StoredEvent, ConnectionEvent)>, ArchiverError> {
        let (name, entry) = match table {
            EventTable::Usage => (TABLES[0], &sealed.usage_events),
            EventTable::Other => (TABLES[1], &sealed.other_events),
        };
        let mut events = Vec::new();
        for part in &entry.parts {
            let key = part_key(name, day, &part.name);
            let bytes = self.store.get(&key).await?;
            let Some(bytes) = bytes.filter(|b| hex::encode(Sha256::digest(b)) == part.sha256)
            else {
                return Err(ArchiverError::BadPart {
                    place: self.store.place(&key),
                });
            };
            for row in read_events(bytes)? {
                let stored = row.stored()?;
                let event = stored.event()?;
                events.push((stored, event));
            }
        }
        Ok(events)
    }

    /// The days with a manifest, by day, from the listing alone (no manifest is read).
    pub async fn sealed_days(&self) -> Result<Vec<NaiveDate>, ArchiverError> {
        Ok(self
            .store
            .list(MANIFESTS)
            .await?
            .iter()
            .filter_map(|key| day_of_manifest_key(key))
            .collect())
    }

    /// Every sealed day's manifest, by day.
    pub async fn manifests(&self) -> Result<Vec<Manifest>, ArchiverError> {
        let mut manifests = Vec::new();
        for day in self.sealed_days().await? {
            if let Some(manifest) = self.manifest(day).await? {
                manifests.push(manifest);
            }
        }
        Ok(manifests)
    }

    /// Where the archive's copy of `day` differs from what it must be, each as one
    /// sentence: every part the manifest lists is there with its SHA-256 and nothing else is
    /// in the day's folders; the manifest's sums equal the rollups' day totals; and while
    /// the ledger still holds the day's events (its retention), the manifest and the parts are
    /// what the ledger's events give now.
    pub async fn verify(&self, day: NaiveDate) -> Result<Vec<String>, ArchiverError> {
        let Some(stored) = self.manifest(day).await? else {
            return Ok(vec![format!(
                "{day}: not sealed ({} is missing)",
                self.store.place(&manifest_key(day))
            )]);
        };
        let mut problems = Vec::new();
        let listed: Vec<(String, &str)> = [
            (TABLES[0], &stored.usage_events),
            (TABLES[1], &stored.other_events),
            (TABLES[2], &stored.usage_rollups),
        ]
        .into_iter()
        .flat_map(|(table, entry)| {
            entry
                .parts
                .iter()
                .map(move |p| (part_key(table, day, &p.name), p.sha256.as_str()))
        })
        .collect();
        for (key, sha256) in &listed {
            let bytes = self.store.get(key).await?;
            if bytes.is_none_or(|b| hex::encode(Sha256::digest(&b)) != *sha256) {
                problems.push(format!(
                    "{day}: {key} is missing or not what the manifest lists"
                ));
            }
        }
        for key in self.day_keys(day).await? {
            if !listed.iter().any(|(k, _)| *k == key) {
                problems.push(format!("{day}: {key} is not part of the day's seal"));
            }
        }
        let tables = self.day_tables(day).await?;
        problems.extend(stored.against_rollups(&tables.usage_rollups));
        let retention = self.ledger.table().config().retention;
        if !retention.may_have_expired(day, Utc::now()) {
            let expected = tables.seal(day, stored.is_final, ROWS_PER_PART)?;
            if expected.manifest != stored {
                problems.push(format!(
                    "{day}: the manifest is not the ledger's events ({} usage events and {} others in the ledger, digest {})",
                    expected.manifest.usage_events.rows,
                    expected.manifest.other_events.rows,
                    expected.manifest.usage_events.digest
                ));
            }
            for (key, part) in &expected.objects {
                if !listed
                    .iter()
                    .any(|(k, sha)| k == key && *sha == part.sha256)
                {
                    problems.push(format!("{day}: {key} is not what the ledger's events give"));
                }
            }
        }
        Ok(problems)
    }
}

/// The event tables a reader takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTable {
    Usage,
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_settled_the_configured_days_after_it_ends() {
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        assert_eq!(settled_at(day, 3).to_rfc3339(), "2024-11-07T00:00:00+00:00");
        let now = "2024-11-07T01:30:00Z".parse::<DateTime<Utc>>().unwrap();
        let days: Vec<String> = settled_days(now, 3, 3)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(days, ["2024-11-01", "2024-11-02", "2024-11-03"]);
        let before = "2024-11-06T23:59:59Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(settled_days(before, 3, 1), [day.pred_opt().unwrap()]);
    }
}
