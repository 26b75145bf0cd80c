//! Stored events found again: a SIM's usage events through its booking lists, events
//! without usage through the time index, full records by key, and which providers
//! delivered the events of a time range.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use kore_ingest_core::event::{ConnectionEvent, DedupeKey};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::stored::{EventDeliveries, StoredEvent};
use kore_ingest_core::time::{TimeRange, day_list, timestamp};
use kore_ingest_core::usage::{SessionSummary, sessions_of};

use super::rollups::Rollups;
use crate::ledger::items::attrs::{Item, string_attr, string_set};
use crate::ledger::items::booking_list::booked_events_of;
use crate::ledger::items::event::{DELIVERIES, event_key, stored_event_of};
use crate::ledger::keys;
use crate::ledger::table::{Query, Table, Unprocessed};

/// The stored events of one ledger table.
#[derive(Debug, Clone)]
pub struct Events {
    table: Table,
    /// Booking lists and event records read strongly consistently (the default).
    consistent: bool,
}

impl Events {
    pub fn new(table: Table) -> Self {
        Events {
            table,
            consistent: true,
        }
    }

    /// These events read eventually consistently, for half the read units: for days
    /// written long enough ago that every write is visible (a settled day's seal).
    pub fn eventually_consistent(self) -> Self {
        Events {
            consistent: false,
            ..self
        }
    }

    /// Per SIM and day, the events its booking lists name, for days in `[first, last]`
    /// (all of the SIM's days when `None`).
    pub async fn booked(
        &self,
        sim_sid: &str,
        days: Option<(NaiveDate, NaiveDate)>,
        consistent: bool,
    ) -> Result<Vec<(NaiveDate, DedupeKey)>, LedgerError> {
        let pk = keys::sim_pk(sim_sid);
        let query = match days {
            Some((first, last)) => {
                let (low, high) = keys::booked_sk_range(first, last);
                Query::between(pk, low, high)
            }
            None => Query::prefix(pk, keys::BOOKED_SK_PREFIX),
        };
        let mut booked = Vec::new();
        for item in self.table.query(query.consistent(consistent)).await? {
            let (day, events) = booked_events_of(&item)?;
            booked.extend(events.into_iter().map(|key| (day, key)));
        }
        Ok(booked)
    }

    /// Full event records by key, with `BatchGetItem`s, consistent unless made otherwise
    /// (unprocessed keys are asked for again). Keys not found are left out.
    pub async fn by_keys(&self, keys: &[DedupeKey]) -> Result<Vec<StoredEvent>, LedgerError> {
        self.table
            .batch_get_read(
                keys.iter().map(event_key).collect(),
                None,
                Unprocessed::AskAgain,
                self.consistent,
            )
            .await?
            .iter()
            .map(stored_event_of)
            .collect()
    }

    /// The usage events booked for one SIM on days in `[first, last]` (all days when
    /// `None`), normalized again from their stored `data`.
    pub async fn of_sim(
        &self,
        sim_sid: &str,
        days: Option<(NaiveDate, NaiveDate)>,
    ) -> Result<Vec<(StoredEvent, ConnectionEvent)>, LedgerError> {
        let booked = self.booked(sim_sid, days, self.consistent).await?;
        let keys: Vec<DedupeKey> = booked.into_iter().map(|(_, key)| key).collect();
        self.by_keys(&keys)
            .await?
            .into_iter()
            .map(|stored| {
                let event = stored.event()?;
                Ok((stored, event))
            })
            .collect()
    }

    /// The usage events booked for one SIM on `day`, in export order: by the end of their
    /// window, then sid.
    pub async fn of_sim_booked_on(
        &self,
        sim_sid: &str,
        day: NaiveDate,
    ) -> Result<Vec<(StoredEvent, ConnectionEvent)>, LedgerError> {
        let mut events = self.of_sim(sim_sid, Some((day, day))).await?;
        events.retain(|(_, e)| e.booking_hour().date_naive() == day);
        events.sort_by(|a, b| (a.1.booked_at, &a.1.key).cmp(&(b.1.booked_at, &b.1.key)));
        Ok(events)
    }

