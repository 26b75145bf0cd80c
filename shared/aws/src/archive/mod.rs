//! The archive of settled days on a store ([`ArchiveStore`]): a day's tables read back from
//! the ledger as `export` reads them, sealed by `kore_ingest_archive` and written parts first,
//! manifest last; checked again against the ledger; listed by their manifests. The archiver
//! function and `kore-usage archive` both call this, and nothing else writes the archive.

mod store;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use kore_ingest_archive::{ArchiveError, ArchiveRow, DayTables, Manifest, RollupRow};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{TimeRange, midnight};

use crate::ledger::UsageLedger;

pub use kore_ingest_archive::{TABLES, manifest_key};
pub use store::{ArchiveStore, DEFAULT_ARCHIVE_URL, StoreError, s3_config};

/// Rows per part: about 25 MB of Parquet at the bench's shape, few objects per day.
pub const ROWS_PER_PART: usize = 100_000;

/// When `day` is settled enough to seal: `seal_after_days` after it ends.
pub fn settled_at(day: NaiveDate, seal_after_days: u64) -> DateTime<Utc> {
    midnight(day) + Duration::days(1 + days(seal_after_days))
}

/// The `count` newest days settled at `now`, oldest first.
pub fn settled_days(now: DateTime<Utc>, seal_after_days: u64, count: u32) -> Vec<NaiveDate> {
    let newest = now.date_naive() - Duration::days(1 + days(seal_after_days));
    (0..i64::from(count))
        .rev()
        .map(|back| newest - Duration::days(back))
        .collect()
}

/// A count of days as chrono takes it; none the configuration allows is near the limit.
fn days(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX / 86_400_000)
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiverError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] ArchiveError),
    #[error("{place} is not a manifest: {reason}")]
    BadManifest { place: String, reason: String },
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
        let events = self.ledger.events();
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
        let mut usage_rollups: Vec<RollupRow> = self
            .ledger
            .rollups()
            .of_days(&[day], None, true, None)
            .await?
            .iter()
            .map(|stored| RollupRow::of(&stored.totals()))
            .collect();
        usage_rollups.sort_by_key(RollupRow::key);
        Ok(DayTables {
            usage_events,
            other_events,
            usage_rollups,
        })
    }

    /// Seals `day`: its parts, then its manifest. Sealing again from the same ledger writes
    /// the same objects.
    pub async fn seal(&self, day: NaiveDate, is_final: bool) -> Result<Manifest, ArchiverError> {
        let sealed = self
            .day_tables(day)
            .await?
            .seal(day, is_final, ROWS_PER_PART)?;
        for (key, part) in sealed.objects {
            self.store.put(&key, part.bytes).await?;
        }
        let text = sealed.manifest.to_json();
        self.store
            .put(&manifest_key(day), text.into_bytes())
            .await?;
        Ok(sealed.manifest)
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

    /// Every sealed day's manifest, by day.
    pub async fn manifests(&self) -> Result<Vec<Manifest>, ArchiverError> {
        let mut manifests = Vec::new();
        for key in self.store.list("manifests/").await? {
            let day = key
                .strip_prefix("manifests/day=")
                .and_then(|k| k.strip_suffix(".json"))
                .and_then(|d| d.parse::<NaiveDate>().ok());
            if let Some(day) = day
                && let Some(manifest) = self.manifest(day).await?
            {
                manifests.push(manifest);
            }
        }
        Ok(manifests)
    }

    /// Where the archive's copy of `day` differs from the ledger, each as one sentence:
    /// the manifest, every part byte for byte, objects no seal of the ledger would write,
    /// and the manifest's sums against the rollups.
    pub async fn verify(&self, day: NaiveDate) -> Result<Vec<String>, ArchiverError> {
        let Some(stored) = self.manifest(day).await? else {
            return Ok(vec![format!(
                "{day}: not sealed ({} is missing)",
                self.store.place(&manifest_key(day))
            )]);
        };
        let tables = self.day_tables(day).await?;
        let expected = tables.seal(day, stored.is_final, ROWS_PER_PART)?;
        let mut problems = Vec::new();
        if expected.manifest != stored {
            problems.push(format!(
                "{day}: the manifest is not the ledger's events ({} usage events and {} others in the ledger, digest {})",
                expected.manifest.usage_events.rows,
                expected.manifest.other_events.rows,
                expected.manifest.usage_events.digest
            ));
        }
        let mut written = Vec::new();
        for table in TABLES {
            written.extend(self.store.list(&format!("{table}/day={day}/")).await?);
        }
        for (key, part) in &expected.objects {
            if self.store.get(key).await?.as_deref() != Some(part.bytes.as_slice()) {
                problems.push(format!("{day}: {key} is not what the ledger's events give"));
            }
        }
        for key in written {
            if !expected.objects.iter().any(|(k, _)| *k == key) {
                problems.push(format!("{day}: {key} is not part of the day's seal"));
            }
        }
        problems.extend(stored.against_rollups(&tables.usage_rollups));
        Ok(problems)
    }
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
