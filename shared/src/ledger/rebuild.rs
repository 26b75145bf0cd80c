//! `kore-usage rebuild`: every rollup of a range recomputed from the stored event records
//! (their raw `data` is kept, so nothing needs re-sending). With `check`, nothing changes
//! and the rollups that differ are listed: the audit before invoicing. Without it they are
//! rewritten: the repair, and the migration of a table written before per-booking rollups
//! (its events are found through the time index, and get booking lists on the way).
//!
//! Events come from the booking lists of every SIM with a rollup in the range, and from the
//! time index for events written by the earlier layout. A rewrite is conditional on the
//! rollup's version, so a commit that lands meanwhile is never overwritten: the rollup is
//! compared again instead.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Days, NaiveDate, Timelike, Utc};

use super::access::condition_failed;
use super::items::{
    self, StoredRollup, booking_list_item, day_total, rollup_key, rollup_rewrite, string_attr,
};
use super::plan::MAX_EVENTS_PER_UNIT;
use super::reports::{day_list, normalized};
use super::{LedgerError, UsageLedger};
use crate::event::DedupeKey;
use crate::usage::{Booking, BookingNames, HourUsage, days_between, is_whole_hour};

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
    /// Events of the earlier layout that got booking lists (0 with `check`).
    pub listed: usize,
}

/// A rollup's hours and names as the events say.
#[derive(Debug, Default)]
struct Expected {
    hours: BTreeMap<u32, HourUsage>,
    names: BookingNames,
    names_at: Option<DateTime<Utc>>,
}

type RollupKey = (NaiveDate, Booking);

/// Rewrites that lose a race with a commit are compared again, this often.
const ROUNDS: usize = 3;

