//! How a batch is written, decided without touching DynamoDB (so every rule here has a unit
//! test):
//!
//! 1. copies of one event in the batch form a *chain*, in input order: the first copy is
//!    the one stored; the others can only be duplicates or conflicts of it;
//! 2. the new usage events are cut into *units*: up to 25 events of one SIM and booking day,
//!    stored atomically with their merged rollup counts and one booking list;
//! 3. units go into transactions of at most 100 actions; units of the same SIM and day touch
//!    the same rollup, so they go into successive *waves*, never into concurrent
//!    transactions;
//! 4. a copy of a stored event is classified against what is stored: same data is a
//!    duplicate (its provider and path added to the deliveries once), other data a conflict.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::closes::Close;
use super::items::{RollupDelta, StoredDigest, merge_deltas};
use super::{Delivery, LedgerError};
use crate::delivery::delivery_tag;
use crate::event::{ConnectionEvent, DataHash, DedupeKey, ParsedItem};

/// At most this many events share a unit, so a unit's booking list (34-byte SIDs) stays
/// under a kilobyte.
pub(crate) const MAX_EVENTS_PER_UNIT: usize = 25;
/// DynamoDB takes up to 100 actions per transaction.
pub(crate) const MAX_ACTIONS_PER_TRANSACTION: usize = 100;
/// A transaction carries at most 4 MB; this leaves room for everything around `data`.
const MAX_DATA_BYTES_PER_TRANSACTION: usize = 2 * 1024 * 1024;

/// Copies of one dedupe key in input order; a rejected element is a chain of its own.
pub(crate) fn chains(inputs: &[(ParsedItem, Delivery)]) -> Vec<Vec<usize>> {
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(inputs.len());
    let mut chain_of_key: HashMap<&DedupeKey, usize> = HashMap::with_capacity(inputs.len());
    for (index, (item, _)) in inputs.iter().enumerate() {
        match item {
            Ok(event) => match chain_of_key.get(&event.key) {
                Some(&chain) => chains[chain].push(index),
                None => {
                    chain_of_key.insert(&event.key, chains.len());
                    chains.push(vec![index]);
                }
            },
            Err(_) => chains.push(vec![index]),
        }
    }
    chains
}

/// A new event waiting to be stored, with the index of its input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending<'a> {
    pub index: usize,
    pub event: &'a ConnectionEvent,
    pub delivery: &'a Delivery,
    /// The closed period the usage falls into, if any: the event is then also written as
    /// an adjustment of it.
    pub close: Option<&'a Close>,
}

/// New usage events of one SIM and booking day, stored together or not at all.
#[derive(Debug, Clone)]
pub(crate) struct Unit<'a> {
    pub sim_sid: &'a str,
    pub day: NaiveDate,
    pub events: Vec<Pending<'a>>,
}

impl<'a> Unit<'a> {
    /// The merged rollup counts of the unit's events, one per booking.
    pub fn deltas(&self) -> Result<Vec<RollupDelta>, LedgerError> {
        merge_deltas(
            self.events
                .iter()
                .filter_map(|p| RollupDelta::of(p.event, p.close.is_some())),
        )
    }

    /// Puts, rollup updates and the booking list.
    pub fn actions(&self) -> usize {
        let bookings = self.deltas().map(|d| d.len()).unwrap_or(self.events.len());
        self.events.len() + bookings + 1
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
pub(crate) type Waves<'a> = Vec<Vec<Vec<Unit<'a>>>>;

/// Cuts new usage events into units and packs them into waves of transactions.
pub(crate) fn plan_commits<'a>(new_usage: &[Pending<'a>]) -> Waves<'a> {
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

/// Greedily fills transactions up to 100 actions and 2 MB of data.
pub(crate) fn pack<'a>(units: impl IntoIterator<Item = Unit<'a>>) -> Vec<Vec<Unit<'a>>> {
    let mut transactions: Vec<Vec<Unit<'a>>> = Vec::new();
    let (mut actions, mut bytes) = (0, 0);
    for unit in units {
        let (unit_actions, unit_bytes) = (unit.actions(), unit.data_bytes());
        let fits = actions + unit_actions <= MAX_ACTIONS_PER_TRANSACTION
            && bytes + unit_bytes <= MAX_DATA_BYTES_PER_TRANSACTION;
        match transactions.last_mut() {
            Some(transaction) if fits => transaction.push(unit),
            _ => {
                transactions.push(vec![unit]);
                (actions, bytes) = (0, 0);
            }
        }
        actions += unit_actions;
        bytes += unit_bytes;
    }
    transactions
}

/// What a copy of a stored event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The same data. `new_tag` is this provider and path, when they had not delivered it
    /// before (it must be added to the deliveries).
    Duplicate { new_tag: Option<String> },
    /// Different data under the same key.
    Conflict { stored_hash: Option<DataHash> },
}

/// Classifies one copy against the stored event; a new tag is noted in `stored`, so a later
/// copy through the same provider and path is not new again.
pub(crate) fn classify(
    stored: &mut StoredDigest,
    event: &ConnectionEvent,
    delivery: &Delivery,
) -> Verdict {
    if stored.data_hash != Some(event.data_hash) {
        return Verdict::Conflict {
            stored_hash: stored.data_hash,
        };
    }
    let tag = delivery_tag(event.provider, &delivery.origin);
    if stored.deliveries.contains(&tag) {
        Verdict::Duplicate { new_tag: None }
    } else {
        stored.deliveries.push(tag.clone());
        Verdict::Duplicate { new_tag: Some(tag) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Origin;
    use crate::event::parse_events;

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
    fn copies_of_one_key_chain_in_input_order() {
        let a = usage("EZa", "HS1", "2024-11-03T10:00:00Z");
        let b = usage("EZb", "HS1", "2024-11-03T10:00:00Z");
        let rejected = parse_events(br#"[{"type":"x"}]"#).unwrap().remove(0);
        let d = kinesis();
        let inputs = vec![
            (Ok(a.clone()), d.clone()),
            (Ok(b), d.clone()),
            (rejected, d.clone()),
            (Ok(a), d),
        ];
        assert_eq!(chains(&inputs), vec![vec![0, 3], vec![1], vec![2]]);
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

    #[test]
    fn a_copy_is_a_duplicate_once_per_provider_and_path_or_a_conflict() {
        let event = usage("EZ1", "HS1", "2024-11-03T10:00:00Z");
        let mut stored = StoredDigest {
            data_hash: Some(event.data_hash),
            deliveries: vec!["twilio#webhook".into()],
        };
        assert_eq!(
            classify(&mut stored, &event, &kinesis()),
            Verdict::Duplicate {
                new_tag: Some("twilio#kinesis".into())
            }
        );
        assert_eq!(
            classify(&mut stored, &event, &kinesis()),
            Verdict::Duplicate { new_tag: None }
        );
        let other = usage("EZ1", "HS2", "2024-11-03T10:00:00Z");
        assert_eq!(
            classify(&mut stored, &other, &kinesis()),
            Verdict::Conflict {
                stored_hash: Some(event.data_hash)
            }
        );
    }
}
