//! The typed forms of an event: who sent it, what kind it is, its key, its usage and the
//! hash of its `data`.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical::write_canonical_entries;

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

/// A kind as people name it: a Connection Event suffix (`data-session.updated`), `test`, or
/// `other` (every type the parser does not know). `export --kind` and the Segment
/// forwarder's `SEGMENT_EVENT_KINDS` select events by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindName {
    Connection(ConnectionKind),
    Test,
    Other,
}

impl KindName {
    pub fn of(kind: &EventKind) -> Self {
        match kind {
            EventKind::Connection(kind) => KindName::Connection(*kind),
            EventKind::Test => KindName::Test,
            EventKind::Other(_) => KindName::Other,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "test" => Some(KindName::Test),
            "other" => Some(KindName::Other),
            suffix => ConnectionKind::from_suffix(suffix).map(KindName::Connection),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KindName::Connection(kind) => kind.suffix(),
            KindName::Test => "test",
            KindName::Other => "other",
        }
    }

    /// Whether events of this kind can carry a usage window.
    pub fn carries_usage(self) -> bool {
        matches!(self, KindName::Connection(kind) if kind.carries_usage())
    }
}

impl EventKind {
    /// A short stable name: the connection suffix, `test`, or `other`.
    pub fn name(&self) -> &'static str {
        KindName::of(self).name()
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

    /// The day the event belongs to in the archive and the ledger's retention: a usage
    /// event's booking day, or for an event without usage its time's day.
    pub fn archive_day(&self) -> NaiveDate {
        match self.usage {
            Some(_) => self.billing_day,
            None => self.event_time.date_naive(),
        }
    }
}

/// Why a payload or one event in it cannot be used. Each variant names the field and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("payload is not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error(
        "payload is {bytes} bytes, more than the functions take ({} bytes)",
        super::MAX_PAYLOAD_BYTES
    )]
    TooLarge { bytes: usize },
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload must be a CloudEvent object or a JSON array of them, found {found}")]
    NotAnEvent { found: &'static str },
    #[error("field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(
        "cannot tell whether KORE or Twilio sent type {quoted_type} (source and dataschema name neither)"
    )]
    UnknownProvider {
        /// The type as `crate::excerpt::quoted` shows it: never the whole field.
        quoted_type: String,
    },
    #[error("no dedupe key: neither `data.event_sid` nor `id` is present")]
    NoDedupeKey,
}

impl EventError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
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
