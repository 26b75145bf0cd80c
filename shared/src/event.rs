//! Super SIM Connection Events (and Event Streams test events) as KORE and Twilio send them:
//! CloudEvents 1.0 in JSON, one object or an array, `data` as an object or as a string holding
//! JSON. [`parse_events`] turns the bytes of a Kinesis record or of a webhook body into typed
//! [`ConnectionEvent`]s; a bad element of an array fails alone, with its raw text kept so that it
//! can be quarantined.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Which system delivered an event. During the migration the same event arrives from both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Twilio,
    Kore,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Kore => "kore",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "twilio" => Some(Provider::Twilio),
            "kore" => Some(Provider::Kore),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seven Super SIM connection event kinds: the suffix after `supersim.connection.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    AttachmentAccepted,
    AttachmentRejected,
    AttachmentFailed,
    DataSessionStarted,
    DataSessionUpdated,
    DataSessionEnded,
    DataSessionFailed,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 7] = [
        ConnectionKind::AttachmentAccepted,
        ConnectionKind::AttachmentRejected,
        ConnectionKind::AttachmentFailed,
        ConnectionKind::DataSessionStarted,
        ConnectionKind::DataSessionUpdated,
        ConnectionKind::DataSessionEnded,
        ConnectionKind::DataSessionFailed,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            ConnectionKind::AttachmentAccepted => "attachment.accepted",
            ConnectionKind::AttachmentRejected => "attachment.rejected",
            ConnectionKind::AttachmentFailed => "attachment.failed",
            ConnectionKind::DataSessionStarted => "data-session.started",
            ConnectionKind::DataSessionUpdated => "data-session.updated",
            ConnectionKind::DataSessionEnded => "data-session.ended",
            ConnectionKind::DataSessionFailed => "data-session.failed",
        }
    }

    pub fn from_suffix(suffix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.suffix() == suffix)
    }

    /// Only `updated` and `ended` carry a usage window; billing counts nothing else.
    pub fn carries_usage(self) -> bool {
        matches!(
            self,
            ConnectionKind::DataSessionUpdated | ConnectionKind::DataSessionEnded
        )
    }
}

/// What an event is. Unknown types are kept (stored, never dropped) with their type string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    Connection(ConnectionKind),
    Test,
    Other(String),
}

impl EventKind {
    /// A short stable name: the connection suffix, `test`, or `other`.
    pub fn name(&self) -> &str {
        match self {
            EventKind::Connection(kind) => kind.suffix(),
            EventKind::Test => "test",
            EventKind::Other(_) => "other",
        }
    }

    /// The kind a CloudEvent `type` names (also for readers of stored events, whose record
    /// keeps the type).
    pub fn classify(event_type: &str) -> Self {
        const MARKER: &str = "supersim.connection.";
        if let Some(at) = event_type.find(MARKER)
            && let Some(kind) = ConnectionKind::from_suffix(&event_type[at + MARKER.len()..])
        {
            return EventKind::Connection(kind);
        }
        // KORE: com.kore.eventstreams.test.event; Twilio: com.twilio.eventstreams.test-event
        if event_type.ends_with(".test.event") || event_type.ends_with(".test-event") {
            return EventKind::Test;
        }
        EventKind::Other(event_type.to_owned())
    }
}

/// The key every copy of one event shares: `data.event_sid`, else the CloudEvent `id`.
/// Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupeKey(String);

impl DedupeKey {
    /// DynamoDB keys hold 2 KB; real keys are 34 characters. Anything long is not a real key.
    const MAX_LEN: usize = 256;

    pub fn new(key: &str, field: &'static str) -> Result<Self, EventError> {
        if key.len() > Self::MAX_LEN {
            return Err(EventError::invalid(field, "longer than 256 bytes"));
        }
        if key.chars().any(char::is_control) {
            return Err(EventError::invalid(field, "contains control characters"));
        }
        Ok(DedupeKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bytes up and down and their total, for one usage window or for a whole session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DataVolume {
    pub upload: u64,
    pub download: u64,
    pub total: u64,
}

/// The network an event names (`data.network`): its SID, name and ISO country. Any of them
/// may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Network {
    pub sid: Option<String>,
    pub friendly_name: Option<String>,
    pub iso_country: Option<String>,
}

/// The largest byte count one event may report: 2^50 bytes (a petabyte), far above any
/// real window, low enough that sums over millions of events stay exact in a `u64`.
pub const MAX_AMOUNT: u64 = 1 << 50;

/// The data session an event belongs to, with whatever times this event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSession {
    pub sid: String,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub update_start_time: Option<DateTime<Utc>>,
    pub update_end_time: Option<DateTime<Utc>>,
    /// `data_session_data_*`: running totals since the session started (schema v2).
    pub cumulative: Option<DataVolume>,
}

/// SHA-256 of the canonical form of `data`: sorted keys, no whitespace. The same event from
/// Twilio and from KORE hashes the same; a different payload under the same key does not.
///
/// `data.event_type` is left out: it is documented both as identical on both paths and as a
/// copy of the envelope's type, which differs (`com.twilio.…` / `com.kore.…`). Either reading
/// must count an event once, and the type says nothing about usage.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataHash([u8; 32]);

impl DataHash {
    pub fn of_data(data: &Map<String, Value>) -> Self {
        const NOT_HASHED: &str = "event_type";
        let mut canonical = Vec::with_capacity(1024);
        write_canonical_entries(
            data.iter().filter(|(key, _)| key.as_str() != NOT_HASHED),
            &mut canonical,
        );
        DataHash(Sha256::digest(&canonical).into())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(DataHash)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(DataHash(bytes))
    }
}

impl fmt::Debug for DataHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataHash({})", self.to_hex())
    }
}

/// One normalized event, valid by construction: it has a provider, a key, a time and a
/// billing day. Built only by [`parse_events`] / [`parse_event`] (the struct is
/// `non_exhaustive`, so other crates cannot assemble one by hand).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConnectionEvent {
    pub provider: Provider,
    pub kind: EventKind,
    /// The CloudEvent `type`, in full (`com.kore.iot.supersim.connection.data-session.updated`).
    pub event_type: String,
    pub key: DedupeKey,
    /// The CloudEvent `id` (equal to `event_sid` for Super SIM events).
    pub cloud_event_id: Option<String>,
    pub source: Option<String>,
    pub sim_sid: Option<String>,
    pub account_sid: Option<String>,
    pub fleet_sid: Option<String>,
    /// `data.sim_iccid` and `data.sim_unique_name`, as this event names them.
    pub sim_iccid: Option<String>,
    pub sim_unique_name: Option<String>,
    /// `data.network`: the network (and country) this event's usage happened on.
    pub network: Option<Network>,
    /// The CloudEvent `time`, else `data.timestamp`, in UTC.
    pub event_time: DateTime<Utc>,
    /// When the usage happened, for booking: `data_session_update_end_time`, else
    /// `timestamp`, else the event time (UTC). Usage is booked in this instant's UTC hour.
    pub booked_at: DateTime<Utc>,
    /// UTC date of [`Self::booked_at`].
    pub billing_day: NaiveDate,
    /// The usage window: only on `data-session.updated` and `data-session.ended`.
    pub usage: Option<DataVolume>,
    pub session: Option<DataSession>,
    /// The `data` object exactly as received (the inner text when `data` was a JSON string).
    pub data: String,
    pub data_hash: DataHash,
    /// The whole CloudEvent as received, kept to quarantine a conflicting copy.
    pub raw: String,
}

impl ConnectionEvent {
    /// The start of the UTC hour the usage is booked in.
    pub fn booking_hour(&self) -> DateTime<Utc> {
        use chrono::{DurationRound, TimeDelta};
        self.booked_at
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(self.booked_at)
    }

    /// `YYYY-MM-DD`
    pub fn billing_day_string(&self) -> String {
        self.billing_day.format("%Y-%m-%d").to_string()
    }

    /// `YYYY-MM`
    pub fn billing_month_string(&self) -> String {
        self.billing_day.format("%Y-%m").to_string()
    }
}

/// Why a payload or one event in it cannot be used. Each variant names the field and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("payload is not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload must be a CloudEvent object or a JSON array of them, found {found}")]
    NotAnEvent { found: &'static str },
    #[error("field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(
        "cannot tell whether KORE or Twilio sent type `{event_type}` (source and dataschema name neither)"
    )]
    UnknownProvider { event_type: String },
    #[error("no dedupe key: neither `data.event_sid` nor `id` is present")]
    NoDedupeKey,
}

impl EventError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        EventError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// An element of a batch that could not be parsed: its position, its raw JSON text (for the
/// quarantine) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    pub index: usize,
    pub raw: String,
    pub error: EventError,
}

/// One element of a parsed payload.
pub type ParsedItem = Result<ConnectionEvent, RejectedEvent>;

/// Parses the bytes of a Kinesis record or of a webhook body: one CloudEvent or a JSON array
/// of them. `Err` means the payload as a whole is unusable (not UTF-8, not JSON, neither object
/// nor array); otherwise each element gets its own result, in order.
pub fn parse_events(bytes: &[u8]) -> Result<Vec<ParsedItem>, EventError> {
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
            event_type: event_type.clone(),
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

    let data: Map<String, Value> = serde_json::from_str(&data_text)
        .map_err(|e| EventError::invalid("data", format!("not a JSON object: {e}")))?;
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
fn detect_provider(
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
            .map_err(|e| EventError::invalid("data", e.to_string())),
        Some(b'n') => Err(EventError::MissingField { field: "data" }),
        _ => Err(EventError::invalid(
            "data",
            "expected an object or a string holding a JSON object",
        )),
    }
}

const WINDOW_FIELDS: [(&str, &str); 3] = [
    ("data_upload", "data.data_upload"),
    ("data_download", "data.data_download"),
    ("data_total", "data.data_total"),
];
const SESSION_FIELDS: [(&str, &str); 3] = [
    ("data_session_data_upload", "data.data_session_data_upload"),
    (
        "data_session_data_download",
        "data.data_session_data_download",
    ),
    ("data_session_data_total", "data.data_session_data_total"),
];

/// Typed, field-naming accessors over the `data` object. Absent and `null` are the same.
struct DataFields<'a>(&'a Map<String, Value>);

impl<'a> DataFields<'a> {
    fn present(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn any_present(&self, names: [(&str, &str); 3]) -> bool {
        names.iter().any(|(name, _)| self.present(name).is_some())
    }

    fn string(&self, name: &str, field: &'static str) -> Result<Option<&'a str>, EventError> {
        optional_str(self.present(name), field)
    }

    fn owned_string(&self, name: &str, field: &'static str) -> Result<Option<String>, EventError> {
        Ok(self
            .string(name, field)?
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }

    fn time(&self, name: &str, field: &'static str) -> Result<Option<DateTime<Utc>>, EventError> {
        self.string(name, field)?
            .map(|t| parse_time(t, field))
            .transpose()
    }

    fn amount(&self, name: &str, field: &'static str) -> Result<Option<u64>, EventError> {
        let Some(value) = self.present(name) else {
            return Ok(None);
        };
        let Value::Number(n) = value else {
            return Err(EventError::invalid(
                field,
                format!("expected a byte count, found {}", json_type_name(value)),
            ));
        };
        let bytes = if let Some(bytes) = n.as_u64() {
            bytes
        } else {
            match n.as_f64() {
                Some(f) if f < 0.0 => {
                    return Err(EventError::invalid(field, "must not be negative"));
                }
                // Byte counts are whole; accept `1024.0` but never round a fraction into a bill.
                Some(f) if f.fract() == 0.0 && f <= 9_007_199_254_740_992.0 => f as u64,
                Some(f) if f.fract() == 0.0 => u64::MAX,
                _ => {
                    return Err(EventError::invalid(
                        field,
                        "must be a whole number of bytes",
                    ));
                }
            }
        };
        if bytes > MAX_AMOUNT {
            return Err(EventError::invalid(
                field,
                format!("{n} bytes exceeds the 2^50-byte limit of one event"),
            ));
        }
        Ok(Some(bytes))
    }

    /// `data.network`: absent or null is an unknown network; otherwise an object whose
    /// `sid`, `friendly_name` and `iso_country` are strings when present.
    fn network(&self) -> Result<Option<Network>, EventError> {
        let Some(value) = self.present("network") else {
            return Ok(None);
        };
        let Value::Object(network) = value else {
            return Err(EventError::invalid(
                "data.network",
                format!("expected an object, found {}", json_type_name(value)),
            ));
        };
        let inner = DataFields(network);
        let network = Network {
            sid: inner.owned_string("sid", "data.network.sid")?,
            friendly_name: inner.owned_string("friendly_name", "data.network.friendly_name")?,
            iso_country: inner.owned_string("iso_country", "data.network.iso_country")?,
        };
        Ok((network != Network::default()).then_some(network))
    }

    /// Missing amounts are zero; a missing total is upload + download.
    fn volume(&self, names: [(&str, &'static str); 3]) -> Result<DataVolume, EventError> {
        let upload = self.amount(names[0].0, names[0].1)?.unwrap_or(0);
        let download = self.amount(names[1].0, names[1].1)?.unwrap_or(0);
        let total = match self.amount(names[2].0, names[2].1)? {
            Some(total) => total,
            // Both are at most 2^50: the sum cannot overflow.
            None => upload + download,
        };
        Ok(DataVolume {
            upload,
            download,
            total,
        })
    }
}

fn optional_str<'a>(
    value: Option<&'a Value>,
    field: &'static str,
) -> Result<Option<&'a str>, EventError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::invalid(
            field,
            format!("expected a string, found {}", json_type_name(other)),
        )),
    }
}

fn optional_string(
    value: Option<&Value>,
    field: &'static str,
) -> Result<Option<String>, EventError> {
    Ok(optional_str(value, field)?.map(str::to_owned))
}

/// Both styles: Twilio `2022-12-14T13:40:52.000Z`, KORE `2024-09-25T19:09:48.5842087+00:00`.
fn parse_time(text: &str, field: &'static str) -> Result<DateTime<Utc>, EventError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EventError::invalid(field, format!("`{text}` is not an RFC 3339 time: {e}")))
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Canonical JSON: keys sorted by their UTF-8 bytes at every level, no whitespace, strings
/// and numbers as serde_json writes them. Sorting here (rather than relying on the map's
/// order) keeps the hash stable even if a dependency turns on `preserve_order`.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            // Writing a scalar into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_canonical_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    write_canonical_entries(map.iter(), out);
}

fn write_canonical_entries<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
) {
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWILIO_RECORD: &str =
        include_str!("../../tests/fixtures/twilio-kinesis-data-session-updated.json");
    const KORE_BATCH: &str =
        include_str!("../../tests/fixtures/kore-webhook-data-session-batch.json");
    const KORE_TEST: &str = include_str!("../../tests/fixtures/kore-test-event.json");
    const TWILIO_TEST: &str =
        include_str!("../../tests/fixtures/twilio-test-event-string-data.json");

    fn only(items: Vec<ParsedItem>) -> ConnectionEvent {
        assert_eq!(items.len(), 1);
        items.into_iter().next().unwrap().unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn real_twilio_kinesis_record_normalizes() {
        let event = only(parse_events(TWILIO_RECORD.as_bytes()).unwrap());
        assert_eq!(event.provider, Provider::Twilio);
        assert_eq!(
            event.kind,
            EventKind::Connection(ConnectionKind::DataSessionUpdated)
        );
        assert_eq!(event.key.as_str(), "EZeb42ec296e094786c6dd34aab7b15fac");
        assert_eq!(
            event.sim_sid.as_deref(),
            Some("HS2f71995b834d803ff5376799ba59bd1d")
        );
        assert_eq!(
            event.account_sid.as_deref(),
            Some("ACe7ea554f7fc0fad65e689bb5899bb6c3")
        );
        assert_eq!(
            event.fleet_sid.as_deref(),
            Some("HF925ae5b4af6aeb7d5034d3f4b09c78ce")
        );
        assert_eq!(event.usage, Some(DataVolume::default()));
        assert_eq!(event.billing_day_string(), "2022-12-14");
        assert_eq!(event.billing_month_string(), "2022-12");
        assert_eq!(event.event_time, utc("2022-12-14T13:40:52Z"));
        let session = event.session.unwrap();
        assert_eq!(session.sid, "PIc64fc7780f12ab694aad316d7b06f7a3");
        assert_eq!(session.start_time, Some(utc("2022-12-11T06:15:01Z")));
        assert_eq!(session.cumulative, Some(DataVolume::default()));
    }

    #[test]
    fn kore_webhook_batch_yields_window_and_cumulative_totals() {
        let events: Vec<ConnectionEvent> = parse_events(KORE_BATCH.as_bytes())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.provider == Provider::Kore));
        let windows: Vec<u64> = events.iter().map(|e| e.usage.unwrap().total).collect();
        assert_eq!(windows, [122_880, 5_120]);
        let cumulative: Vec<u64> = events
            .iter()
            .map(|e| e.session.as_ref().unwrap().cumulative.unwrap().total)
            .collect();
        assert_eq!(cumulative, [245_760, 250_880]);
        assert_eq!(
            events[0].usage,
            Some(DataVolume {
                upload: 20_480,
                download: 102_400,
                total: 122_880
            })
        );
        assert_eq!(
            events[1].kind,
            EventKind::Connection(ConnectionKind::DataSessionEnded)
        );
        // KORE's seven-digit fractions and numeric offsets parse to UTC.
        assert_eq!(
            events[0].event_time,
            utc("2024-11-03T10:15:00.1234567+00:00")
        );
        assert_eq!(events[0].billing_day_string(), "2024-11-03");
        assert_eq!(
            events[1].session.as_ref().unwrap().end_time,
            Some(utc("2024-11-03T10:22:41Z"))
        );
    }

    #[test]
    fn kore_test_event_is_keyed_on_its_id() {
        let event = only(parse_events(KORE_TEST.as_bytes()).unwrap());
        assert_eq!(event.provider, Provider::Kore);
        assert_eq!(event.kind, EventKind::Test);
        assert_eq!(event.key.as_str(), "fff521c2-c7db-4b53-a5a0-c5d5d01f66ce");
        assert_eq!(event.usage, None);
        assert_eq!(event.billing_day_string(), "2024-09-25");
    }

    #[test]
    fn twilio_test_event_with_string_data_is_parsed() {
        let event = only(parse_events(TWILIO_TEST.as_bytes()).unwrap());
        assert_eq!(event.provider, Provider::Twilio);
        assert_eq!(event.kind, EventKind::Test);
        assert_eq!(event.key.as_str(), "AC1234567890123456789012");
        assert_eq!(
            event.data,
            r#"{"test_id":"95001c1e-5b8e-45f5-830d-f9cbf1d16420"}"#
        );
    }

    #[test]
    fn same_data_from_both_providers_hashes_the_same() {
        let kore = parse_event(&KORE_BATCH_FIRST()).unwrap();
        // The Twilio envelope of the same data, with data as a string, keys reordered and
        // whitespace added: the data object is the same, so the hash must be too.
        let data: Value = serde_json::from_str(&kore.data).unwrap();
        let mut pairs: Vec<(String, Value)> =
            data.as_object().unwrap().clone().into_iter().collect();
        pairs.reverse();
        let reordered = format!(
            "{{ {} }}",
            pairs
                .iter()
                .map(|(k, v)| format!("{:?} :  {}", k, serde_json::to_string_pretty(v).unwrap()))
                .collect::<Vec<_>>()
                .join(",\n  ")
        );
        let twilio_json = serde_json::json!({
            "specversion": "1.0",
            "type": "com.twilio.iot.supersim.connection.data-session.updated",
            "source": format!("/v1/SuperSim/ConnectionEvents/{}", kore.key),
            "id": kore.key.as_str(),
            "dataschema": "https://events-schemas.twilio.com/SuperSim.ConnectionEvent/2",
            "time": "2024-11-03T10:15:00.000Z",
            "data": reordered,
        })
        .to_string();
        let twilio = parse_event(&twilio_json).unwrap();
        assert_eq!(twilio.provider, Provider::Twilio);
        assert_ne!(twilio.data, kore.data);
        assert_eq!(twilio.data_hash, kore.data_hash);
        assert_eq!(twilio.key, kore.key);
        assert_eq!(twilio.usage, kore.usage);
    }

    #[allow(non_snake_case)]
    fn KORE_BATCH_FIRST() -> String {
        let batch: Vec<Value> = serde_json::from_str(KORE_BATCH).unwrap();
        batch[0].to_string()
    }

    #[test]
    fn event_type_copied_into_data_does_not_change_the_hash() {
        // Twilio's copy may carry its own type in data.event_type, KORE's copy KORE's.
        let kore = parse_event(&KORE_BATCH_FIRST()).unwrap();
        let twilio_typed = KORE_BATCH_FIRST().replace(
            r#""event_type":"com.kore.iot.supersim.connection.data-session.updated""#,
            r#""event_type":"com.twilio.iot.supersim.connection.data-session.updated""#,
        );
        assert_ne!(twilio_typed, KORE_BATCH_FIRST());
        assert_eq!(
            parse_event(&twilio_typed).unwrap().data_hash,
            kore.data_hash
        );
    }

    #[test]
    fn different_data_hashes_differently() {
        let original = parse_event(&KORE_BATCH_FIRST()).unwrap();
        let altered = KORE_BATCH_FIRST().replace("\"data_upload\":20480", "\"data_upload\":20481");
        assert_ne!(parse_event(&altered).unwrap().data_hash, original.data_hash);
    }

    #[test]
    fn data_is_kept_byte_for_byte() {
        let json = r#"{"type":"com.kore.iot.supersim.connection.attachment.accepted","id":"EZ1","time":"2024-01-01T00:00:00Z","source":"kore-events","data": { "event_sid" : "EZ1", "zz": 1.50, "unknown": {"b":2, "a":1} } }"#;
        let event = parse_event(json).unwrap();
        assert_eq!(
            event.data,
            r#"{ "event_sid" : "EZ1", "zz": 1.50, "unknown": {"b":2, "a":1} }"#
        );
        assert_eq!(event.usage, None);
    }

    #[test]
    fn provider_comes_from_type_source_and_schema() {
        let cases = [
            (
                "com.kore.iot.supersim.connection.attachment.accepted",
                "x",
                "x",
                Some(Provider::Kore),
            ),
            // KORE sample code: Twilio type, KORE metadata.
            (
                "com.twilio.iot.supersim.connection.attachment.accepted",
                "kore-events",
                "x",
                Some(Provider::Kore),
            ),
            (
                "com.twilio.iot.supersim.connection.attachment.accepted",
                "x",
                "https://events-schemas.korewireless.com/SuperSim.ConnectionEvent/2",
                Some(Provider::Kore),
            ),
            (
                "com.twilio.iot.supersim.connection.attachment.accepted",
                "/v1/SuperSim/ConnectionEvents/EZ1",
                "https://events-schemas.twilio.com/SuperSim.ConnectionEvent/2",
                Some(Provider::Twilio),
            ),
            (
                "com.example.thing",
                "elsewhere",
                "https://example.com/schema",
                None,
            ),
        ];
        for (ty, source, schema, expected) in cases {
            assert_eq!(
                detect_provider(ty, Some(source), Some(schema)),
                expected,
                "{ty} {source} {schema}"
            );
        }
    }

    #[test]
    fn every_connection_kind_and_unknown_types_are_classified() {
        for kind in ConnectionKind::ALL {
            let ty = format!("com.kore.supersim.connection.{}", kind.suffix());
            assert_eq!(EventKind::classify(&ty), EventKind::Connection(kind));
        }
        assert_eq!(
            EventKind::classify("com.kore.iot.supersim.connection.data-session.paused"),
            EventKind::Other("com.kore.iot.supersim.connection.data-session.paused".into())
        );
        assert_eq!(
            EventKind::classify("com.twilio.eventstreams.test-event"),
            EventKind::Test
        );
    }

    /// An `updated` event around `data`; a `sim_sid` is added to objects that lack one.
    fn event_with_data(data: &str) -> String {
        let data = match data.strip_prefix('{') {
            Some(rest) if !data.contains("sim_sid") => {
                let sep = if rest.trim_start().starts_with('}') {
                    ""
                } else {
                    ","
                };
                format!(r#"{{"sim_sid":"HS1"{sep}{rest}"#)
            }
            _ => data.to_owned(),
        };
        format!(
            r#"{{"type":"com.kore.iot.supersim.connection.data-session.updated","id":"EZ9","source":"kore-events","time":"2024-03-31T23:59:59.9999999+00:00","data":{data}}}"#
        )
    }

    #[test]
    fn billing_day_prefers_update_end_time_then_timestamp_then_time() {
        let with_end = parse_event(&event_with_data(
            r#"{"timestamp":"2024-04-01T00:00:05Z","data_session_update_end_time":"2024-03-31T23:59:58Z"}"#,
        ))
        .unwrap();
        assert_eq!(with_end.billing_day_string(), "2024-03-31");
        let with_timestamp =
            parse_event(&event_with_data(r#"{"timestamp":"2024-04-01T00:00:05Z"}"#)).unwrap();
        assert_eq!(with_timestamp.billing_day_string(), "2024-04-01");
        assert_eq!(with_timestamp.billing_month_string(), "2024-04");
        let with_time_only = parse_event(&event_with_data("{}")).unwrap();
        assert_eq!(with_time_only.billing_day_string(), "2024-03-31");
    }

    #[test]
    fn offsets_are_converted_to_utc_for_the_billing_day() {
        let event = parse_event(&event_with_data(
            r#"{"data_session_update_end_time":"2024-04-01T01:30:00+02:00"}"#,
        ))
        .unwrap();
        assert_eq!(event.billing_day_string(), "2024-03-31");
    }

    #[test]
    fn missing_window_total_is_upload_plus_download_and_missing_amounts_are_zero() {
        let event = parse_event(&event_with_data(
            r#"{"data_upload":10,"data_download":null}"#,
        ))
        .unwrap();
        assert_eq!(
            event.usage,
            Some(DataVolume {
                upload: 10,
                download: 0,
                total: 10
            })
        );
        assert_eq!(event.session, None);
    }

    #[test]
    fn whole_float_amounts_are_accepted() {
        let event = parse_event(&event_with_data(r#"{"data_total":1024.0}"#)).unwrap();
        assert_eq!(event.usage.unwrap().total, 1024);
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let cases: [(&str, EventError); 7] = [
            (
                r#"{"data_upload":-5}"#,
                EventError::invalid("data.data_upload", "must not be negative"),
            ),
            (
                r#"{"data_download":1.5}"#,
                EventError::invalid("data.data_download", "must be a whole number of bytes"),
            ),
            (
                r#"{"data_total":"12"}"#,
                EventError::invalid("data.data_total", "expected a byte count, found a string"),
            ),
            (
                r#"{"sim_sid":12}"#,
                EventError::invalid("data.sim_sid", "expected a string, found a number"),
            ),
            (
                r#"{"event_sid":["EZ"]}"#,
                EventError::invalid("data.event_sid", "expected a string, found an array"),
            ),
            (
                r#"[1,2]"#,
                EventError::invalid(
                    "data",
                    "expected an object or a string holding a JSON object",
                ),
            ),
            (r#"null"#, EventError::MissingField { field: "data" }),
        ];
        for (data, expected) in cases {
            assert_eq!(
                parse_event(&event_with_data(data)).unwrap_err(),
                expected,
                "{data}"
            );
        }
        let bad_time = parse_event(&event_with_data(r#"{"timestamp":"yesterday"}"#)).unwrap_err();
        assert!(
            matches!(bad_time, EventError::InvalidField { field: "data.timestamp", ref reason } if reason.contains("yesterday")),
            "{bad_time}"
        );
        assert_eq!(
            parse_event(r#"{"id":"EZ1","data":{}}"#).unwrap_err(),
            EventError::MissingField { field: "type" }
        );
        assert_eq!(
            parse_event(r#"{"type":7,"data":{}}"#).unwrap_err(),
            EventError::invalid("type", "expected a string, found a number")
        );
    }

    #[test]
    fn usage_without_a_sim_is_refused() {
        let json = r#"{"type":"com.kore.iot.supersim.connection.data-session.ended","id":"EZ1","source":"kore-events","time":"2024-01-01T00:00:00Z","data":{"data_total":5}}"#;
        assert_eq!(
            parse_event(json).unwrap_err(),
            EventError::MissingField {
                field: "data.sim_sid"
            }
        );
    }

    #[test]
    fn no_event_sid_and_no_id_is_an_error() {
        let json = r#"{"type":"com.kore.eventstreams.test.event","source":"kore-events","time":"2024-01-01T00:00:00Z","data":{"test_id":"x"}}"#;
        assert_eq!(parse_event(json).unwrap_err(), EventError::NoDedupeKey);
        let empty = r#"{"type":"com.kore.eventstreams.test.event","id":"","source":"kore-events","time":"2024-01-01T00:00:00Z","data":{"event_sid":""}}"#;
        assert_eq!(parse_event(empty).unwrap_err(), EventError::NoDedupeKey);
    }

    #[test]
    fn event_without_any_time_is_an_error() {
        let json = r#"{"type":"com.kore.iot.supersim.connection.attachment.accepted","id":"EZ1","source":"kore-events","data":{}}"#;
        assert_eq!(
            parse_event(json).unwrap_err(),
            EventError::MissingField { field: "time" }
        );
    }

    #[test]
    fn bad_element_fails_alone_and_keeps_its_raw_text() {
        let batch = format!(
            r#"[{}, {{"type":"com.kore.x","source":"kore-events","data":{{}}}}, 42]"#,
            KORE_BATCH_FIRST()
        );
        let items = parse_events(batch.as_bytes()).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok());
        let rejected = items[1].as_ref().unwrap_err();
        assert_eq!(rejected.index, 1);
        assert_eq!(rejected.error, EventError::NoDedupeKey);
        assert_eq!(
            rejected.raw,
            r#"{"type":"com.kore.x","source":"kore-events","data":{}}"#
        );
        let not_object = items[2].as_ref().unwrap_err();
        assert_eq!(
            not_object.error,
            EventError::NotAnEvent { found: "a number" }
        );
        assert_eq!(not_object.raw, "42");
    }

    #[test]
    fn payload_level_errors() {
        assert_eq!(
            parse_events(&[0xff, 0xfe]).unwrap_err(),
            EventError::NotUtf8 { valid_up_to: 0 }
        );
        assert!(matches!(
            parse_events(b"{not json").unwrap_err(),
            EventError::NotJson(_)
        ));
        assert!(matches!(
            parse_events(b"").unwrap_err(),
            EventError::NotJson(_)
        ));
        assert_eq!(
            parse_events(b"\"hello\"").unwrap_err(),
            EventError::NotAnEvent { found: "a string" }
        );
        assert_eq!(parse_events(b" [] ").unwrap(), vec![]);
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "b": [1, {"y": null, "x": "é\n"}], "a": 1.5 }"#).unwrap();
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1.5,"b":[1,{"x":"é\n","y":null}]}"#
        );
    }

    #[test]
    fn usage_is_booked_in_the_utc_hour_of_the_window_end_with_this_events_network() {
        let event = parse_event(&event_with_data(
            r#"{"timestamp":"2024-04-01T00:00:05Z","data_session_update_end_time":"2024-03-31T22:59:58+01:00","sim_iccid":"8988","sim_unique_name":"meter-1","network":{"sid":"HW1","friendly_name":"Telekom","iso_country":"DE","mcc":"262"}}"#,
        ))
        .unwrap();
        assert_eq!(event.booking_hour(), utc("2024-03-31T21:00:00Z"));
        assert_eq!(
            event.network,
            Some(Network {
                sid: Some("HW1".into()),
                friendly_name: Some("Telekom".into()),
                iso_country: Some("DE".into()),
            })
        );
        assert_eq!(event.sim_iccid.as_deref(), Some("8988"));
        assert_eq!(event.sim_unique_name.as_deref(), Some("meter-1"));
        // No network, or a null one: unknown, never an error.
        for data in [r#"{}"#, r#"{"network":null}"#, r#"{"network":{}}"#] {
            assert_eq!(parse_event(&event_with_data(data)).unwrap().network, None);
        }
        assert_eq!(
            parse_event(&event_with_data(r#"{"network":{"sid":7}}"#)).unwrap_err(),
            EventError::invalid("data.network.sid", "expected a string, found a number")
        );
        assert_eq!(
            parse_event(&event_with_data(r#"{"network":"HW1"}"#)).unwrap_err(),
            EventError::invalid("data.network", "expected an object, found a string")
        );
    }

    #[test]
    fn amounts_over_two_to_the_fifty_bytes_are_refused_naming_the_field() {
        let at_limit = format!(r#"{{"data_upload":{MAX_AMOUNT},"data_download":{MAX_AMOUNT}}}"#);
        let event = parse_event(&event_with_data(&at_limit)).unwrap();
        assert_eq!(event.usage.unwrap().total, 2 * MAX_AMOUNT);
        for (data, field) in [
            (
                format!(r#"{{"data_download":{}}}"#, MAX_AMOUNT + 1),
                "data.data_download",
            ),
            (r#"{"data_total":1e300}"#.to_owned(), "data.data_total"),
            (
                format!(r#"{{"data_session_data_upload":{}}}"#, u64::MAX),
                "data.data_session_data_upload",
            ),
        ] {
            let error = parse_event(&event_with_data(&data)).unwrap_err();
            assert!(
                matches!(&error, EventError::InvalidField { field: f, reason } if *f == field && reason.contains("2^50")),
                "{data}: {error}"
            );
        }
    }

    #[test]
    fn a_stored_test_event_is_keyed_on_its_stored_key() {
        let stored = parse_events(KORE_TEST.as_bytes())
            .unwrap()
            .remove(0)
            .unwrap();
        let again = from_stored(
            stored.provider,
            &stored.key,
            &stored.event_type,
            stored.event_time,
            &stored.data,
        )
        .unwrap();
        assert_eq!(again.key, stored.key);
        assert_eq!(again.kind, EventKind::Test);
        assert_eq!(again.data_hash, stored.data_hash);
    }
}
