//! Webhook deliveries handed to the Kinesis stream when storage fails ("spilled"), and how
//! the consumer recognises them.
//!
//! A spilled record is one JSON object that starts with [`MARKER`] and carries the verified
//! request's provider, request id and time of receipt next to the CloudEvents themselves,
//! each exactly as received. The consumer stores those events as delivered by the webhook
//! (their `deliveries` say `webhook`), so a spilled copy and a later retry of the same
//! request meet as duplicates. Only the webhook writes such records; the stream's other
//! writers (KORE, Twilio) write CloudEvents, which never start with the marker.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::delivery::{Delivery, Origin};
use crate::event::Provider;
use crate::time::timestamp;

/// How every spilled record starts (and so how the consumer tells it from a CloudEvent).
pub const MARKER: &str = r#"{"kore_ingest_spill":1,"#;

/// Kinesis takes records up to 1 MiB (data and partition key); this leaves room for the key.
pub const MAX_RECORD_BYTES: usize = 1_000_000;

/// Why the events could not be put into records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpillError {
    #[error("event {index} alone is {bytes} bytes, more than a Kinesis record holds")]
    TooLarge { index: usize, bytes: usize },
    #[error("a spilled record is malformed: {0}")]
    Malformed(String),
}

/// The request the spilled events came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpilledRequest {
    pub provider: Option<Provider>,
    pub request_id: String,
    pub received_at: DateTime<Utc>,
}

/// Records for `events` (each one CloudEvent's raw JSON text), in order, each under
/// [`MAX_RECORD_BYTES`]: as many events per record as fit.
pub fn encode(request: &SpilledRequest, events: &[&str]) -> Result<Vec<Vec<u8>>, SpillError> {
    let head = format!(
        "{MARKER}\"provider\":{},\"request_id\":{},\"received_at\":{},\"events\":[",
        serde_json::Value::from(request.provider.map(Provider::as_str)),
        serde_json::Value::from(request.request_id.as_str()),
        serde_json::Value::from(timestamp(request.received_at)),
    );
    let tail = "]}";
    let mut records = Vec::new();
    let mut current = String::new();
    for (index, event) in events.iter().enumerate() {
        let alone = head.len() + event.len() + tail.len();
        if alone > MAX_RECORD_BYTES {
            return Err(SpillError::TooLarge {
                index,
                bytes: event.len(),
            });
        }
        if !current.is_empty() && current.len() + 1 + event.len() + tail.len() > MAX_RECORD_BYTES {
            current.push_str(tail);
            records.push(std::mem::take(&mut current).into_bytes());
        }
        if current.is_empty() {
            current.push_str(&head);
        } else {
            current.push(',');
        }
        current.push_str(event);
    }
    if !current.is_empty() {
        current.push_str(tail);
        records.push(current.into_bytes());
    }
    Ok(records)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    kore_ingest_spill: u8,
    provider: Option<&'a str>,
    request_id: String,
    received_at: DateTime<Utc>,
    #[serde(borrow)]
    events: &'a RawValue,
}

/// A spilled record: the request, and its events as one JSON array (for `parse_events`).
/// `None` when the record is not a spilled one (a CloudEvent or anything else).
pub fn decode(record: &[u8]) -> Option<Result<(SpilledRequest, &str), SpillError>> {
    if !record.starts_with(MARKER.as_bytes()) {
        return None;
    }
    let decoded = std::str::from_utf8(record)
        .map_err(|e| SpillError::Malformed(e.to_string()))
        .and_then(|text| {
            serde_json::from_str::<Envelope<'_>>(text)
                .map_err(|e| SpillError::Malformed(e.to_string()))
        })
        .and_then(|envelope| {
            if envelope.kore_ingest_spill != 1 {
                return Err(SpillError::Malformed(format!(
                    "unknown version {}",
                    envelope.kore_ingest_spill
                )));
            }
            let provider =
                match envelope.provider {
                    None => None,
                    Some(name) => Some(Provider::from_name(name).ok_or_else(|| {
                        SpillError::Malformed(format!("unknown provider `{name}`"))
                    })?),
                };
            Ok((
                SpilledRequest {
                    provider,
                    request_id: envelope.request_id,
                    received_at: envelope.received_at,
                },
                envelope.events.get(),
            ))
        });
    Some(decoded)
}

/// The delivery a stream record stands for and the bytes to parse, one rule for every reader
/// of stream records (the consumer, `replay`, `quarantine redrive`): a spilled webhook
/// request's events, delivered by the webhook (its provider, request id and time of
/// receipt), or the record itself, delivered as `otherwise` says.
pub fn delivery_of(
    record: &[u8],
    otherwise: impl FnOnce() -> Delivery,
) -> Result<(Delivery, &[u8]), SpillError> {
    match decode(record) {
        None => Ok((otherwise(), record)),
        Some(Ok((request, events))) => Ok((
            Delivery {
                origin: Origin::Webhook {
                    request_id: request.request_id,
                },
                received_at: request.received_at,
                provider_hint: request.provider,
            },
            events.as_bytes(),
        )),
        Some(Err(error)) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SpilledRequest {
        SpilledRequest {
            provider: Some(Provider::Kore),
            request_id: "req-\"1\"".into(),
            received_at: DateTime::parse_from_rfc3339("2024-11-03T10:00:00.123Z")
                .unwrap()
                .to_utc(),
        }
    }

    #[test]
    fn round_trip_keeps_every_event_byte_for_byte_in_order() {
        let events = [
            r#"{"id":"EZ1", "data": {"a": 1}}"#,
            "{\n  \"id\": \"EZ2\"\n}",
        ];
        let records = encode(&request(), &events).unwrap();
        assert_eq!(records.len(), 1);
        let (decoded, array) = decode(&records[0]).unwrap().unwrap();
        assert_eq!(decoded, request());
        assert_eq!(array, format!("[{},{}]", events[0], events[1]));
        assert!(
            decode(events[0].as_bytes()).is_none(),
            "a CloudEvent is not spilled"
        );
    }

    #[test]
    fn large_batches_split_under_the_record_limit_and_an_oversized_event_is_refused() {
        let event = format!(r#"{{"id":"EZ","pad":"{}"}}"#, "x".repeat(300_000));
        let events = vec![event.as_str(); 7];
        let records = encode(&request(), &events).unwrap();
        assert_eq!(records.len(), 3);
        let mut seen = 0;
        for record in &records {
            assert!(record.len() <= MAX_RECORD_BYTES);
            let (_, array) = decode(record).unwrap().unwrap();
            seen += serde_json::from_str::<Vec<&RawValue>>(array).unwrap().len();
        }
        assert_eq!(seen, 7);
        let huge = "y".repeat(MAX_RECORD_BYTES);
        assert!(matches!(
            encode(&request(), &[&huge]),
            Err(SpillError::TooLarge { index: 0, .. })
        ));
    }

    #[test]
    fn a_malformed_spilled_record_is_an_error_not_an_event() {
        let bad = format!("{MARKER}\"provider\":\"nobody\"}}");
        assert!(matches!(decode(bad.as_bytes()), Some(Err(_))));
    }
}
