//! Events as the ledger keeps them and gives them back: the `data` exactly as received, its
//! hash, the envelope's type and time, and who delivered it. Everything else (SIM, usage,
//! booking) is derived again from `data` by the same parser that read it the first time.

use chrono::{DateTime, Utc};

use crate::delivery::tag_provider;
use crate::error::LedgerError;
use crate::event::{ConnectionEvent, DataHash, DedupeKey, Provider, from_stored};

/// An event record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub key: DedupeKey,
    pub event_type: String,
    pub event_time: DateTime<Utc>,
    /// The `data` object exactly as received.
    pub data: String,
    pub data_hash: Option<DataHash>,
    /// `provider#path` tags, e.g. `kore#kinesis`.
    pub deliveries: Vec<String>,
    pub received_at: Option<String>,
}

impl StoredEvent {
    /// The event normalized again from its stored `data` (kind, SIM, usage, booking...). The
    /// provider is the first of its deliveries; it does not change what is booked.
    pub fn event(&self) -> Result<ConnectionEvent, LedgerError> {
        let provider = self
            .deliveries
            .iter()
            .filter_map(|tag| Provider::from_name(tag_provider(tag)))
            .min()
            .unwrap_or(Provider::Kore);
        from_stored(
            provider,
            &self.key,
            &self.event_type,
            self.event_time,
            &self.data,
        )
        .map_err(|e| LedgerError::CorruptItem {
            pk: format!("event {}", self.key),
            reason: format!("stored data no longer parses: {e}"),
        })
    }
}

impl From<&StoredEvent> for EventDeliveries {
    fn from(stored: &StoredEvent) -> Self {
        EventDeliveries {
            event_sid: stored.key.as_str().to_owned(),
            event_time: crate::time::timestamp(stored.event_time),
            deliveries: stored.deliveries.clone(),
        }
    }
}

/// The stored hash and deliveries of an event: enough to tell a duplicate from a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDigest {
    pub data_hash: Option<DataHash>,
    pub deliveries: Vec<String>,
}

/// Which providers and paths delivered one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDeliveries {
    pub event_sid: String,
    pub event_time: String,
    /// `provider#path` tags, e.g. `kore#kinesis`.
    pub deliveries: Vec<String>,
}

impl EventDeliveries {
    pub fn delivered_by(&self, provider: &str) -> bool {
        self.deliveries
            .iter()
            .any(|tag| tag_provider(tag) == provider)
    }
}
