//! The read side: usage records (any range, bucket, grouping and filter) from the day
//! partitions of the rollups; a SIM's stored events through its booking lists, and its data
//! sessions from them; which providers delivered the events of a time range. Every read is
//! a key lookup or a query; nothing scans the table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Days, NaiveDate, Utc};
use futures::StreamExt;

use super::access::Unprocessed;
use super::items::{self, StoredEvent, StoredRollup, string_attr};
use super::{LedgerError, UsageLedger, keys, timestamp};
use crate::event::{ConnectionEvent, DataVolume, DedupeKey, Provider};
use crate::usage::{self, GroupBy, GroupValue, UsageCell, UsageFilters, UsageQuery, UsageRecord};

/// One SIM's usage for one period (`YYYY-MM-DD` or `YYYY-MM`), whatever it was booked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRollup {
    pub sim_sid: String,
    pub period: String,
    pub usage: DataVolume,
    pub usage_events: u64,
}

/// A data session: what its windows add up to, and the highest running total reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub sim_sid: String,
    pub session_sid: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub windows: DataVolume,
    pub windows_received: u64,
    pub cumulative: Option<DataVolume>,
}

impl SessionSummary {
    /// The windows received do not add up to the highest cumulative total: an event was
    /// lost (or not yet received).
    pub fn has_gap(&self) -> bool {
        self.cumulative
            .is_some_and(|c| c.total != self.windows.total)
    }
}

/// Which provider and path delivered one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDeliveries {
    pub event_sid: String,
    pub event_time: String,
    /// `provider#path` tags, e.g. `kore#kinesis`.
    pub deliveries: Vec<String>,
}

impl EventDeliveries {
    pub fn delivered_by(&self, provider: &str) -> bool {
        self.deliveries
            .iter()
            .any(|tag| tag.split('#').next() == Some(provider))
    }
}

/// `YYYY-MM-DD` or `YYYY-MM` as `[start, end)`.
pub fn period_range(period: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), LedgerError> {
    let bad = || {
        LedgerError::Invalid(format!(
            "`{period}` is not a day (YYYY-MM-DD) or a month (YYYY-MM)"
        ))
    };
    let (start, end) = if period.len() == 7 {
        let start =
            NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").map_err(|_| bad())?;
        (
            start,
            start
                .checked_add_months(chrono::Months::new(1))
                .ok_or_else(bad)?,
        )
    } else {
        let start = NaiveDate::parse_from_str(period, "%Y-%m-%d").map_err(|_| bad())?;
        (start, start.succ_opt().ok_or_else(bad)?)
    };
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(bad);
    Ok((midnight(start)?, midnight(end)?))
}

impl UsageLedger {
    /// The rollups of the given days: every SIM's (all shards of each day), or one SIM's;
    /// `projection` (one of `items`' reads) limits what is read of each, `None` reads all.
    pub(crate) async fn rollups(
        &self,
        days: &[NaiveDate],
        sim: Option<&str>,
        consistent: bool,
        projection: Option<&str>,
    ) -> Result<Vec<StoredRollup>, LedgerError> {
        let mut partitions = Vec::new();
        for day in days {
            let day = day.format("%Y-%m-%d").to_string();
            match sim {
                Some(sim) => partitions.push((
                    keys::usage_pk(&day, keys::usage_shard(sim)),
                    Some(items::sim_sk_prefix(sim)),
                )),
                None => partitions.extend(
                    (0..keys::USAGE_SHARDS).map(|shard| (keys::usage_pk(&day, shard), None)),
                ),
            }
        }
        let queries = partitions.into_iter().map(|(pk, prefix)| async move {
            match prefix {
                Some(prefix) => self.query_prefix(pk, &prefix, consistent, projection).await,
                None => {
                    self.query_items(None, "pk = :pk", &[(":pk", pk)], consistent, projection)
                        .await
                }
            }
        });
        let mut results =
            futures::stream::iter(queries.collect::<Vec<_>>()).buffer_unordered(self.concurrency());
        let mut rollups = Vec::new();
        while let Some(items) = results.next().await {
            for item in items? {
                rollups.push(StoredRollup::from_item(&item)?);
            }
        }
        Ok(rollups)
    }