impl UsageLedger {
    /// Recomputes the rollups of `[start, end)` (whole hours) from the events; with
    /// `check`, only lists the ones that differ.
    pub async fn rebuild(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        check: bool,
    ) -> Result<RebuildReport, LedgerError> {
        if start >= end || !is_whole_hour(start) || !is_whole_hour(end) {
            return Err(LedgerError::Invalid(
                "a rebuild range starts before it ends, on whole hours".into(),
            ));
        }
        let mut report = RebuildReport::default();
        for round in 1..=ROUNDS {
            let (round_report, lost_races) = self.rebuild_round(start, end, check).await?;
            let rewritten = report.rewritten + round_report.rewritten;
            let listed = report.listed + round_report.listed;
            report = RebuildReport {
                rewritten,
                listed,
                ..round_report
            };
            if lost_races == 0 || check {
                return Ok(report);
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

    /// One comparison (and rewrite): the report, and how many rewrites lost a race.
    async fn rebuild_round(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        check: bool,
    ) -> Result<(RebuildReport, usize), LedgerError> {
        let days = days_between(start, end);
        let (Some(&first), Some(&last)) = (days.first(), days.last()) else {
            return Ok((RebuildReport::default(), 0));
        };
        // Rollups first: a commit after this read changes a version, and loses no count.
        let stored: BTreeMap<RollupKey, StoredRollup> = self
            .rollups(&days, None, true, None)
            .await?
            .into_iter()
            .map(|r| ((r.day, r.booking.clone()), r))
            .collect();

        let mut keys: BTreeSet<DedupeKey> = BTreeSet::new();
        let mut listed: HashSet<DedupeKey> = HashSet::new();
        let sims: BTreeSet<&str> = stored.keys().map(|(_, b)| b.sim_sid.as_str()).collect();
        for sim in sims {
            for (_, key) in self.booked_events(sim, Some((first, last)), true).await? {
                listed.insert(key.clone());
                keys.insert(key);
            }
        }
        keys.extend(self.legacy_usage_events(first, last).await?);

        let hour_in_range = |at: DateTime<Utc>| start <= at && at < end;
        let mut expected: BTreeMap<RollupKey, Expected> = BTreeMap::new();
        let mut unlisted: BTreeMap<(String, NaiveDate), Vec<DedupeKey>> = BTreeMap::new();
        let keys: Vec<DedupeKey> = keys.into_iter().collect();
        let mut usage_events = 0;
        for stored_event in self.stored_events(&keys).await? {
            let event = normalized(&stored_event)?;
            let (Some(booking), Some(usage)) = (Booking::of(&event), event.usage) else {
                continue;
            };
            let hour = event.booking_hour();
            if !hour_in_range(hour) {
                continue;
            }
            usage_events += 1;
            if !listed.contains(&event.key) {
                unlisted
                    .entry((booking.sim_sid.clone(), event.billing_day))
                    .or_default()
                    .push(event.key.clone());
            }
            let entry = expected.entry((event.billing_day, booking)).or_default();
            let cell = entry.hours.entry(hour.hour()).or_default();
            *cell = cell
                .checked_add(HourUsage::window(usage))
                .ok_or_else(|| LedgerError::Invalid("usage counts overflow".into()))?;
            if entry.names_at.is_none_or(|at| at <= event.booked_at) {
                entry.names = BookingNames::of(&event);
                entry.names_at = Some(event.booked_at);
            }
        }

        let mut report = RebuildReport {
            rollups_compared: 0,
            usage_events,
            ..RebuildReport::default()
        };
        let mut lost_races = 0;
        let rollup_keys: BTreeSet<&RollupKey> = stored.keys().chain(expected.keys()).collect();
        for key_of_rollup in rollup_keys {
            report.rollups_compared += 1;
            let (day, booking) = key_of_rollup;
            let hours = hours_of(*day, start, end);
            let stored_rollup = stored.get(key_of_rollup);
            let stored_hours = stored_rollup.map(|r| &r.hours);
            let wanted = expected.get(key_of_rollup);
            let empty = BTreeMap::new();
            let wanted_hours = wanted.map_or(&empty, |w| &w.hours);
            let differing: Vec<u32> = hours
                .iter()
                .copied()
                .filter(|h| stored_hours.and_then(|s| s.get(h)) != wanted_hours.get(h))
                .collect();
            // The day's totals as they must be: the range's hours from the events, the
            // others as stored.
            let day_cells = (0..24).filter_map(|h| {
                if hours.contains(&h) {
                    wanted_hours.get(&h)
                } else {
                    stored_hours.and_then(|s| s.get(&h))
                }
            });
            let expected_day = day_total(day_cells)?;
            let stored_day = stored_rollup.and_then(|r| r.day_total);
            let day_total_differs = stored_day.unwrap_or_default() != expected_day;
            if differing.is_empty() && !day_total_differs {
                continue;
            }
            let sum = |cells: Option<&BTreeMap<u32, HourUsage>>| {
                day_total(hours.iter().filter_map(|h| cells.and_then(|c| c.get(h))))
            };
            report.differences.push(RollupDifference {
                day: *day,
                booking: booking.clone(),
                hours: differing,
                day_total: day_total_differs,
                stored: sum(stored_hours)?,
                expected: sum(Some(wanted_hours))?,
            });
            if check {
                continue;
            }
            let names = wanted
                .map(|w| w.names.clone())
                .or_else(|| stored_rollup.map(|r| r.names.clone()))
                .unwrap_or_default();
            let rewrite = Rewrite {
                key: stored_rollup.map_or_else(|| rollup_key(*day, booking), |r| r.key.clone()),
                hours: &hours,
                wanted: wanted_hours,
                day: expected_day,
                names: &names,
                version: stored_rollup.and_then(|r| r.version),
            };
            match self.rewrite_rollup(rewrite).await? {
                true => report.rewritten += 1,
                false => lost_races += 1,
            }
        }
        if !check {
            report.listed = self.list_unlisted(unlisted).await?;
        }
        Ok((report, lost_races))
    }

    /// Usage events written before booking lists existed: the time index has them, by the
    /// day of their event time (a day either side of the booking days).
    async fn legacy_usage_events(
        &self,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<Vec<DedupeKey>, LedgerError> {
        let first = first.checked_sub_days(Days::new(1)).unwrap_or(first);
        let last = last.checked_add_days(Days::new(1)).unwrap_or(last);
        let mut found = Vec::new();
        for day in day_list(first, last) {
            let (Some(from), Some(to)) = (
                day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
                day.succ_opt()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc()),
            ) else {
                continue;
            };
            // Only the earlier layout projected `kind`; only usage kinds matter here.
            for (_, key, item) in self.time_index(day, from, to).await? {
                if matches!(
                    string_attr(&item, "kind"),
                    Some("data-session.updated" | "data-session.ended")
                ) {
                    found.push(key);
                }
            }
        }
        Ok(found)
    }

    /// Makes a rollup what the events say, if no commit changed it since it was read (false
    /// when one did). A rollup left without usage is deleted.
    async fn rewrite_rollup(&self, rewrite: Rewrite<'_>) -> Result<bool, LedgerError> {
        // Unchanged since it was read (its version), or still absent.
        let (condition, seen) = match rewrite.version {
            Some(version) => ("#v = :seen", Some(AttributeValue::N(version.to_string()))),
            None => ("attribute_not_exists(pk)", None),
        };
        let names = seen
            .as_ref()
            .map(|_| HashMap::from([("#v".to_owned(), items::VERSION.to_owned())]));
        let mut values = seen.map(|seen| HashMap::from([(":seen".to_owned(), seen)]));
        let result = if rewrite.day.events == 0 {
            let result = self
                .client
                .delete_item()
                .table_name(self.table_name())
                .set_key(Some(rewrite.key))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ());
            result.map_err(|e| (condition_failed(&e), LedgerError::from_sdk("DeleteItem", e)))
        } else {
            let update = rollup_rewrite(
                rewrite.key,
                rewrite.hours.iter().copied(),
                rewrite.wanted,
                rewrite.day,
                rewrite.names,
            );
            values
                .get_or_insert_with(HashMap::new)
                .extend(update.values);
            let result = self
                .client
                .update_item()
                .table_name(self.table_name())
                .set_key(Some(update.key))
                .update_expression(update.expression)
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map(|_| ());
            result.map_err(|e| (condition_failed(&e), LedgerError::from_sdk("UpdateItem", e)))
        };
        match result {
            Ok(()) => Ok(true),
            Err((true, _)) => Ok(false),
            Err((false, error)) => Err(error),
        }
    }

    /// Booking lists for events of the earlier layout, so a SIM's sessions and evidence
    /// find them too.
    async fn list_unlisted(
        &self,
        unlisted: BTreeMap<(String, NaiveDate), Vec<DedupeKey>>,
    ) -> Result<usize, LedgerError> {
        let mut listed = 0;
        for ((sim, day), keys) in unlisted {
            for chunk in keys.chunks(MAX_EVENTS_PER_UNIT) {
                let refs: Vec<&DedupeKey> = chunk.iter().collect();
                self.client
                    .put_item()
                    .table_name(self.table_name())
                    .set_item(Some(booking_list_item(&sim, day, &refs)))
                    .send()
                    .await
                    .map_err(|e| LedgerError::from_sdk("PutItem", e))?;
                listed += chunk.len();
            }
        }
        Ok(listed)
    }
}

/// The hours of `day` inside `[start, end)`.
fn hours_of(day: NaiveDate, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<u32> {
    (0..24)
        .filter(|h| {
            day.and_hms_opt(*h, 0, 0)
                .map(|t| t.and_utc())
                .is_some_and(|at| start <= at && at < end)
        })
        .collect()
}

/// One rollup as a rebuild wants it.
struct Rewrite<'a> {
    key: super::Item,
    /// The range's hours of that day.
    hours: &'a [u32],
    wanted: &'a BTreeMap<u32, HourUsage>,
    day: HourUsage,
    names: &'a BookingNames,
    /// The version read; `None`: the rollup did not exist.
    version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_range_s_hours_of_a_day_are_compared() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        assert_eq!(
            hours_of(day, at("2024-11-03T22:00:00Z"), at("2024-11-04T02:00:00Z")),
            [22, 23]
        );
        assert_eq!(
            hours_of(day, at("2024-11-01T00:00:00Z"), at("2024-12-01T00:00:00Z")).len(),
            24
        );
    }
}
