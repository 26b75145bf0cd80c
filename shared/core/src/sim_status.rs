//! A SIM's status by the time each SIM-update callback was sent, not the order callbacks
//! arrive in: KORE retries and replays, so an "inactive" sent before an "active" may arrive
//! after it. The one rule: a status holds from its send time until the next one's; of two
//! sent at the same time, the later arrival wins. The ledger's conditional write of the
//! current status ([`StatusChange::order`] as text) and every read here follow it.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use crate::callback::SentAtSource;
use crate::event::Provider;
use crate::time::{TimeRange, midnight};

/// The status that makes a SIM-day count as active (KORE bills a monthly fee per active SIM).
pub const ACTIVE: &str = "active";

/// One SIM-update callback's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub status: String,
    pub sent_at: DateTime<Utc>,
    pub sent_at_source: SentAtSource,
    pub received_at: DateTime<Utc>,
    pub provider: Provider,
}

impl StatusChange {
    /// What decides between two statuses: the later send time, then the later arrival.
    pub fn order(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.sent_at, self.received_at)
    }

    pub fn is_active(&self) -> bool {
        self.status.eq_ignore_ascii_case(ACTIVE)
    }
}

/// The entries in the order the rule reads them: by send time, then arrival.
pub fn timeline(mut entries: Vec<StatusChange>) -> Vec<StatusChange> {
    entries.sort_by_key(StatusChange::order);
    entries
}

/// The current status: the latest by [`StatusChange::order`].
pub fn current(entries: &[StatusChange]) -> Option<&StatusChange> {
    entries.iter().max_by_key(|e| e.order())
}

/// Every change of status, oldest first: a status the SIM already had (a retry, a replay
/// with a fresh token, a repeated update) is not a change and is left out.
pub fn changes(entries: Vec<StatusChange>) -> Vec<StatusChange> {
    let mut changes: Vec<StatusChange> = Vec::new();
    for entry in timeline(entries) {
        if changes
            .last()
            .is_none_or(|last| last.status != entry.status)
        {
            changes.push(entry);
        }
    }
    changes
}

/// A SIM's activity over a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The UTC days of the range on which the SIM was active at any moment by its history,
    /// or had usage booked.
    pub active_days: BTreeSet<NaiveDate>,
    /// Active by the last status sent before the range's end; `None` when none was.
    pub active_at_end: Option<bool>,
}