    /// Usage records as UsageRecords answers them: see [`crate::usage`]. Days the query
    /// covers whole (for day and range buckets) are read as day totals, the others hour by
    /// hour.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>, LedgerError> {
        let sim = query.filters.sim_sid.as_deref();
        let (whole, partial): (Vec<NaiveDate>, Vec<NaiveDate>) =
            query.days().into_iter().partition(|day| {
                let start = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
                query.granularity != usage::Granularity::Hour
                    && start.is_some_and(|s| {
                        query.start() <= s && s + chrono::Duration::days(1) <= query.end()
                    })
            });
        let totals = match query.group {
            Some(GroupBy::Sim) => items::DAY_TOTALS_AND_SIM_NAMES,
            Some(GroupBy::Network) => items::DAY_TOTALS_AND_NETWORK_NAME,
            _ => items::DAY_TOTALS,
        };
        let (whole, partial) = tokio::join!(
            self.rollups(&whole, sim, false, Some(totals)),
            self.rollups(&partial, sim, false, None)
        );
        let cells: Vec<UsageCell> = whole?
            .iter()
            .filter_map(StoredRollup::day_cell)
            .chain(partial?.iter().flat_map(StoredRollup::cells))
            .collect();
        usage::aggregate(query, cells).map_err(|e| LedgerError::Invalid(e.to_string()))
    }

    /// Usage per SIM for a day or a month (`YYYY-MM-DD`, `YYYY-MM`), summed over everything
    /// it was booked to, sorted by SIM.
    pub async fn usage_per_sim(
        &self,
        period: &str,
        filters: UsageFilters,
    ) -> Result<Vec<UsageRollup>, LedgerError> {
        let (start, end) = period_range(period)?;
        let query = UsageQuery::new(
            start,
            end,
            usage::Granularity::All,
            Some(GroupBy::Sim),
            filters,
        )
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        let mut per_sim: BTreeMap<String, UsageRollup> = BTreeMap::new();
        for record in self.usage(&query).await? {
            let Some(GroupValue::Sim { sim_sid, .. }) = &record.group else {
                continue;
            };
            let entry = per_sim
                .entry(sim_sid.clone())
                .or_insert_with(|| UsageRollup {
                    sim_sid: sim_sid.clone(),
                    period: period.to_owned(),
                    usage: DataVolume::default(),
                    usage_events: 0,
                });
            let overflow = || LedgerError::Invalid("usage totals overflow".into());
            entry.usage = DataVolume {
                upload: entry
                    .usage
                    .upload
                    .checked_add(record.data_upload)
                    .ok_or_else(overflow)?,
                download: entry
                    .usage
                    .download
                    .checked_add(record.data_download)
                    .ok_or_else(overflow)?,
                total: entry
                    .usage
                    .total
                    .checked_add(record.data_total)
                    .ok_or_else(overflow)?,
            };
            entry.usage_events = entry
                .usage_events
                .checked_add(record.usage_events)
                .ok_or_else(overflow)?;
        }
        Ok(per_sim.into_values().collect())
    }

    /// One SIM's usage for a period.
    pub async fn sim_usage(
        &self,
        sim_sid: &str,
        period: &str,
    ) -> Result<Option<UsageRollup>, LedgerError> {
        let filters = UsageFilters {
            sim_sid: Some(sim_sid.to_owned()),
            ..UsageFilters::default()
        };
        Ok(self.usage_per_sim(period, filters).await?.pop())
    }

    /// Every SIM's usage for a period, sorted by SIM.
    pub async fn period_usage(&self, period: &str) -> Result<Vec<UsageRollup>, LedgerError> {
        self.usage_per_sim(period, UsageFilters::default()).await
    }

    /// Per SIM, the usage booked to an account in a period.
    pub async fn account_usage(
        &self,
        account_sid: &str,
        period: &str,
    ) -> Result<Vec<UsageRollup>, LedgerError> {
        let filters = UsageFilters {
            account_sid: Some(account_sid.to_owned()),
            ..UsageFilters::default()
        };
        self.usage_per_sim(period, filters).await
    }

    /// Per SIM, the usage booked to a fleet in a period.
    pub async fn fleet_usage(
        &self,
        fleet_sid: &str,
        period: &str,
    ) -> Result<Vec<UsageRollup>, LedgerError> {
        let filters = UsageFilters {
            fleet_sid: Some(fleet_sid.to_owned()),
            ..UsageFilters::default()
        };
        self.usage_per_sim(period, filters).await
    }

    /// Per SIM and day, the events its booking lists name, for days in `[first, last]`
    /// (all of the SIM's days when `None`).
    pub(crate) async fn booked_events(
        &self,
        sim_sid: &str,
        days: Option<(NaiveDate, NaiveDate)>,
        consistent: bool,
    ) -> Result<Vec<(NaiveDate, DedupeKey)>, LedgerError> {
        let pk = keys::sim_pk(sim_sid);
        let items = match days {
            Some((first, last)) => {
                let low = format!("{}{}", keys::BOOKED_SK_PREFIX, first.format("%Y-%m-%d"));
                // `~` sorts after every character of an event sid.
                let high = format!("{}{}#~", keys::BOOKED_SK_PREFIX, last.format("%Y-%m-%d"));
                self.query_all(
                    None,
                    "pk = :pk AND sk BETWEEN :low AND :high",
                    &[(":pk", pk), (":low", low), (":high", high)],
                    consistent,
                )
                .await?
            }
            None => {
                self.query_prefix(pk, keys::BOOKED_SK_PREFIX, consistent, None)
                    .await?
            }
        };
        let mut booked = Vec::new();
        for item in items {
            let sk = string_attr(&item, "sk").unwrap_or_default();
            let day = sk
                .strip_prefix(keys::BOOKED_SK_PREFIX)
                .and_then(|rest| rest.get(..10))
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| LedgerError::CorruptItem {
                    pk: keys::sim_pk(sim_sid),
                    reason: format!("bad booking list key {sk}"),
                })?;
            for sid in items::string_set(&item, items::BOOKED_EVENTS) {
                if let Ok(key) = DedupeKey::new(&sid, "ev") {
                    booked.push((day, key));
                }
            }
        }
        Ok(booked)
    }

    /// Full event records by key, with consistent `BatchGetItem`s (unprocessed keys are asked
    /// for again). Keys not found are left out.
    pub async fn stored_events(&self, keys: &[DedupeKey]) -> Result<Vec<StoredEvent>, LedgerError> {
        let keys: Vec<&DedupeKey> = keys.iter().collect();
        self.event_records(&keys, None, Unprocessed::AskAgain)
            .await?
            .iter()
            .map(StoredEvent::from_item)
            .collect()
    }

    /// The usage events booked for one SIM on days in `[first, last]` (all days when
    /// `None`), normalized again from their stored `data`.
    pub async fn sim_events(
        &self,
        sim_sid: &str,
        days: Option<(NaiveDate, NaiveDate)>,
    ) -> Result<Vec<(StoredEvent, ConnectionEvent)>, LedgerError> {
        let booked = self.booked_events(sim_sid, days, true).await?;
        let keys: Vec<DedupeKey> = booked.into_iter().map(|(_, key)| key).collect();
        self.stored_events(&keys)
            .await?
            .into_iter()
            .map(|stored| {
                let event = normalized(&stored)?;
                Ok((stored, event))
            })
            .collect()
    }

    /// The SIMs with usage booked on a day.
    pub async fn sims_with_usage(&self, day: NaiveDate) -> Result<BTreeSet<String>, LedgerError> {
        Ok(self
            .rollups(&[day], None, false, Some(items::BOOKING_ONLY))
            .await?
            .into_iter()
            .map(|r| r.booking.sim_sid)
            .collect())
    }

    /// The events without usage whose time is on `day` and in `[from, to)`, from the time
    /// index (usage events are found through their SIM's booking lists instead).
    pub async fn events_without_usage(
        &self,
        day: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(StoredEvent, ConnectionEvent)>, LedgerError> {
        let keys: Vec<DedupeKey> = self
            .time_index(day, from, to)
            .await?
            .into_iter()
            .map(|(_, key, _)| key)
            .collect();
        let mut events = Vec::new();
        for stored in self.stored_events(&keys).await? {
            let event = normalized(&stored)?;
            if event.usage.is_none() {
                events.push((stored, event));
            }
        }
        Ok(events)
    }

    /// A SIM's data sessions, from its usage events.
    pub async fn sim_sessions(&self, sim_sid: &str) -> Result<Vec<SessionSummary>, LedgerError> {
        let events = self.sim_events(sim_sid, None).await?;
        Ok(sessions_of(sim_sid, events.iter().map(|(_, event)| event)))
    }

    /// Events whose time is in `[from, to)`, with who delivered each: usage events through
    /// the booking lists of the SIMs with usage on those days (a window is booked within a
    /// day of its event's time), the others through the time index.
    pub async fn events_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<EventDeliveries>, LedgerError> {
        let (low, high) = (timestamp(from), timestamp(to));
        let mut events: HashMap<String, EventDeliveries> = HashMap::new();

        // Events without usage, and usage events written before booking lists existed.
        for day in day_list(from.date_naive(), to.date_naive()) {
            for (event_time, key, item) in self.time_index(day, from, to).await? {
                events.insert(
                    key.as_str().to_owned(),
                    EventDeliveries {
                        event_sid: key.as_str().to_owned(),
                        event_time,
                        deliveries: items::string_set(&item, items::DELIVERIES),
                    },
                );
            }
        }

        let first = from
            .date_naive()
            .checked_sub_days(Days::new(1))
            .unwrap_or(from.date_naive());
        let last = to
            .date_naive()
            .checked_add_days(Days::new(1))
            .unwrap_or(to.date_naive());
        let days = day_list(first, last);
        let sims: BTreeSet<String> = self
            .rollups(&days, None, false, Some(items::BOOKING_ONLY))
            .await?
            .into_iter()
            .map(|r| r.booking.sim_sid)
            .collect();
        for sim in sims {
            let booked = self.booked_events(&sim, Some((first, last)), false).await?;
            let keys: Vec<DedupeKey> = booked.into_iter().map(|(_, key)| key).collect();
            for stored in self.stored_events(&keys).await? {
                let event_time = timestamp(stored.event_time);
                if event_time < low || event_time >= high {
                    continue;
                }
                events.insert(
                    stored.key.as_str().to_owned(),
                    EventDeliveries {
                        event_sid: stored.key.as_str().to_owned(),
                        event_time,
                        deliveries: stored.deliveries,
                    },
                );
            }
        }
        let mut events: Vec<EventDeliveries> = events.into_values().collect();
        events.sort_by(|a, b| (&a.event_time, &a.event_sid).cmp(&(&b.event_time, &b.event_sid)));
        Ok(events)
    }
}

