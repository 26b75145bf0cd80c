//! Callbacks and alerts on the customer's event bus, `source` [`SOURCE`], one `detail-type`
//! per kind. A callback's `detail` carries the stable `id` consumers de-duplicate on
//! (EventBridge does not), when it was sent and received, and every form field as received;
//! an alert's `detail` is the alert record, whose rule, subject, period and threshold (or
//! event) are what consumers de-duplicate on.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::alerts::Alert;
use crate::callback::{CallbackKind, SentAtSource};
use crate::event::Provider;
use crate::time::timestamp;

/// The `source` of every entry the stack puts on its bus.
pub const SOURCE: &str = "kore-ingest";

/// EventBridge's limits: entries per `PutEvents` call, and bytes per call (each entry's
/// source, detail-type, detail and resources as EventBridge counts them).
pub const MAX_ENTRIES_PER_CALL: usize = 10;
pub const MAX_CALL_BYTES: usize = 256 * 1024;

/// A callback as the ledger stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCallback {
    /// Stable across retries and replays of the same delivery: the ledger's key,
    /// `<provider>#<idempotency token>`.
    pub id: String,
    pub kind: CallbackKind,
    pub provider: Provider,
    pub sent_at: DateTime<Utc>,
    pub sent_at_source: SentAtSource,
    pub received_at: DateTime<Utc>,
    pub sim_sid: Option<String>,
    pub account_sid: Option<String>,
    pub status: Option<String>,
    /// Every form field, in the order received (names may repeat).
    pub fields: Vec<(String, String)>,
}

/// The `detail-type` of a kind of callback.
pub fn detail_type(kind: CallbackKind) -> &'static str {
    match kind {
        CallbackKind::Sims => "SIM Update",
        CallbackKind::SmsCommands => "SMS Command",
        CallbackKind::IpCommands => "IP Command",
        CallbackKind::EsimProfiles => "eSIM Profile",
    }
}

/// One entry for the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEntry {
    /// The callback's id, for logs and the redrive list.
    pub id: String,
    pub detail_type: &'static str,
    pub detail: String,
    pub time: DateTime<Utc>,
}

impl BusEntry {
    /// The size EventBridge counts against [`MAX_CALL_BYTES`]: source, detail-type and
    /// detail as UTF-8, and 14 bytes for the `Time` every entry carries.
    pub fn size(&self) -> usize {
        SOURCE.len() + self.detail_type.len() + self.detail.len() + 14
    }

    /// Too large for any call: EventBridge refuses it whatever is tried.
    pub fn too_large(&self) -> bool {
        self.size() > MAX_CALL_BYTES
    }
}

/// The bus entry of a stored callback. `fields` keeps every field as received, in order, as
/// `[name, value]` pairs (a name may repeat); `sim_sid`, `account_sid` and `status` are
/// lifted out so that rules can match on them.
pub fn bus_entry(callback: &StoredCallback) -> BusEntry {
    let fields: Vec<Value> = callback
        .fields
        .iter()
        .map(|(name, value)| json!([name, value]))
        .collect();
    let detail = json!({
        "id": callback.id,
        "kind": callback.kind.as_str(),
        "provider": callback.provider.as_str(),
        "sent_at": timestamp(callback.sent_at),
        "sent_at_source": callback.sent_at_source.as_str(),
        "received_at": timestamp(callback.received_at),
        "sim_sid": callback.sim_sid,
        "account_sid": callback.account_sid,
        "status": callback.status,
        "fields": fields,
    });
    BusEntry {
        id: callback.id.clone(),
        detail_type: detail_type(callback.kind),
        detail: detail.to_string(),
        time: callback.sent_at,
    }
}

/// What starts the id of an alert's entry (`alert#<the alert's key>`): a callback's id
/// starts with its provider, so the two never meet in the redrive list.
pub const ALERT_ID_PREFIX: &str = "alert#";

/// The bus entry of an alert: its `detail` is the alert record.
pub fn alert_entry(alert: &Alert) -> BusEntry {
    BusEntry {
        id: format!("{ALERT_ID_PREFIX}{}", alert.key()),
        detail_type: alert.kind.detail_type(),
        detail: alert.to_json().to_string(),
        time: DateTime::parse_from_rfc3339(&alert.raised_at)
            .map(|t| t.to_utc())
            .unwrap_or_else(|_| Utc::now()),
    }
}

/// Consecutive entries packed into calls under EventBridge's limits, as index ranges. An
/// entry too large for a call alone gets a call of its own ([`BusEntry::too_large`] entries
/// are never sent).
pub fn pack(entries: &[BusEntry]) -> Vec<std::ops::Range<usize>> {
    let sizes: Vec<usize> = entries.iter().map(BusEntry::size).collect();
    crate::pack::pack(
        &sizes,
        crate::pack::Limits {
            max_bytes: MAX_CALL_BYTES,
            max_items: MAX_ENTRIES_PER_CALL,
            overhead: 0,
            separator: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(kind: CallbackKind) -> StoredCallback {
        StoredCallback {
            id: "kore#RQa48ec9b6ef475034c35566c02b654243".into(),
            kind,
            provider: Provider::Kore,
            sent_at: DateTime::parse_from_rfc3339("2024-07-03T14:40:58Z")
                .unwrap()
                .to_utc(),
            sent_at_source: SentAtSource::DateHeader,
            received_at: DateTime::parse_from_rfc3339("2024-07-03T14:41:00.250Z")
                .unwrap()
                .to_utc(),
            sim_sid: Some("HS1".into()),
            account_sid: Some("AC1".into()),
            status: Some("active".into()),
            fields: vec![
                ("SimSid".into(), "HS1".into()),
                ("a".into(), "1".into()),
                ("a".into(), "2".into()),
            ],
        }
    }

    #[test]
    fn the_detail_carries_the_id_times_and_every_field_in_order() {
        let entry = bus_entry(&callback(CallbackKind::Sims));
        assert_eq!(entry.detail_type, "SIM Update");
        let detail: Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(detail["id"], "kore#RQa48ec9b6ef475034c35566c02b654243");
        assert_eq!(detail["kind"], "sims");
        assert_eq!(detail["provider"], "kore");
        assert_eq!(detail["sent_at"], "2024-07-03T14:40:58.000Z");
        assert_eq!(detail["received_at"], "2024-07-03T14:41:00.250Z");
        assert_eq!(
            detail["fields"],
            json!([["SimSid", "HS1"], ["a", "1"], ["a", "2"]])
        );
        assert_eq!(detail["status"], "active");
    }

    #[test]
    fn each_kind_has_its_detail_type() {
        let types: Vec<&str> = CallbackKind::ALL.into_iter().map(detail_type).collect();
        assert_eq!(
            types,
            ["SIM Update", "SMS Command", "IP Command", "eSIM Profile"]
        );
    }

    #[test]
    fn calls_hold_at_most_ten_entries_and_256_kb() {
        let small = bus_entry(&callback(CallbackKind::SmsCommands));
        let entries = vec![small.clone(); 23];
        assert_eq!(pack(&entries), vec![0..10, 10..20, 20..23]);
        let mut large = small.clone();
        large.detail = "x".repeat(100 * 1024);
        let mut huge = small.clone();
        huge.detail = "x".repeat(300 * 1024);
        assert!(huge.too_large() && !large.too_large());
        let entries = vec![large.clone(), large.clone(), large, huge, small];
        assert_eq!(pack(&entries), vec![0..2, 2..3, 3..4, 4..5]);
        assert!(pack(&[]).is_empty());
    }
}
