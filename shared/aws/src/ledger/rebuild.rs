//! Rollups recomputed from the stored events, the audit before an invoice: every usage
//! event of a range is found through the booking lists of each SIM with a rollup in the
//! range, folded by the same booking rule the write path uses
//! (`kore_ingest_core::usage::DayBooking`), and compared hour by hour with what is stored.
//! A rewrite is conditional on the rollup's version, so a commit that lands meanwhile is
//! never overwritten: the rollup is compared again instead.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;
use kore_ingest_core::event::{ConnectionEvent, DedupeKey};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::stored::StoredEvent;
use kore_ingest_core::time::{TimeRange, day_text};
use kore_ingest_core::usage::{
    Booking, BookingNames, DayBooking, HourUsage, Overflow, checked_sum, fold,
};

use super::items::attrs::Item;
use super::items::rollup::{StoredRollup, VERSION, rollup_key, rollup_rewrite};
use super::read::events::Events;
use super::read::rollups::Rollups;
use super::table::Table;

/// One rollup (a SIM's day for one booking) whose hours in the range differ from its
/// events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupDifference {
    pub day: NaiveDate,
    pub booking: Booking,
    /// Hours (0-23, UTC) that differ.
    pub hours: Vec<u32>,
    /// The day's totals differ from its hours (what whole-day queries read).
    pub day_total: bool,
    /// Summed over the range's hours of that day.
    pub stored: HourUsage,
    pub expected: HourUsage,
}

/// What a rebuild found, and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub rollups_compared: usize,
    pub usage_events: usize,
    pub differences: Vec<RollupDifference>,
    /// Rollups rewritten (0 with `check`).
    pub rewritten: usize,
}

type RollupKey = (NaiveDate, Booking);

/// Rewrites that lose a race with a commit are compared again, this often.
const ROUNDS: usize = 3;

/// Rebuilds the rollups of one ledger table.
#[derive(Debug, Clone)]
pub struct Rebuilder {
    table: Table,
}

/// One rollup as a rebuild wants it.
struct Rewrite<'a> {
    key: Item,
    /// The range's hours of that day.
    hours: Vec<u32>,
    wanted: &'a BTreeMap<u32, HourUsage>,
    day: HourUsage,
    names: &'a BookingNames,
    /// The version read; `None`: the rollup did not exist.
    version: Option<u64>,
}

impl Rebuilder {
    pub fn new(table: Table) -> Self {
        Rebuilder { table }
    }

    /// Recomputes the rollups of `range` (whole hours) from the events; with `check`, only
    /// lists the ones that differ.
    pub async fn run(&self, range: TimeRange, check: bool) -> Result<RebuildReport, LedgerError> {
        whole_hours(range)?;
        // Rollups are kept when event records expire: rebuilt from what is left, they would
        // lose the usage of every expired event.
        let retention = self.table.config().retention;
        let now = chrono::Utc::now();
        if !check
            && let Some(day) = range
                .days()
                .into_iter()
                .find(|d| retention.may_have_expired(*d, now))
        {
            return Err(LedgerError::Invalid(format!(
                "{day} may have event records expired from the ledger (LEDGER_RETENTION_DAYS): rebuilding its rollups would lose their usage; `rebuild --check` compares"
            )));
        }
        let mut rewritten = 0;
        for round in 1..=ROUNDS {
            let (report, lost_races) = self.round(range, check).await?;
            rewritten += report.rewritten;
            if lost_races == 0 || check {
                return Ok(RebuildReport {
                    rewritten,
                    ..report
                });
            }
            tracing::info!(
                round,
                lost_races,
                "rollups changed while being rebuilt; comparing again"
            );
        }
        Err(LedgerError::Retryable {
            operation: "UpdateItem",
            code: None,
            message: format!("rollups kept changing during {ROUNDS} rebuild rounds"),
        })
    }

    /// Compares the rollups of `range` (whole hours) with `events`, the usage events of its
    /// days as another copy holds them (the archive's, once the ledger's have expired);
    /// changes nothing.
    pub async fn check_against(
        &self,
        range: TimeRange,
        events: &[ConnectionEvent],
    ) -> Result<RebuildReport, LedgerError> {
        whole_hours(range)?;
        let stored = self.stored(&range.days()).await?;
        let (expected, usage_events) = booked_in(range, events)?;
        let (rollups_compared, differing) = differences(&stored, &expected, range)?;
        Ok(RebuildReport {
            rollups_compared,
            usage_events,
            differences: differing.into_iter().map(|(d, _)| d).collect(),
            rewritten: 0,
        })
    }