/// A SIM's activity over `range` from its status entries (any order) and the days of the
/// range it had usage booked on.
pub fn activity(
    entries: Vec<StatusChange>,
    range: &TimeRange,
    usage_days: &BTreeSet<NaiveDate>,
) -> Activity {
    let timeline = timeline(entries);
    // Each status holds from its send time until the next one's (never, for the earlier of
    // two sent at the same time); the last holds on.
    let active_spans: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = timeline
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.is_active())
        .map(|(i, entry)| (entry.sent_at, timeline.get(i + 1).map(|next| next.sent_at)))
        .collect();
    let mut active_days: BTreeSet<NaiveDate> = usage_days
        .iter()
        .copied()
        .filter(|day| range.days().contains(day))
        .collect();
    for day in range.days() {
        let from = midnight(day).max(range.start());
        let to = (midnight(day) + chrono::Duration::days(1)).min(range.end());
        let active = active_spans
            .iter()
            .any(|(start, end)| *start < to && end.is_none_or(|end| end > from && end > *start));
        if active {
            active_days.insert(day);
        }
    }
    let active_at_end = timeline
        .iter()
        .rev()
        .find(|entry| entry.sent_at < range.end())
        .map(StatusChange::is_active);
    Activity {
        active_days,
        active_at_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn entry(status: &str, sent: &str, received: &str) -> StatusChange {
        StatusChange {
            status: status.into(),
            sent_at: at(sent),
            sent_at_source: SentAtSource::DateHeader,
            received_at: at(received),
            provider: Provider::Kore,
        }
    }

    fn days(list: &[&str]) -> BTreeSet<NaiveDate> {
        list.iter()
            .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap())
            .collect()
    }

    #[test]
    fn a_retried_inactive_arriving_after_a_later_active_does_not_roll_the_status_back() {
        let active = entry("active", "2024-07-03T14:40:58Z", "2024-07-03T14:41:00Z");
        let retried = entry("inactive", "2024-07-03T14:00:00Z", "2024-07-03T14:45:00Z");
        assert_eq!(
            current(&[active.clone(), retried.clone()]),
            Some(&active),
            "arrival order must not decide"
        );
        assert_eq!(current(&[retried, active.clone()]), Some(&active));
    }

    #[test]
    fn of_two_sent_at_the_same_time_the_later_arrival_wins() {
        let first = entry("active", "2024-07-03T14:00:00Z", "2024-07-03T14:00:01Z");
        let second = entry("inactive", "2024-07-03T14:00:00Z", "2024-07-03T14:00:02Z");
        assert_eq!(current(&[second.clone(), first.clone()]), Some(&second));
        let activity = activity(
            vec![first, second],
            &TimeRange::of_period("2024-07-03").unwrap(),
            &BTreeSet::new(),
        );
        assert_eq!(activity.active_days, BTreeSet::new(), "active for no time");
        assert_eq!(activity.active_at_end, Some(false));
    }

    #[test]
    fn history_lists_changes_oldest_first_without_repeats() {
        let history = changes(vec![
            entry("active", "2024-07-05T00:00:00Z", "2024-07-05T00:00:01Z"),
            entry("ready", "2024-07-01T00:00:00Z", "2024-07-01T00:00:01Z"),
            entry("active", "2024-07-02T00:00:00Z", "2024-07-02T00:00:01Z"),
            // A replay of the same update with a fresh token, arriving later.
            entry("active", "2024-07-02T00:00:00Z", "2024-07-09T00:00:00Z"),
            entry("inactive", "2024-07-03T00:00:00Z", "2024-07-03T00:00:01Z"),
        ]);
        let statuses: Vec<(&str, DateTime<Utc>)> = history
            .iter()
            .map(|e| (e.status.as_str(), e.sent_at))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("ready", at("2024-07-01T00:00:00Z")),
                ("active", at("2024-07-02T00:00:00Z")),
                ("inactive", at("2024-07-03T00:00:00Z")),
                ("active", at("2024-07-05T00:00:00Z")),
            ]
        );
    }

    #[test]
    fn active_days_count_any_active_moment_and_usage_days_within_the_range() {
        let entries = vec![
            entry("active", "2024-07-02T23:59:00Z", "2024-07-02T23:59:01Z"),
            entry("inactive", "2024-07-03T00:01:00Z", "2024-07-03T00:01:01Z"),
            entry("active", "2024-07-06T12:00:00Z", "2024-07-06T12:00:01Z"),
        ];
        let range = TimeRange::new(at("2024-07-01T00:00:00Z"), at("2024-07-08T00:00:00Z")).unwrap();
        let activity = activity(
            entries,
            &range,
            &days(&["2024-07-04", "2024-06-30", "2024-07-08"]),
        );
        assert_eq!(
            activity.active_days,
            days(&[
                "2024-07-02",
                "2024-07-03",
                "2024-07-04",
                "2024-07-06",
                "2024-07-07"
            ])
        );
        assert_eq!(activity.active_at_end, Some(true));
    }

    #[test]
    fn before_its_first_status_a_sim_is_not_known_to_be_active() {
        let entries = vec![entry(
            "active",
            "2024-07-05T00:00:00Z",
            "2024-07-05T00:00:01Z",
        )];
        let range = TimeRange::of_period("2024-07-04").unwrap();
        let activity = activity(entries, &range, &BTreeSet::new());
        assert_eq!(activity.active_days, BTreeSet::new());
        assert_eq!(activity.active_at_end, None);
    }
}