    /// A SIM's data sessions, from its usage events.
    pub async fn sessions(&self, sim_sid: &str) -> Result<Vec<SessionSummary>, LedgerError> {
        let events = self.of_sim(sim_sid, None).await?;
        Ok(sessions_of(sim_sid, events.iter().map(|(_, event)| event))?)
    }

    /// The events without usage whose time is on `day` and in `range`, from the time index
    /// (usage events are found through their SIM's booking lists instead), by time, then sid.
    pub async fn without_usage(
        &self,
        day: NaiveDate,
        range: TimeRange,
    ) -> Result<Vec<(StoredEvent, ConnectionEvent)>, LedgerError> {
        let keys: Vec<DedupeKey> = self
            .time_index(day, range)
            .await?
            .into_iter()
            .map(|(_, key, _)| key)
            .collect();
        let mut events = Vec::new();
        for stored in self.by_keys(&keys).await? {
            let event = stored.event()?;
            if event.usage.is_none() {
                events.push((stored, event));
            }
        }
        events.sort_by(|a, b| (a.1.event_time, &a.1.key).cmp(&(b.1.event_time, &b.1.key)));
        Ok(events)
    }

    /// Events whose time is in `range`, with who delivered each: usage events through the
    /// booking lists of the SIMs with usage on those days (a window is booked within a day
    /// of its event's time), the others through the time index.
    pub async fn delivered_between(
        &self,
        range: TimeRange,
    ) -> Result<Vec<EventDeliveries>, LedgerError> {
        let mut events: HashMap<String, EventDeliveries> = HashMap::new();
        let (from, to) = (range.start().date_naive(), range.end().date_naive());
        for day in day_list(from, to) {
            for (event_time, key, item) in self.time_index(day, range).await? {
                events.insert(
                    key.as_str().to_owned(),
                    EventDeliveries {
                        event_sid: key.as_str().to_owned(),
                        event_time,
                        deliveries: string_set(&item, DELIVERIES),
                    },
                );
            }
        }
        let booking_days = range.booking_days();
        let span = booking_days.first().zip(booking_days.last());
        let sims = Rollups::new(self.table.clone())
            .sims_with_usage(&booking_days)
            .await?;
        for sim in sims {
            let booked = self
                .booked(&sim, span.map(|(f, l)| (*f, *l)), false)
                .await?;
            let keys: Vec<DedupeKey> = booked.into_iter().map(|(_, key)| key).collect();
            for stored in self.by_keys(&keys).await? {
                if range.contains(stored.event_time) {
                    events.insert(stored.key.as_str().to_owned(), (&stored).into());
                }
            }
        }
        let mut events: Vec<EventDeliveries> = events.into_values().collect();
        events.sort_by(|a, b| (&a.event_time, &a.event_sid).cmp(&(&b.event_time, &b.event_sid)));
        Ok(events)
    }

    /// The time index's entries of one day (by event time) in `range`, every shard:
    /// `(event time, event key, item)`.
    async fn time_index(
        &self,
        day: NaiveDate,
        range: TimeRange,
    ) -> Result<Vec<(String, DedupeKey, Item)>, LedgerError> {
        let (low, high) = (timestamp(range.start()), timestamp(range.end()));
        let mut entries = Vec::new();
        for shard in 0..keys::SHARDS {
            let query = Query {
                index: Some(keys::TIME_INDEX),
                condition: "gsi1pk = :pk AND gsi1sk BETWEEN :low AND :high",
                values: vec![
                    (":pk", keys::events_by_day_pk(day, shard)),
                    (":low", low.clone()),
                    (":high", high.clone()),
                ],
                consistent: false,
                projection: None,
            };
            for item in self.table.query(query).await? {
                let Some((event_time, sid)) = string_attr(&item, "gsi1sk")
                    .and_then(keys::time_index_entry)
                    .map(|(time, sid)| (time.to_owned(), sid.to_owned()))
                else {
                    continue;
                };
                let at = DateTime::parse_from_rfc3339(&event_time).map(|t| t.with_timezone(&Utc));
                // BETWEEN includes `high`; the range does not.
                if !at.is_ok_and(|at| range.contains(at)) {
                    continue;
                }
                if let Ok(key) = DedupeKey::new(&sid, "gsi1sk") {
                    entries.push((event_time, key, item));
                }
            }
        }
        Ok(entries)
    }
}