    /// The stored rollups of `days`, read consistently.
    async fn stored(
        &self,
        days: &[NaiveDate],
    ) -> Result<BTreeMap<RollupKey, StoredRollup>, LedgerError> {
        Ok(Rollups::new(self.table.clone())
            .of_days(days, None, true, None)
            .await?
            .into_iter()
            .map(|r| ((r.day, r.booking.clone()), r))
            .collect())
    }

    /// One comparison (and rewrite): the report, and how many rewrites lost a race.
    async fn round(
        &self,
        range: TimeRange,
        check: bool,
    ) -> Result<(RebuildReport, usize), LedgerError> {
        let days = range.days();
        let (Some(&first), Some(&last)) = (days.first(), days.last()) else {
            return Ok((RebuildReport::default(), 0));
        };
        // Rollups first: a commit after this read changes a version, and loses no count.
        let stored = self.stored(&days).await?;
        let sims: BTreeSet<&str> = stored.keys().map(|(_, b)| b.sim_sid.as_str()).collect();
        let (expected, usage_events, listed) = self.expected(&sims, first, last, range).await?;
        // Rollups are written in the same transaction as a booking list of their SIM and day:
        // one with usage and no list left has outlived its expired lists.
        if let Some((day, booking)) = stored.iter().find_map(|((day, booking), rollup)| {
            let counted = rollup.day_total.is_some_and(|t| t.events > 0);
            let unlisted = !listed.contains(&(booking.sim_sid.clone(), *day));
            (counted && unlisted).then_some((day, booking))
        }) {
            return Err(LedgerError::Invalid(format!(
                "{day}: SIM {} has usage in its rollups and no booking list left (expired): the rollups are kept as they are; `archive verify` checks them against the archive",
                booking.sim_sid
            )));
        }
        let (rollups_compared, differing) = differences(&stored, &expected, range)?;
        let mut report = RebuildReport {
            rollups_compared,
            usage_events,
            ..RebuildReport::default()
        };
        let mut lost_races = 0;
        for (difference, rewrite) in differing {
            report.differences.push(difference);
            if check {
                continue;
            }
            match self.rewrite(rewrite).await? {
                true => report.rewritten += 1,
                false => lost_races += 1,
            }
        }
        Ok((report, lost_races))
    }

    /// The rollups of the range's hours as the SIMs' events say, how many events, and the
    /// SIMs and days with a booking list.
    async fn expected(
        &self,
        sims: &BTreeSet<&str>,
        first: NaiveDate,
        last: NaiveDate,
        range: TimeRange,
    ) -> Result<
        (
            BTreeMap<RollupKey, DayBooking>,
            usize,
            BTreeSet<(String, NaiveDate)>,
        ),
        LedgerError,
    > {
        let events = Events::new(self.table.clone());
        let mut keys: BTreeSet<DedupeKey> = BTreeSet::new();
        let mut listed = BTreeSet::new();
        for sim in sims {
            for (day, key) in events.booked(sim, Some((first, last)), true).await? {
                listed.insert(((*sim).to_owned(), day));
                keys.insert(key);
            }
        }
        let keys: Vec<DedupeKey> = keys.into_iter().collect();
        let found = events.by_keys(&keys).await?;
        // A booking list is written in the same transaction as its events: an event it names
        // that is gone has expired, and the events no longer say what the rollups counted.
        if found.len() < keys.len() {
            return Err(LedgerError::Invalid(format!(
                "the booking lists name {} events the ledger no longer holds (expired): the rollups are kept as they are; `archive verify` checks them against the archive",
                keys.len() - found.len()
            )));
        }
        let events = found
            .iter()
            .map(StoredEvent::event)
            .collect::<Result<Vec<_>, _>>()?;
        let (expected, count) = booked_in(range, &events)?;
        Ok((expected, count, listed))
    }

    /// Makes a rollup what the events say, if no commit changed it since it was read (false
    /// when one did). A rollup left without usage is deleted.
    async fn rewrite(&self, rewrite: Rewrite<'_>) -> Result<bool, LedgerError> {
        // Unchanged since it was read (its version), or still absent.
        let (condition, names, mut values) = match rewrite.version {
            Some(version) => (
                "#v = :seen",
                vec![("#v", VERSION)],
                Item::from([(":seen".to_owned(), AttributeValue::N(version.to_string()))]),
            ),
            None => ("attribute_not_exists(pk)", Vec::new(), Item::new()),
        };
        if rewrite.day.events == 0 {
            return self
                .table
                .delete_if(rewrite.key, condition, &names, values)
                .await;
        }
        let update = rollup_rewrite(
            rewrite.key,
            rewrite.hours,
            rewrite.wanted,
            rewrite.day,
            rewrite.names,
        );
        values.extend(update.values);
        self.table
            .update_if(update.key, &update.expression, condition, &names, values)
            .await
    }
}

