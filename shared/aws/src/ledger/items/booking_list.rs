//! The booking list of one commit: the events it booked for one SIM and day, so that a
//! SIM's or a day's events are found again without an index entry per event.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;
use kore_ingest_core::event::DedupeKey;
use kore_ingest_core::port::LedgerError;

use super::attrs::{Item, expiring, key, pk_of, string_attr, string_set};
use crate::ledger::keys;

const BOOKED_EVENTS: &str = "ev";

/// The list of `events` (at least one) booked for `sim_sid` on `day`, expiring at
/// `expires_at` (as its events do) if at all.
pub fn booking_list_item(
    sim_sid: &str,
    day: NaiveDate,
    events: &[&DedupeKey],
    expires_at: Option<i64>,
) -> Item {
    let first = events[0];
    let mut item = key(keys::sim_pk(sim_sid), keys::booked_sk(day, first));
    item.insert(
        BOOKED_EVENTS.into(),
        AttributeValue::Ss(events.iter().map(|k| k.as_str().to_owned()).collect()),
    );
    expiring(item, expires_at)
}

/// The day of a booking list and the events it names.
pub fn booked_events_of(item: &Item) -> Result<(NaiveDate, Vec<DedupeKey>), LedgerError> {
    let sk = string_attr(item, "sk").unwrap_or_default();
    let day = keys::day_of_booked_sk(sk).ok_or_else(|| LedgerError::CorruptItem {
        pk: pk_of(item).to_owned(),
        reason: format!("bad booking list key {sk}"),
    })?;
    let events = string_set(item, BOOKED_EVENTS)
        .iter()
        .filter_map(|sid| DedupeKey::new(sid, "ev").ok())
        .collect();
    Ok((day, events))
}
