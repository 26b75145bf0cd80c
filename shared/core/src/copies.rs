//! The exactly-once rule for copies of one event: within a batch the first copy is the one
//! stored and the others can only be duplicates or conflicts of it; against what is stored,
//! the same data is a duplicate (its provider and path added to the deliveries once) and
//! other data under the same key a conflict.

use std::collections::HashMap;

use crate::delivery::{Delivery, delivery_tag};
use crate::event::{ConnectionEvent, DataHash, DedupeKey, ParsedItem};
use crate::stored::StoredDigest;

/// Copies of one dedupe key in input order; a rejected element is a chain of its own.
pub fn chains(inputs: &[(ParsedItem, Delivery)]) -> Vec<Vec<usize>> {
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

/// What a copy of a stored event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The same data. `new_tag` is this provider and path, when they had not delivered it
    /// before (it must be added to the deliveries).
    Duplicate { new_tag: Option<String> },
    /// Different data under the same key.
    Conflict { stored_hash: Option<DataHash> },
}

/// Classifies one copy against the stored event; a new tag is noted in `stored`, so a later
/// copy through the same provider and path is not new again.
pub fn classify(
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

/// The quarantine reason of a conflicting copy.
pub fn conflict_reason(event: &ConnectionEvent, stored_hash: Option<DataHash>) -> String {
    format!(
        "conflict: event {} was first stored with data hash {}, this copy's data hashes to {}",
        event.key,
        stored_hash.map_or_else(|| "(none)".to_owned(), |h| h.to_hex()),
        event.data_hash.to_hex()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Origin;
    use crate::event::parse_events;

    fn usage(sid: &str, sim: &str) -> ConnectionEvent {
        let json = serde_json::json!({
            "type": "com.twilio.iot.supersim.connection.data-session.updated",
            "id": sid,
            "time": "2024-11-03T10:00:00Z",
            "data": {
                "event_sid": sid, "sim_sid": sim, "account_sid": "AC1",
                "data_session_update_end_time": "2024-11-03T10:00:00Z",
                "data_upload": 1, "data_download": 2,
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
        let a = usage("EZa", "HS1");
        let b = usage("EZb", "HS1");
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
    fn a_copy_is_a_duplicate_once_per_provider_and_path_or_a_conflict() {
        let event = usage("EZ1", "HS1");
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
        let other = usage("EZ1", "HS2");
        assert_eq!(
            classify(&mut stored, &other, &kinesis()),
            Verdict::Conflict {
                stored_hash: Some(event.data_hash)
            }
        );
    }
}
