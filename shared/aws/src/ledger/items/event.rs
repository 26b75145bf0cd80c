//! The event record: the `data` object exactly as received (deflated), its hash, the
//! envelope's type and time, when it first arrived and who delivered it. Everything else
//! (SIM, amounts, booking) is derived from `data` when needed, which keeps the item, and so
//! its write, at one kilobyte. Events without usage also carry the time index keys.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use kore_ingest_core::delivery::{Delivery, delivery_tag};
use kore_ingest_core::event::{ConnectionEvent, DataHash, DedupeKey};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::stored::{StoredDigest, StoredEvent};
use kore_ingest_core::time::timestamp;

use kore_ingest_core::retention::Retention;

use super::attrs::{Item, bytes_attr, expiring, key, pk_of, s, string_attr, string_set};
use crate::ledger::keys;

const DATA_DEFLATE: &str = "z";
const DATA_HASH: &str = "h";
const EVENT_TYPE: &str = "ty";
const EVENT_TIME: &str = "et";
const RECEIVED_AT: &str = "ra";
pub const DELIVERIES: &str = "deliveries";

/// What the duplicate check reads of a stored event.
pub const DIGEST_PROJECTION: &str = "pk, h, deliveries";

/// A stored data object larger than this after inflating is refused as corrupt: nothing
/// the pipeline accepts is larger (`MAX_PAYLOAD_BYTES`).
const MAX_DATA_BYTES: usize = 8 * 1024 * 1024;
const _: () = assert!(MAX_DATA_BYTES > kore_ingest_core::event::MAX_PAYLOAD_BYTES);

/// The key of an event record.
pub fn event_key(key_of_event: &DedupeKey) -> Item {
    key(keys::event_pk(key_of_event), keys::SINGLE)
}

/// The record of a new event.
pub fn event_item(event: &ConnectionEvent, delivery: &Delivery, retention: &Retention) -> Item {
    let mut item = event_key(&event.key);
    let compressed = miniz_oxide::deflate::compress_to_vec(event.data.as_bytes(), 6);
    item.insert(
        DATA_DEFLATE.into(),
        AttributeValue::B(Blob::new(compressed)),
    );
    item.insert(
        DATA_HASH.into(),
        AttributeValue::B(Blob::new(event.data_hash.as_bytes().to_vec())),
    );
    item.insert(
        DELIVERIES.into(),
        AttributeValue::Ss(vec![delivery_tag(event.provider, &delivery.origin)]),
    );
    item.insert(EVENT_TYPE.into(), s(event.event_type.as_str()));
    let event_time = timestamp(event.event_time);
    item.insert(RECEIVED_AT.into(), s(timestamp(delivery.received_at)));
    if event.usage.is_none() {
        // The time index (gsi1 keys are always projected): how events without usage are
        // found again by time. Usage events are found through their booking lists instead,
        // which costs no index write per event.
        let (pk, sk) =
            keys::time_index_keys(&event.key, event.event_time.date_naive(), &event_time);
        item.insert("gsi1pk".into(), s(pk));
        item.insert("gsi1sk".into(), s(sk));
    }
    item.insert(EVENT_TIME.into(), s(event_time));
    // Kept until the archive holds it.
    expiring(
        item,
        retention.expires_at(event.archive_day(), delivery.received_at),
    )
}

/// The stored hash and deliveries of an event record (whole, or read with
/// [`DIGEST_PROJECTION`]).
pub fn digest_of(item: &Item) -> StoredDigest {
    StoredDigest {
        data_hash: bytes_attr(item, DATA_HASH).and_then(DataHash::from_bytes),
        deliveries: string_set(item, DELIVERIES),
    }
}

/// The event key of an event record.
pub fn key_of(item: &Item) -> Result<DedupeKey, LedgerError> {
    let pk = pk_of(item);
    let sid = keys::event_of_pk(pk).ok_or_else(|| corrupt(pk, "not an event record"))?;
    DedupeKey::new(sid, "pk").map_err(|e| corrupt(pk, &format!("bad event key: {e}")))
}

/// An event record as DynamoDB returns it (a read, or a stream's new image).
pub fn stored_event_of(item: &Item) -> Result<StoredEvent, LedgerError> {
    let pk = pk_of(item);
    let key = key_of(item)?;
    let deflated = bytes_attr(item, DATA_DEFLATE).ok_or_else(|| corrupt(pk, "no data"))?;
    let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, MAX_DATA_BYTES)
        .map_err(|_| corrupt(pk, "the deflated data does not inflate"))?;
    let data = String::from_utf8(raw).map_err(|_| corrupt(pk, "the data is not UTF-8"))?;
    let event_type = string_attr(item, EVENT_TYPE)
        .ok_or_else(|| corrupt(pk, "no event type"))?
        .to_owned();
    let event_time = string_attr(item, EVENT_TIME)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| corrupt(pk, "no event time"))?
        .with_timezone(&Utc);
    let digest = digest_of(item);
    Ok(StoredEvent {
        key,
        event_type,
        event_time,
        data,
        data_hash: digest.data_hash,
        deliveries: digest.deliveries,
        received_at: string_attr(item, RECEIVED_AT).map(str::to_owned),
    })
}

fn corrupt(pk: &str, reason: &str) -> LedgerError {
    LedgerError::CorruptItem {
        pk: pk.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kore_ingest_core::delivery::Origin;
    use kore_ingest_core::event::parse_events;

    fn kinesis() -> Delivery {
        Delivery::now(Origin::Kinesis {
            shard_id: "shardId-000000000000".into(),
            sequence_number: "1".into(),
        })
    }

    #[test]
    fn event_records_round_trip_and_stay_under_a_kilobyte() {
        let real = parse_events(include_bytes!(
            "../../../../../tests/fixtures/twilio-kinesis-data-session-updated.json"
        ))
        .unwrap()
        .remove(0)
        .unwrap();
        let item = event_item(&real, &kinesis(), &Retention::default());
        assert!(
            !item.contains_key(super::super::attrs::EXPIRES_AT),
            "kept forever by default"
        );
        assert!(
            !item.contains_key("gsi1pk"),
            "usage events have no index entry"
        );
        let stored = stored_event_of(&item).unwrap();
        assert_eq!(stored.data, real.data);
        assert_eq!(stored.data_hash, Some(real.data_hash));
        assert_eq!(stored.deliveries, ["twilio#kinesis"]);
        assert_eq!(stored.event().unwrap().usage, real.usage);
        let size = super::super::rollup::tests::item_size(&item);
        assert!(size < 1024, "{size} bytes");
    }

    #[test]
    fn with_a_retention_an_event_record_expires_after_its_booking_day() {
        let real = parse_events(include_bytes!(
            "../../../../../tests/fixtures/twilio-kinesis-data-session-updated.json"
        ))
        .unwrap()
        .remove(0)
        .unwrap();
        let retention = Retention {
            ledger_days: Some(45),
            seal_after_days: 3,
        };
        let delivery = kinesis();
        let item = event_item(&real, &delivery, &retention);
        // A 2024 event arriving now: the settle time and margin after its arrival.
        let expected = delivery.received_at.timestamp() + 13 * 86_400;
        assert_eq!(
            item.get(super::super::attrs::EXPIRES_AT),
            Some(&AttributeValue::N(expected.to_string()))
        );
    }
}
