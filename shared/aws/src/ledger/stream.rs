//! The table's stream, as the Segment forwarder reads it: which records are the insert of
//! an event record, and the stored event in a record's new image.

use kore_ingest_core::port::LedgerError;
use kore_ingest_core::stored::StoredEvent;

use super::items::attrs::Item;
use super::items::event::stored_event_of;
use super::keys;

/// The stored event of a stream record, if the record is the insert of an event record:
/// `event_name` as the stream says it (`INSERT`, `MODIFY`, `REMOVE`), `keys` its keys and
/// `new_image` the item written. A copy from another provider only modifies the record, so
/// an event is inserted once however it was delivered; every other item is no event.
pub fn inserted_event(
    event_name: &str,
    keys_of_record: &Item,
    new_image: &Item,
) -> Option<Result<StoredEvent, LedgerError>> {
    let key = |name: &str| {
        [keys_of_record, new_image]
            .into_iter()
            .find_map(|item| super::items::attrs::string_attr(item, name))
    };
    let is_event = event_name == "INSERT"
        && key("pk").is_some_and(|pk| keys::event_of_pk(pk).is_some())
        && key("sk") == Some(keys::SINGLE);
    if !is_event {
        return None;
    }
    if new_image.is_empty() {
        return Some(Err(LedgerError::CorruptItem {
            pk: key("pk").unwrap_or_default().to_owned(),
            reason: "the stream record has no new image (the stream must carry NEW_IMAGE)".into(),
        }));
    }
    Some(stored_event_of(new_image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::items::attrs::key;

    #[test]
    fn only_inserts_of_event_records_are_events() {
        let event = "EVENT#EZ00000000000000000000000000000001";
        let keys_of = |pk: &str, sk: &str| key(pk, sk);
        assert!(inserted_event("INSERT", &keys_of(event, "#"), &Item::new()).is_some());
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
            assert!(
                inserted_event(name, &keys_of(pk, sk), &Item::new()).is_none(),
                "{name} {pk} {sk}"
            );
        }
    }
}
