//! How a batch's new usage events are written, decided without touching DynamoDB (so every
//! rule here has a unit test):
//!
//! 1. they are cut into *units*: up to 25 events of one SIM and booking day, stored
//!    atomically with their folded rollup counts and one booking list;
//! 2. units go into transactions of at most 100 actions and 2 MB of data; units of the same
//!    SIM and day touch the same rollup, so they go into successive *waves*, never into
//!    concurrent transactions.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;

use kore_ingest_core::closes::Close;
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::event::ConnectionEvent;
use kore_ingest_core::usage::{DayBooking, Overflow, fold};

/// At most this many events share a unit, so a unit's booking list (34-byte SIDs) stays
/// under a kilobyte.
pub const MAX_EVENTS_PER_UNIT: usize = 25;
/// DynamoDB takes up to 100 actions per transaction.
pub const MAX_ACTIONS_PER_TRANSACTION: usize = 100;
/// A transaction carries at most 4 MB; this leaves room for everything around `data`.
const MAX_DATA_BYTES_PER_TRANSACTION: usize = 2 * 1024 * 1024;

/// A new event waiting to be stored, with the index of its input.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    pub index: usize,
    pub event: &'a ConnectionEvent,
    pub delivery: &'a Delivery,
    /// The closed period the usage falls into, if any: the event is then also written as
    /// an adjustment of it.
    pub close: Option<&'a Close>,
}

/// New usage events of one SIM and booking day, stored together or not at all.
#[derive(Debug, Clone)]
pub struct Unit<'a> {
    pub sim_sid: &'a str,
    pub day: NaiveDate,
    pub events: Vec<Pending<'a>>,
}

impl<'a> Unit<'a> {
    /// The folded rollup counts of the unit's events, one per booking.
    pub fn deltas(&self) -> Result<Vec<DayBooking>, Overflow> {
        let parts = self
            .events
            .iter()
            .filter_map(|p| DayBooking::of(p.event, p.close.is_some()));
        Ok(fold(parts)?.into_values().collect())
    }

    /// Puts, adjustments, rollup updates and the booking list.
    pub fn actions(&self) -> usize {
        let bookings = self.deltas().map(|d| d.len()).unwrap_or(self.events.len());
        let adjustments = self.events.iter().filter(|p| p.close.is_some()).count();
        self.events.len() + adjustments + bookings + 1
    }

    /// Whether its transaction may check its day's marker: some of its usage is not known
    /// to be in a closed period (whether the day is old enough to be closable is decided
    /// when the transaction is built; packing counts the check either way).
    pub fn checks_its_day(&self) -> bool {
        self.events.iter().any(|p| p.close.is_none())
    }

    fn data_bytes(&self) -> usize {
        self.events.iter().map(|p| p.event.data.len() + 1024).sum()
    }

    /// Without the events at `indexes` (input indexes).
    pub fn without(&self, indexes: &[usize]) -> Option<Unit<'a>> {
        let events: Vec<Pending<'a>> = self
            .events
            .iter()
            .filter(|p| !indexes.contains(&p.index))
            .copied()
            .collect();
        (!events.is_empty()).then_some(Unit { events, ..*self })
    }
}

/// The transactions to send: waves run one after another, the transactions of a wave at
/// once.
pub type Waves<'a> = Vec<Vec<Vec<Unit<'a>>>>;

/// Cuts new usage events into units and packs them into waves of transactions.
pub fn plan_commits<'a>(new_usage: &[Pending<'a>]) -> Waves<'a> {
    // Units per SIM and day, in input order.
    let mut groups: Vec<Vec<Unit<'a>>> = Vec::new();
    let mut group_of: HashMap<(&str, NaiveDate), usize> = HashMap::new();
    for pending in new_usage {
        let Some(sim) = pending.event.sim_sid.as_deref() else {
            continue;
        };
        let day = pending.event.billing_day;
        let group = *group_of.entry((sim, day)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        let units = &mut groups[group];
        match units.last_mut() {
            Some(unit) if unit.events.len() < MAX_EVENTS_PER_UNIT => unit.events.push(*pending),
            _ => units.push(Unit {
                sim_sid: sim,
                day,
                events: vec![*pending],
            }),
        }
    }
    let waves = groups.iter().map(Vec::len).max().unwrap_or(0);
    (0..waves)
        .map(|wave| {
            let units = groups.iter().filter_map(|units| units.get(wave).cloned());
            pack(units)
        })
        .collect()
}

