//! From bytes to [`ConnectionEvent`]s: the envelope, the provider, the dedupe key and the
//! booking instant; `data`'s fields are read by [`super::fields`].

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::excerpt::{MAX_QUOTE_BYTES, excerpt, quoted};

use super::fields::{
    DataFields, SESSION_FIELDS, WINDOW_FIELDS, json_type_name, optional_string, parse_time,
};
use super::types::{
    ConnectionEvent, DataHash, DataSession, DedupeKey, EventError, EventKind, ParsedItem, Provider,
    RejectedEvent,
};

/// Parses the bytes of a Kinesis record or of a webhook body: one CloudEvent or a JSON array
/// of them. `Err` means the payload as a whole is unusable (not UTF-8, not JSON, neither object
/// nor array); otherwise each element gets its own result, in order.
pub fn parse_events(bytes: &[u8]) -> Result<Vec<ParsedItem>, EventError> {
    if bytes.len() > super::MAX_PAYLOAD_BYTES {
        return Err(EventError::TooLarge { bytes: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| EventError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let elements: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
            Ok(elements
                .into_iter()
                .enumerate()
                .map(|(index, raw)| {
                    parse_event(raw.get()).map_err(|error| RejectedEvent {
                        index,
                        raw: raw.get().to_owned(),
                        error,
                    })
                })
                .collect())
        }
        Some(b'{') => {
            // A malformed object is a payload-level error: there is no element to single out.
            let raw: &RawValue =
                serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
            Ok(vec![parse_event(raw.get()).map_err(|error| {
                RejectedEvent {
                    index: 0,
                    raw: raw.get().to_owned(),
                    error,
                }
            })])
        }
        None => Err(EventError::NotJson("empty payload".into())),
        Some(_) => match serde_json::from_str::<Value>(text) {
            Ok(value) => Err(EventError::NotAnEvent {
                found: json_type_name(&value),
            }),
            Err(e) => Err(EventError::NotJson(e.to_string())),
        },
    }
}

/// The CloudEvent envelope. Fields are taken as raw JSON values so that a wrong type is
/// reported with the field's name rather than serde's line and column.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    event_type: Option<Value>,
    source: Option<Value>,
    id: Option<Value>,
    time: Option<Value>,
    dataschema: Option<Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Parses one CloudEvent given as JSON text.
pub fn parse_event(json: &str) -> Result<ConnectionEvent, EventError> {
    let envelope: Envelope<'_> = match serde_json::from_str(json) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Err(match serde_json::from_str::<Value>(json) {
                Ok(value) if !value.is_object() => EventError::NotAnEvent {
                    found: json_type_name(&value),
                },
                _ => EventError::NotJson(e.to_string()),
            });
        }
    };

    let event_type = optional_string(envelope.event_type.as_ref(), "type")?
        .ok_or(EventError::MissingField { field: "type" })?;
    let source = optional_string(envelope.source.as_ref(), "source")?;
    let dataschema = optional_string(envelope.dataschema.as_ref(), "dataschema")?;
    let cloud_event_id = optional_string(envelope.id.as_ref(), "id")?;
    let envelope_data = envelope.data;
    let envelope_time = optional_string(envelope.time.as_ref(), "time")?
        .map(|t| parse_time(&t, "time"))
        .transpose()?;

    let provider = detect_provider(&event_type, source.as_deref(), dataschema.as_deref())
        .ok_or_else(|| EventError::UnknownProvider {
            quoted_type: quoted(&event_type),
        })?;
    let envelope = EnvelopeFields {
        provider,
        event_type,
        cloud_event_id,
        source,
        time: envelope_time,
        raw: json.to_owned(),
    };
    normalize(envelope, data_text(envelope_data)?)
}

/// An event record read back from the ledger: its key, type, time and `data` as stored.
/// The provider is the one that delivered it first. Same rules as [`parse_event`]; the
/// stored key stands in for the CloudEvent `id` (test events have no `event_sid`).
pub fn from_stored(
    provider: Provider,
    key: &DedupeKey,
    event_type: &str,
    event_time: DateTime<Utc>,
    data: &str,
) -> Result<ConnectionEvent, EventError> {
    normalize(
        EnvelopeFields {
            provider,
            event_type: event_type.to_owned(),
            cloud_event_id: Some(key.as_str().to_owned()),
            source: None,
            time: Some(event_time),
            raw: String::new(),
        },
        data.to_owned(),
    )
}

/// What the envelope contributes to a [`ConnectionEvent`].
struct EnvelopeFields {
    provider: Provider,
    event_type: String,
    cloud_event_id: Option<String>,
    source: Option<String>,
    time: Option<DateTime<Utc>>,
    raw: String,
}