fn whole_hours(range: TimeRange) -> Result<(), LedgerError> {
    match range.is_whole_hours() {
        true => Ok(()),
        false => Err(LedgerError::Invalid(
            "a rebuild range starts before it ends, on whole hours".into(),
        )),
    }
}

/// The rollups `events` give over the range's hours (by the write path's booking rule), and
/// how many usage events that is.
fn booked_in(
    range: TimeRange,
    events: &[ConnectionEvent],
) -> Result<(BTreeMap<RollupKey, DayBooking>, usize), LedgerError> {
    let parts: Vec<DayBooking> = events
        .iter()
        .filter(|e| e.usage.is_some() && range.contains(e.booking_hour()))
        .filter_map(|e| DayBooking::of(e, false))
        .collect();
    let count = parts.len();
    Ok((fold(parts)?, count))
}

/// The rollups that differ from their events, each with the rewrite that mends it.
type Differing<'a> = Vec<(RollupDifference, Rewrite<'a>)>;

/// Every rollup stored or expected, compared: how many, and those that differ.
fn differences<'a>(
    stored: &'a BTreeMap<RollupKey, StoredRollup>,
    expected: &'a BTreeMap<RollupKey, DayBooking>,
    range: TimeRange,
) -> Result<(usize, Differing<'a>), LedgerError> {
    let keys: BTreeSet<&RollupKey> = stored.keys().chain(expected.keys()).collect();
    let mut differing = Vec::new();
    for key in &keys {
        if let Some(found) = compare(key, stored.get(*key), expected.get(*key), range)? {
            differing.push(found);
        }
    }
    Ok((keys.len(), differing))
}

/// One rollup compared with its events over the range's hours: how it differs and the
/// rewrite that mends it, or `None` when it holds.
fn compare<'a>(
    (day, booking): &RollupKey,
    stored: Option<&'a StoredRollup>,
    wanted: Option<&'a DayBooking>,
    range: TimeRange,
) -> Result<Option<(RollupDifference, Rewrite<'a>)>, LedgerError> {
    static EMPTY: BTreeMap<u32, HourUsage> = BTreeMap::new();
    let hours = range.hours_of(*day);
    let stored_hours = stored.map(|r| &r.hours);
    let wanted_hours = wanted.map_or(&EMPTY, |w| &w.hours);
    let differing: Vec<u32> = hours
        .iter()
        .copied()
        .filter(|h| stored_hours.and_then(|s| s.get(h)) != wanted_hours.get(h))
        .collect();
    // The day's totals as they must be: the range's hours from the events, the others as
    // stored.
    let day_cells: Vec<HourUsage> = (0..24)
        .filter_map(|h| match hours.contains(&h) {
            true => wanted_hours.get(&h).copied(),
            false => stored_hours.and_then(|s| s.get(&h)).copied(),
        })
        .collect();
    let overflow = || Overflow::new(booking.subject(), day_text(*day));
    let expected_day = checked_sum(&day_cells).ok_or_else(overflow)?;
    let day_total_differs = stored.and_then(|r| r.day_total).unwrap_or_default() != expected_day;
    if differing.is_empty() && !day_total_differs {
        return Ok(None);
    }
    let sum = |cells: Option<&BTreeMap<u32, HourUsage>>| {
        let range_hours: Vec<HourUsage> = hours
            .iter()
            .filter_map(|h| cells.and_then(|c| c.get(h)).copied())
            .collect();
        checked_sum(&range_hours).ok_or_else(overflow)
    };
    let difference = RollupDifference {
        day: *day,
        booking: booking.clone(),
        hours: differing,
        day_total: day_total_differs,
        stored: sum(stored_hours)?,
        expected: sum(Some(wanted_hours))?,
    };
    let names = wanted
        .map(|w| &w.names)
        .or(stored.map(|r| &r.names))
        .unwrap_or(&NO_NAMES);
    let rewrite = Rewrite {
        key: stored.map_or_else(|| rollup_key(*day, booking), |r| r.key.clone()),
        hours,
        wanted: wanted_hours,
        day: expected_day,
        names,
        version: stored.and_then(|r| r.version),
    };
    Ok(Some((difference, rewrite)))
}

static NO_NAMES: BookingNames = BookingNames {
    sim_iccid: None,
    sim_unique_name: None,
    network_name: None,
};
