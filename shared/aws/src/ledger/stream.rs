//! The table's stream, as the forwarders read it: which records are the insert of an event
//! record (Segment, alerts) or of a callback record or an alert (the event bus), and what
//! their new image holds.

use kore_ingest_core::port::LedgerError;
use kore_ingest_core::stored::StoredEvent;

use kore_ingest_core::alerts::Alert;

use super::alerts::alert_of;
use super::items::attrs::{Item, string_attr};
use kore_ingest_core::forward::StoredCallback;

use super::items::callback::stored_callback_of;
use super::items::event::stored_event_of;
use super::keys;

/// Whether a stream record is the insert of an event record: `event_name` as the stream
/// says it (`INSERT`, `MODIFY`, `REMOVE`), `keys_of_record` its keys. A copy from another
/// provider only modifies the record, so an event is inserted once however it was delivered;
/// every other item (rollups, booking lists, callbacks, the quarantine) is no event.
pub fn is_event_insert(event_name: &str, keys_of_record: &Item) -> bool {
    inserts_record(event_name, keys_of_record, |pk| {
        keys::event_of_pk(pk).is_some()
    })
}

/// The stored event in the new image of an event record's insert (`keys_of_record` name it).
pub fn inserted_event(keys_of_record: &Item, new_image: &Item) -> Result<StoredEvent, LedgerError> {
    stored_event_of(image_of(keys_of_record, new_image)?)
}

/// Whether a stream record is the insert of a callback record: a callback is stored once, so
/// each one is inserted once however often it was delivered.
pub fn is_callback_insert(event_name: &str, keys_of_record: &Item) -> bool {
    inserts_record(event_name, keys_of_record, |pk| {
        keys::callback_id_of_pk(pk).is_some()
    })
}

/// The stored callback in the new image of a callback record's insert.
pub fn inserted_callback(
    keys_of_record: &Item,
    new_image: &Item,
) -> Result<StoredCallback, LedgerError> {
    stored_callback_of(image_of(keys_of_record, new_image)?)
}

/// Whether a stream record is the insert of an alert: each alert is written once (its key
/// is its rule, subject, period and threshold), so it is inserted once.
pub fn is_alert_insert(event_name: &str, keys_of_record: &Item) -> bool {
    event_name == "INSERT" && string_attr(keys_of_record, "pk").is_some_and(keys::is_alerts_pk)
}

/// The alert in the new image of an alert's insert.
pub fn inserted_alert(keys_of_record: &Item, new_image: &Item) -> Result<Alert, LedgerError> {
    alert_of(image_of(keys_of_record, new_image)?)
}

/// An `INSERT` of the record alone in its partition (sort key `#`), the partition key being
/// of the kind `is_kind` accepts.
fn inserts_record(event_name: &str, keys_of_record: &Item, is_kind: impl Fn(&str) -> bool) -> bool {
    let key = |name: &str| string_attr(keys_of_record, name);
    event_name == "INSERT" && key("pk").is_some_and(is_kind) && key("sk") == Some(keys::SINGLE)
}

/// The new image, or why the record carries none.
fn image_of<'a>(keys_of_record: &Item, new_image: &'a Item) -> Result<&'a Item, LedgerError> {
    if new_image.is_empty() {
        return Err(LedgerError::CorruptItem {
            pk: string_attr(keys_of_record, "pk")
                .unwrap_or_default()
                .to_owned(),
            reason: "the stream record has no new image (the stream must carry NEW_IMAGE)".into(),
        });
    }
    Ok(new_image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::items::attrs::key;

    #[test]
    fn only_inserts_of_event_records_are_events() {
        let event = "EVENT#EZ00000000000000000000000000000001";
        let keys_of = |pk: &str, sk: &str| key(pk, sk);
        assert!(is_event_insert("INSERT", &keys_of(event, "#")));
        assert!(inserted_event(&keys_of(event, "#"), &Item::new()).is_err());
        for (name, pk, sk) in [
            ("MODIFY", event, "#"),
            ("REMOVE", event, "#"),
            ("INSERT", "USAGE#2024-11-04#07", "HS1#AC1#HF1#HW1#US"),
            ("INSERT", "SIM#HS1", "BOOKED#2024-11-04#EZ1"),
            ("INSERT", "CALLBACK#kore#RQ1", "#"),
            ("INSERT", "QUARANTINE#abc", "#"),
            ("INSERT", "QUARANTINE#abc", "PART#00000"),
            ("INSERT", event, "OTHER"),
        ] {
            assert!(!is_event_insert(name, &keys_of(pk, sk)), "{name} {pk} {sk}");
            let callback = (name, pk, sk) == ("INSERT", "CALLBACK#kore#RQ1", "#");
            assert_eq!(is_callback_insert(name, &keys_of(pk, sk)), callback);
        }
        for (name, pk, sk) in [
            ("MODIFY", "CALLBACK#kore#RQ1", "#"),
            (
                "INSERT",
                "SIM#HS1",
                "STATUS#2024-07-03T14:40:58.000Z#x#kore#RQ1",
            ),
            ("INSERT", "SIMSTATUS#3", "HS1"),
            ("INSERT", "ALERTSUM#r#2024-11-01#AC1", "#"),
        ] {
            assert!(
                !is_callback_insert(name, &keys_of(pk, sk)),
                "{name} {pk} {sk}"
            );
            assert!(!is_alert_insert(name, &keys_of(pk, sk)), "{name} {pk} {sk}");
        }
    }
}
