//! One archived event: the fields `kore-usage export` writes, in the archive's types.

use chrono::{DateTime, Utc};
use kore_ingest_core::event::{ConnectionEvent, DataHash, DedupeKey};
use kore_ingest_core::stored::StoredEvent;
use kore_ingest_core::time::timestamp;

/// One event of a day, in export order. Counts are `u64` as the ledger keeps them; the
/// writer refuses one past `i64::MAX` rather than wrap it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchiveRow {
    pub event_sid: String,
    pub event_type: String,
    pub kind: String,
    pub event_time: DateTime<Utc>,
    pub booked_hour: Option<DateTime<Utc>>,
    pub account_sid: Option<String>,
    pub sim_sid: Option<String>,
    pub fleet_sid: Option<String>,
    pub network_sid: Option<String>,
    pub network_name: Option<String>,
    pub iso_country: Option<String>,
    pub data_session_sid: Option<String>,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    pub data_upload: Option<u64>,
    pub data_download: Option<u64>,
    pub data_total: Option<u64>,
    /// `provider#path`, as the ledger keeps them.
    pub deliveries: Vec<String>,
    pub received_at: Option<DateTime<Utc>>,
    pub data_sha256: Option<String>,
    /// The event's `data` as stored.
    pub data: String,
}

impl ArchiveRow {
    /// The row of a stored event, normalized again from its data as `export` does (an
    /// arrival time that does not read as one, never written so, is left out).
    pub fn of(stored: &StoredEvent, event: &ConnectionEvent) -> ArchiveRow {
        let network = event.network.as_ref();
        let session = event.session.as_ref();
        let text = |v: Option<&String>| v.cloned();
        ArchiveRow {
            event_sid: event.key.as_str().to_owned(),
            event_type: event.event_type.clone(),
            kind: event.kind.name().to_owned(),
            event_time: event.event_time,
            booked_hour: event.usage.map(|_| event.booking_hour()),
            account_sid: event.account_sid.clone(),
            sim_sid: event.sim_sid.clone(),
            fleet_sid: event.fleet_sid.clone(),
            network_sid: text(network.and_then(|n| n.sid.as_ref())),
            network_name: text(network.and_then(|n| n.friendly_name.as_ref())),
            iso_country: text(network.and_then(|n| n.iso_country.as_ref())),
            data_session_sid: session.map(|s| s.sid.clone()),
            window_start: session.and_then(|s| s.update_start_time),
            window_end: event.usage.map(|_| event.booked_at),
            data_upload: event.usage.map(|u| u.upload),
            data_download: event.usage.map(|u| u.download),
            data_total: event.usage.map(|u| u.total),
            deliveries: stored.deliveries.clone(),
            received_at: stored
                .received_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            data_sha256: stored.data_hash.map(|h| h.to_hex()),
            data: stored.data.clone(),
        }
    }

    /// The event record this row was made of, as the ledger gave it: `of`'s inverse, so
    /// that what is read from the archive is printed as it was from the ledger.
    pub fn stored(&self) -> Result<StoredEvent, crate::ArchiveError> {
        let bad = |reason: String| crate::ArchiveError::BadRow {
            event_sid: self.event_sid.clone(),
            reason,
        };
        let key = DedupeKey::new(&self.event_sid, "event_sid").map_err(|e| bad(e.to_string()))?;
        let data_hash = match &self.data_sha256 {
            None => None,
            Some(text) => {
                let bytes = hex::decode(text).map_err(|e| bad(format!("data_sha256: {e}")))?;
                Some(
                    DataHash::from_bytes(&bytes)
                        .ok_or_else(|| bad("data_sha256: not 32 bytes".into()))?,
                )
            }
        };
        Ok(StoredEvent {
            key,
            event_type: self.event_type.clone(),
            event_time: self.event_time,
            data: self.data.clone(),
            data_hash,
            deliveries: self.deliveries.clone(),
            received_at: self.received_at.map(timestamp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kore_ingest_core::event::parse_events;

    #[test]
    fn a_row_gives_back_the_event_record_it_was_made_of() {
        let event = parse_events(include_bytes!(
            "../../../tests/fixtures/twilio-kinesis-data-session-updated.json"
        ))
        .unwrap()
        .remove(0)
        .unwrap();
        let stored = StoredEvent {
            key: event.key.clone(),
            event_type: event.event_type.clone(),
            event_time: event.event_time,
            data: event.data.clone(),
            data_hash: Some(event.data_hash),
            deliveries: vec!["twilio#kinesis".into(), "kore#webhook".into()],
            received_at: Some("2024-11-03T12:00:00.123Z".into()),
        };
        let row = ArchiveRow::of(&stored, &stored.event().unwrap());
        assert_eq!(row.stored().unwrap(), stored);
        assert_eq!(row.data_total, event.usage.map(|u| u.total));
    }
}
