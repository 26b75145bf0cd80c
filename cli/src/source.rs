//! Where a command reads a day's events: the ledger, or the archive's final seal of the day
//! (`--source auto|ledger|archive`). `auto` reads a day from the archive when it is sealed
//! finally and the seal still holds what the rollups count, so a day whose event records
//! expired from the ledger still answers, the same as before they did; when usage was
//! counted after the seal, from the ledger if it still holds the whole day.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use clap::ValueEnum;
use kore_ingest_archive::Manifest;
use kore_ingest_aws::archive::{ArchiveStore, Archiver, EventTable};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::event::ConnectionEvent;
use kore_ingest_core::stored::{EventDeliveries, StoredEvent};
use kore_ingest_core::time::{TimeRange, day_list};

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
    /// The SIM a command reads, if one: a seal is then held against its rollups alone, so
    /// usage of another SIM counted after the seal does not stop it.
    sim: Option<String>,
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
        DaySource::scoped(ledger, source, days, None).await
    }

    /// Where each of `days` is read for one SIM's events.
    pub async fn of_sim_on(
        ledger: &'a UsageLedger,
        source: Source,
        sim: &str,
        days: &[NaiveDate],
    ) -> Result<DaySource<'a>> {
        DaySource::scoped(ledger, source, days, Some(sim)).await
    }

    /// Where each day `sim` has usage on is read: the days its booking lists name, and the
    /// other sealed days whose rollups show it (its booking lists of those have expired).
    pub async fn of_sim(
        ledger: &'a UsageLedger,
        source: Source,
        sim: &str,
    ) -> Result<DaySource<'a>> {
        if source == Source::Ledger {
            return DaySource::scoped(ledger, source, &[], Some(sim)).await;
        }
        let booked = ledger.events().booked(sim, None, false).await;
        let mut days: BTreeSet<NaiveDate> = booked
            .or_fail(ledger)?
            .into_iter()
            .map(|(day, _)| day)
            .collect();
        let store = archive_store().await?;
        let archiver = Archiver {
            ledger,
            store: &store,
        };
        let sealed = archiver.sealed_days().await.or_fail(ledger)?;
        let unlisted: Vec<NaiveDate> = sealed.into_iter().filter(|d| !days.contains(d)).collect();
        let rollups = ledger.rollups().days_of_sim(sim, &unlisted).await;
        days.extend(rollups.or_fail(ledger)?);
        let days: Vec<NaiveDate> = days.into_iter().collect();
        DaySource::scoped(ledger, source, &days, Some(sim)).await
    }

    async fn scoped(
        ledger: &'a UsageLedger,
        source: Source,
        days: &[NaiveDate],
        sim: Option<&str>,
    ) -> Result<DaySource<'a>> {
        let mut found = DaySource {
            ledger,
            store: None,
            sealed: BTreeMap::new(),
            sim: sim.map(str::to_owned),
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
                    store.place(kore_ingest_aws::archive::MANIFESTS)
                )));
            }
            return Ok(None);
        };
        // Usage counted after the seal is in the rollups and not in the archive: the ledger
        // answers while it holds the day, else the reader is told.
        let sim = self.sim.as_deref();
        let rollups = archiver.rollups(day, sim).await.or_fail(ledger)?;
        let differences = match sim {
            Some(sim) => manifest.against_rollups_of(sim, &rollups),
            None => manifest.against_rollups(&rollups),
        };
        let Some(difference) = differences.into_iter().next() else {
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

    /// `sim`'s usage events booked on days in `[first, last]` (all its days when `None`), each
    /// day from where it is read, in export order: by the end of their window, then sid.
    pub async fn usage_of_sim(
        &self,
        sim: &str,
        days: Option<(NaiveDate, NaiveDate)>,
    ) -> Result<Events> {
        let wanted =
            |day: &NaiveDate| days.is_none_or(|(first, last)| (first..=last).contains(day));
        let mut events = Vec::new();
        let mut from_archive = BTreeSet::new();
        for day in self.sealed.keys().filter(|day| wanted(day)) {
            if let Some(archived) = self.usage_events(*day).await? {
                from_archive.insert(*day);
                events.extend(
                    archived
                        .into_iter()
                        .filter(|(_, e)| e.sim_sid.as_deref() == Some(sim)),
                );
            }
        }
        let all_archived = days.is_some_and(|(first, last)| {
            day_list(first, last)
                .iter()
                .all(|d| from_archive.contains(d))
        });
        let booked = match all_archived {
            true => Vec::new(),
            false => self
                .ledger
                .events()
                .of_sim(sim, days)
                .await
                .or_fail(self.ledger)?,
        };
        events.extend(booked.into_iter().filter(|(_, e)| {
            let day = e.archive_day();
            wanted(&day) && !from_archive.contains(&day)
        }));
        events.sort_by(|a, b| (a.1.booked_at, &a.1.key).cmp(&(b.1.booked_at, &b.1.key)));
        Ok(events)
    }

    /// Events whose time is in `range`, with who delivered each, by time then sid: the days
    /// read from the archive from their sealed tables (usage events by the day they are
    /// booked on, the others by their time), the rest from the ledger. The source must have
    /// been made for `range.booking_days()`.
    pub async fn delivered_between(&self, range: TimeRange) -> Result<Vec<EventDeliveries>> {
        let mut events: BTreeMap<String, EventDeliveries> = BTreeMap::new();
        let mut from_archive = BTreeSet::new();
        for day in self.sealed.keys() {
            for table in [EventTable::Usage, EventTable::Other] {
                let Some(archived) = self.archived(*day, table).await? else {
                    continue;
                };
                from_archive.insert(*day);
                for (stored, _) in archived {
                    if range.contains(stored.event_time) {
                        events.insert(stored.key.as_str().to_owned(), (&stored).into());
                    }
                }
            }
        }
        let booking_days = range.booking_days();
        if !booking_days.iter().all(|day| from_archive.contains(day)) {
            let ledger = self.ledger.events().delivered_between(range).await;
            for event in ledger.or_fail(self.ledger)? {
                events.entry(event.event_sid.clone()).or_insert(event);
            }
        }
        let mut events: Vec<EventDeliveries> = events.into_values().collect();
        events.sort_by(|a, b| (&a.event_time, &a.event_sid).cmp(&(&b.event_time, &b.event_sid)));
        Ok(events)
    }

    /// The events without usage of `day`, by time, if the day is read from the archive.
    pub async fn other_events(&self, day: NaiveDate) -> Result<Option<Events>> {
        self.archived(day, EventTable::Other).await
    }
}