fn normalize(envelope: EnvelopeFields, data_text: String) -> Result<ConnectionEvent, EventError> {
    let EnvelopeFields {
        provider,
        event_type,
        cloud_event_id,
        source,
        time: envelope_time,
        raw,
    } = envelope;
    let kind = EventKind::classify(&event_type);

    let data: Map<String, Value> = serde_json::from_str(&data_text).map_err(|e| {
        EventError::invalid(
            "data",
            format!(
                "not a JSON object: {}",
                excerpt(&e.to_string(), MAX_QUOTE_BYTES)
            ),
        )
    })?;
    let fields = DataFields(&data);

    let key = match fields.string("event_sid", "data.event_sid")? {
        Some(sid) if !sid.is_empty() => DedupeKey::new(sid, "data.event_sid")?,
        _ => match cloud_event_id.as_deref() {
            Some(id) if !id.is_empty() => DedupeKey::new(id, "id")?,
            _ => return Err(EventError::NoDedupeKey),
        },
    };

    let timestamp = fields.time("timestamp", "data.timestamp")?;
    let event_time = envelope_time
        .or(timestamp)
        .ok_or(EventError::MissingField { field: "time" })?;
    let update_end_time = fields.time(
        "data_session_update_end_time",
        "data.data_session_update_end_time",
    )?;
    let booked_at = update_end_time.or(timestamp).unwrap_or(event_time);
    let billing_day = booked_at.date_naive();

    let sim_sid = fields.owned_string("sim_sid", "data.sim_sid")?;
    let usage = match &kind {
        EventKind::Connection(k) if k.carries_usage() => {
            // Usage that cannot be attributed to a SIM cannot be billed: refuse it here.
            if sim_sid.is_none() {
                return Err(EventError::MissingField {
                    field: "data.sim_sid",
                });
            }
            Some(fields.volume(WINDOW_FIELDS)?)
        }
        _ => None,
    };
    let cumulative = if fields.any_present(SESSION_FIELDS) {
        Some(fields.volume(SESSION_FIELDS)?)
    } else {
        None
    };
    let session = match fields.string("data_session_sid", "data.data_session_sid")? {
        Some(sid) if !sid.is_empty() => Some(DataSession {
            sid: sid.to_owned(),
            start_time: fields.time("data_session_start_time", "data.data_session_start_time")?,
            end_time: fields.time("data_session_end_time", "data.data_session_end_time")?,
            update_start_time: fields.time(
                "data_session_update_start_time",
                "data.data_session_update_start_time",
            )?,
            update_end_time,
            cumulative,
        }),
        _ => None,
    };

    Ok(ConnectionEvent {
        provider,
        kind,
        key,
        cloud_event_id,
        source,
        sim_sid,
        account_sid: fields.owned_string("account_sid", "data.account_sid")?,
        fleet_sid: fields.owned_string("fleet_sid", "data.fleet_sid")?,
        sim_iccid: fields.owned_string("sim_iccid", "data.sim_iccid")?,
        sim_unique_name: fields.owned_string("sim_unique_name", "data.sim_unique_name")?,
        network: fields.network()?,
        event_time,
        booked_at,
        billing_day,
        usage,
        session,
        data_hash: DataHash::of_data(&data),
        data: data_text,
        event_type,
        raw,
    })
}

/// KORE if anything in the envelope says KORE (KORE's own sample code sends `com.twilio.*`
/// types with KORE's source and schema), else Twilio if the type or schema says Twilio.
pub(super) fn detect_provider(
    event_type: &str,
    source: Option<&str>,
    dataschema: Option<&str>,
) -> Option<Provider> {
    let says_kore = |s: &str| s.to_ascii_lowercase().contains("kore");
    if event_type.starts_with("com.kore.")
        || source.is_some_and(says_kore)
        || dataschema.is_some_and(says_kore)
    {
        Some(Provider::Kore)
    } else if event_type.starts_with("com.twilio.")
        || dataschema.is_some_and(|d| d.contains("twilio.com"))
    {
        Some(Provider::Twilio)
    } else {
        None
    }
}

/// The text of the `data` object: the raw object itself, or the JSON inside a string.
fn data_text(data: Option<&RawValue>) -> Result<String, EventError> {
    let raw = data.ok_or(EventError::MissingField { field: "data" })?;
    match raw.get().as_bytes().first() {
        Some(b'{') => Ok(raw.get().to_owned()),
        Some(b'"') => serde_json::from_str::<String>(raw.get())
            .map_err(|e| EventError::invalid("data", excerpt(&e.to_string(), MAX_QUOTE_BYTES))),
        Some(b'n') => Err(EventError::MissingField { field: "data" }),
        _ => Err(EventError::invalid(
            "data",
            "expected an object or a string holding a JSON object",
        )),
    }
}