/// A stored event normalized again; the provider is the first of its deliveries (it does
/// not change what is booked).
pub(crate) fn normalized(stored: &StoredEvent) -> Result<ConnectionEvent, LedgerError> {
    let provider = stored
        .deliveries
        .iter()
        .filter_map(|tag| Provider::from_name(tag.split('#').next().unwrap_or_default()))
        .min()
        .unwrap_or(Provider::Kore);
    crate::event::from_stored(
        provider,
        &stored.key,
        &stored.event_type,
        stored.event_time,
        &stored.data,
    )
    .map_err(|e| LedgerError::CorruptItem {
        pk: keys::event_pk(&stored.key),
        reason: format!("stored data no longer parses: {e}"),
    })
}

/// Every day from `first` to `last`, both included.
pub(crate) fn day_list(first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
    first.iter_days().take_while(|d| *d <= last).collect()
}

/// The sessions that `events` (one SIM's usage events) show: windows received and their sum
/// against the last cumulative total the provider reported.
pub fn sessions_of<'a>(
    sim_sid: &str,
    events: impl IntoIterator<Item = &'a ConnectionEvent>,
) -> Vec<SessionSummary> {
    let mut sessions: BTreeMap<String, SessionSummary> = BTreeMap::new();
    for event in events {
        let (Some(session), Some(window)) = (&event.session, event.usage) else {
            continue;
        };
        let summary = sessions
            .entry(session.sid.clone())
            .or_insert_with(|| SessionSummary {
                sim_sid: sim_sid.to_owned(),
                session_sid: session.sid.clone(),
                start_time: None,
                end_time: None,
                windows: DataVolume::default(),
                windows_received: 0,
                cumulative: None,
            });
        // Each event is at most 2^50 bytes: a session's sum cannot overflow a u64.
        summary.windows.upload += window.upload;
        summary.windows.download += window.download;
        summary.windows.total += window.total;
        summary.windows_received += 1;
        if let Some(start) = session.start_time {
            summary.start_time.get_or_insert_with(|| timestamp(start));
        }
        if let Some(end) = session.end_time {
            let end = timestamp(end);
            if summary.end_time.as_ref().is_none_or(|e| *e < end) {
                summary.end_time = Some(end);
            }
        }
        if let Some(cumulative) = session.cumulative
            && summary
                .cumulative
                .is_none_or(|c| c.total < cumulative.total)
        {
            summary.cumulative = Some(cumulative);
        }
    }
    sessions.into_values().collect()
}