/// Greedily fills transactions up to 100 actions (with one check of each day's marker) and
/// 2 MB of data.
pub fn pack<'a>(units: impl IntoIterator<Item = Unit<'a>>) -> Vec<Vec<Unit<'a>>> {
    let mut transactions: Vec<Vec<Unit<'a>>> = Vec::new();
    let (mut actions, mut bytes) = (0, 0);
    let mut checked_days: HashSet<NaiveDate> = HashSet::new();
    for unit in units {
        let check = |days: &HashSet<NaiveDate>| {
            usize::from(unit.checks_its_day() && !days.contains(&unit.day))
        };
        let unit_bytes = unit.data_bytes();
        let fits = actions + unit.actions() + check(&checked_days) <= MAX_ACTIONS_PER_TRANSACTION
            && bytes + unit_bytes <= MAX_DATA_BYTES_PER_TRANSACTION;
        if !fits || transactions.is_empty() {
            transactions.push(Vec::new());
            (actions, bytes) = (0, 0);
            checked_days.clear();
        }
        actions += unit.actions() + check(&checked_days);
        bytes += unit_bytes;
        if unit.checks_its_day() {
            checked_days.insert(unit.day);
        }
        if let Some(transaction) = transactions.last_mut() {
            transaction.push(unit);
        }
    }
    transactions
}

#[cfg(test)]
mod tests {
    use super::*;
    use kore_ingest_core::delivery::Origin;
    use kore_ingest_core::event::parse_events;

    fn usage(sid: &str, sim: &str, end: &str) -> ConnectionEvent {
        let json = serde_json::json!({
            "type": "com.twilio.iot.supersim.connection.data-session.updated",
            "id": sid,
            "time": end,
            "data": {
                "event_sid": sid, "sim_sid": sim, "account_sid": "AC1",
                "data_session_update_end_time": end, "data_upload": 1, "data_download": 2,
            },
        });
        parse_events(json.to_string().as_bytes())
            .unwrap()
            .remove(0)
            .unwrap()
    }

    fn kinesis() -> Delivery {
        Delivery::now(Origin::Kinesis {
            shard_id: "s".into(),
            sequence_number: "1".into(),
        })
    }

    #[test]
    fn one_event_per_sim_packs_into_few_transactions_of_at_most_100_actions() {
        let events: Vec<ConnectionEvent> = (0..100)
            .map(|i| usage(&format!("EZ{i}"), &format!("HS{i}"), "2024-11-03T10:00:00Z"))
            .collect();
        let d = kinesis();
        let pending: Vec<Pending<'_>> = events
            .iter()
            .enumerate()
            .map(|(index, event)| Pending {
                index,
                event,
                delivery: &d,
                close: None,
            })
            .collect();
        let waves = plan_commits(&pending);
        assert_eq!(waves.len(), 1, "different SIMs never wait for each other");
        // Each unit: a put, a rollup update, a booking list.
        let sizes: Vec<usize> = waves[0].iter().map(Vec::len).collect();
        assert_eq!(sizes, [33, 33, 33, 1]);
        for transaction in &waves[0] {
            assert!(transaction.iter().map(Unit::actions).sum::<usize>() <= 100);
        }
    }

    #[test]
    fn a_sims_day_splits_into_units_of_25_in_successive_waves() {
        let mut events = Vec::new();
        for i in 0..60 {
            // 60 windows of one SIM on one day, and 5 on the next.
            events.push(usage(&format!("EZ{i}"), "HS1", "2024-11-03T10:00:00Z"));
        }
        for i in 60..65 {
            events.push(usage(&format!("EZ{i}"), "HS1", "2024-11-04T10:00:00Z"));
        }
        let d = kinesis();
        let pending: Vec<Pending<'_>> = events
            .iter()
            .enumerate()
            .map(|(index, event)| Pending {
                index,
                event,
                delivery: &d,
                close: None,
            })
            .collect();
        let waves = plan_commits(&pending);
        let shape: Vec<Vec<Vec<usize>>> = waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .map(|t| t.iter().map(|u| u.events.len()).collect())
                    .collect()
            })
            .collect();
        // Wave 1: the 3rd's first 25 and the 4th's 5 (different rollups) share a transaction.
        assert_eq!(
            shape,
            vec![vec![vec![25, 5]], vec![vec![25]], vec![vec![10]]]
        );
        // Input order is kept inside a unit.
        assert_eq!(waves[1][0][0].events[0].index, 25);
        // One put per event, one rollup update, one booking list.
        assert_eq!(waves[0][0][0].actions(), 27);
    }
}
