//! Where a command reads a day's events: the ledger, or the archive's final seal of the day
//! (`--source auto|ledger|archive`). `auto` reads a day from the archive when it is sealed
//! finally and the seal still holds what the rollups count, so a day whose event records
//! expired from the ledger still answers, the same as before they did; when usage was
//! counted after the seal, from the ledger if it still holds the whole day.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use clap::ValueEnum;
use kore_ingest_archive::Manifest;
use kore_ingest_aws::archive::{ArchiveStore, Archiver, EventTable};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::event::ConnectionEvent;
use kore_ingest_core::stored::StoredEvent;

use crate::failure::{Failure, OrFail, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// The archive for a day sealed finally, else the ledger.
    #[default]
    Auto,
    /// Always the ledger.
    Ledger,
    /// Always the archive: a day without a final seal is an error.
    Archive,
}

/// The archive `ARCHIVE_URL` names (a folder by default).
pub async fn archive_store() -> Result<ArchiveStore> {
    let url = std::env::var("ARCHIVE_URL")
        .unwrap_or_else(|_| kore_ingest_aws::archive::DEFAULT_ARCHIVE_URL.into());
    let aws = kore_ingest_aws::sdk::sdk_config(kore_ingest_aws::sdk::Caller::Tool).await;
    ArchiveStore::from_url(&url, &aws).map_err(|e| Failure::Usage(e.to_string()))
}

/// A command's days, each read from where `--source` says; which days are read from the
/// archive is decided once per day (only the manifests are kept, not the events).
pub struct DaySource<'a> {
    ledger: &'a UsageLedger,
    store: Option<ArchiveStore>,
    sealed: BTreeMap<NaiveDate, Option<Manifest>>,
}

type Events = Vec<(StoredEvent, ConnectionEvent)>;

impl<'a> DaySource<'a> {
    /// Where each of `days` is read. `archive`: every day must be sealed finally, checked
    /// before anything is printed.
    pub async fn new(
        ledger: &'a UsageLedger,
        source: Source,
        days: &[NaiveDate],
    ) -> Result<DaySource<'a>> {
        let mut found = DaySource {
            ledger,
            store: None,
            sealed: BTreeMap::new(),
        };
        if source == Source::Ledger {
            return Ok(found);
        }
        let store = archive_store().await?;
        for day in days {
            let manifest = found.final_manifest(&store, *day, source).await?;
            found.sealed.insert(*day, manifest);
        }
        found.store = Some(store);
        Ok(found)
    }

    /// The final manifest `day` is read from, or `None` for the ledger.
    async fn final_manifest(
        &self,
        store: &ArchiveStore,
        day: NaiveDate,
        source: Source,
    ) -> Result<Option<Manifest>> {
        let ledger = self.ledger;
        let archiver = Archiver { ledger, store };
        let manifest = archiver.manifest(day).await.or_fail(ledger)?;
        let Some(manifest) = manifest.filter(|m| m.is_final) else {
            if source == Source::Archive {
                return Err(Failure::Failed(format!(
                    "{day} has no final seal in {}: read it with --source ledger",
                    store.place("manifests/")
                )));
            }
            return Ok(None);
        };
        // Usage counted after the seal is in the rollups and not in the archive: the ledger
        // answers while it holds the day, else the reader is told.
        let rollups = archiver.rollups(day).await.or_fail(ledger)?;
        let Some(difference) = manifest.against_rollups(&rollups).into_iter().next() else {
            return Ok(Some(manifest));
        };
        if source == Source::Auto {
            let tables = archiver.day_tables(day).await.or_fail(ledger)?;
            if tables.differences(day).is_empty() {
                return Ok(None);
            }
        }
        Err(Failure::Failed(format!(
            "{difference}: usage was counted after the day's final seal, and the ledger no longer holds all of the day's events either"
        )))
    }

    /// One table of `day` from the archive, or `None` when the day is read from the ledger.
    async fn archived(&self, day: NaiveDate, table: EventTable) -> Result<Option<Events>> {
        let (Some(store), Some(Some(manifest))) = (&self.store, self.sealed.get(&day)) else {
            return Ok(None);
        };
        let archiver = Archiver {
            ledger: self.ledger,
            store,
        };
        let events = archiver.archived_events(day, manifest, table).await;
        Ok(Some(events.or_fail(self.ledger)?))
    }

    /// The usage events booked on `day`, in export order, if the day is read from the archive.
    pub async fn usage_events(&self, day: NaiveDate) -> Result<Option<Events>> {
        self.archived(day, EventTable::Usage).await
    }

    /// The events without usage of `day`, by time, if the day is read from the archive.
    pub async fn other_events(&self, day: NaiveDate) -> Result<Option<Events>> {
        self.archived(day, EventTable::Other).await
    }
}
