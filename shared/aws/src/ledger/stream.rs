//! The table's stream, as the Segment forwarder reads it: which records are the insert of
//! an event record, and the stored event in a record's new image.

use kore_ingest_core::port::LedgerError;
use kore_ingest_core::stored::StoredEvent;

use super::items::attrs::Item;
use super::items::event::stored_event_of;
use super::keys;

/// Whether a stream record is the insert of an event record: `event_name` as the stream
/// says it (`INSERT`, `MODIFY`, `REMOVE`), `keys_of_record` its keys. A copy from another
/// provider only modifies the record, so an event is inserted once however it was delivered;
/// every other item (rollups, booking lists, callbacks, the quarantine) is no event.
pub fn is_event_insert(event_name: &str, keys_of_record: &Item) -> bool {
    let key = |name: &str| super::items::attrs::string_attr(keys_of_record, name);
    event_name == "INSERT"
        && key("pk").is_some_and(|pk| keys::event_of_pk(pk).is_some())
        && key("sk") == Some(keys::SINGLE)
}

/// The stored event in the new image of an event record's insert (`keys_of_record` name it).
pub fn inserted_event(keys_of_record: &Item, new_image: &Item) -> Result<StoredEvent, LedgerError> {
    if new_image.is_empty() {
        return Err(LedgerError::CorruptItem {
            pk: super::items::attrs::string_attr(keys_of_record, "pk")
                .unwrap_or_default()
                .to_owned(),
            reason: "the stream record has no new image (the stream must carry NEW_IMAGE)".into(),
        });
    }
    stored_event_of(new_image)
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
        }
    }
}
