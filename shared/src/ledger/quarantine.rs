//! The quarantine: every payload that could not become a record, kept raw with the reason
//! and where it came from, listable and re-drivable. Quarantining the same payload from the
//! same path again is a no-op, so retries never pile up copies.

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use super::items::{key, string_attr};
use super::{Delivery, Item, LedgerError, UsageLedger, keys, timestamp};
use crate::callback::CallbackKind;
use crate::event::DedupeKey;

/// DynamoDB items hold 400 KB; past this a payload is stored truncated, with its full size
/// and SHA-256 (real events are about 1.5 KB).
const MAX_STORED_PAYLOAD: usize = 350_000;

/// What the quarantined payload was meant to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineKind {
    /// A Kinesis record, a webhook body or one element of it that could not be parsed.
    Event,
    /// A copy of a stored event whose `data` differs from the first copy.
    Conflict,
    /// A callback that could not be parsed or stored.
    Callback {
        kind: CallbackKind,
        idempotency_token: Option<String>,
    },
}

impl QuarantineKind {
    pub fn name(&self) -> &'static str {
        match self {
            QuarantineKind::Event => "event",
            QuarantineKind::Conflict => "conflict",
            QuarantineKind::Callback { .. } => "callback",
        }
    }
}

/// A payload to quarantine.
#[derive(Debug, Clone)]
pub struct QuarantineEntry<'a> {
    pub kind: QuarantineKind,
    pub payload: &'a [u8],
    pub reason: String,
    pub delivery: &'a Delivery,
    pub related_event: Option<&'a DedupeKey>,
}

/// A quarantined payload as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedPayload {
    pub id: String,
    pub kind: String,
    pub payload: Vec<u8>,
    pub truncated: bool,
    pub reason: String,
    pub path: String,
    pub origin: String,
    pub provider: Option<String>,
    pub received_at: String,
    pub related_event_sid: Option<String>,
    pub callback_kind: Option<String>,
    pub idempotency_token: Option<String>,
}

/// One line of the quarantine list (from the index: no payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineSummary {
    pub id: String,
    pub reason: String,
    pub path: String,
    pub provider: Option<String>,
    pub received_at: String,
    pub origin: String,
}

/// Same kind, path and bytes: same id.
pub fn quarantine_id(kind: &QuarantineKind, path: &str, payload: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.name().as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(payload);
    hex::encode(&hasher.finalize()[..16])
}

impl UsageLedger {
    /// Stores the payload in the quarantine and returns its id.
    pub async fn quarantine(&self, entry: QuarantineEntry<'_>) -> Result<String, LedgerError> {
        let path = entry.delivery.origin.path();
        let id = quarantine_id(&entry.kind, path, entry.payload);
        let received_at = timestamp(entry.delivery.received_at);
        let mut item = key(keys::quarantine_pk(&id), keys::SINGLE);
        let mut put = |name: &str, value: String| {
            item.insert(name.to_owned(), AttributeValue::S(value));
        };
        put("quarantine_id", id.clone());
        put("payload_kind", entry.kind.name().to_owned());
        put("reason", entry.reason);
        put("path", path.to_owned());
        put("origin", entry.delivery.origin.locator());
        put("received_at", received_at.clone());
        put("gsi1pk", keys::QUARANTINE_INDEX_PK.to_owned());
        put("gsi1sk", format!("{received_at}#{id}"));
        if let Some(provider) = entry.delivery.provider_hint {
            put("provider", provider.as_str().to_owned());
        }
        if let Some(event) = entry.related_event {
            put("related_event_sid", event.as_str().to_owned());
        }
        if let QuarantineKind::Callback {
            kind,
            idempotency_token,
        } = &entry.kind
        {
            put("callback_kind", kind.as_str().to_owned());
            if let Some(token) = idempotency_token {
                put("idempotency_token", token.clone());
            }
        }
        let stored = &entry.payload[..entry.payload.len().min(MAX_STORED_PAYLOAD)];
        if stored.len() < entry.payload.len() {
            put("payload_sha256", hex::encode(Sha256::digest(entry.payload)));
            item.insert(
                "payload_size".into(),
                AttributeValue::N(entry.payload.len().to_string()),
            );
            item.insert("payload_truncated".into(), AttributeValue::Bool(true));
        }
        match std::str::from_utf8(stored) {
            Ok(text) => item.insert("payload".into(), AttributeValue::S(text.to_owned())),
            Err(_) => item.insert(
                "payload_base64".into(),
                AttributeValue::S(BASE64.encode(stored)),
            ),
        };

        // Already quarantined (`Exists`): the first copy, with its origin, is kept.
        self.put_if_absent(item).await?;
        Ok(id)
    }

    /// The quarantine, newest first, at most `limit` entries.
    pub async fn list_quarantine(
        &self,
        limit: usize,
    ) -> Result<Vec<QuarantineSummary>, LedgerError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.table_name())
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(keys::QUARANTINE_INDEX_PK.into()))
            .scan_index_forward(false)
            .into_paginator()
            .items()
            .send();
        let mut items: Vec<Item> = Vec::new();
        while items.len() < limit {
            match pages.next().await {
                Some(item) => items.push(item.map_err(|e| LedgerError::from_sdk("Query", e))?),
                None => break,
            }
        }
        Ok(items
            .iter()
            .map(|item| QuarantineSummary {
                id: string_attr(item, "quarantine_id")
                    .unwrap_or_default()
                    .to_owned(),
                reason: string_attr(item, "reason").unwrap_or_default().to_owned(),
                path: string_attr(item, "path").unwrap_or_default().to_owned(),
                provider: string_attr(item, "provider").map(str::to_owned),
                received_at: string_attr(item, "received_at")
                    .unwrap_or_default()
                    .to_owned(),
                origin: string_attr(item, "origin").unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// One quarantined payload, in full.
    pub async fn quarantined(&self, id: &str) -> Result<Option<QuarantinedPayload>, LedgerError> {
        let pk = keys::quarantine_pk(id);
        let output = self
            .client
            .get_item()
            .table_name(self.table_name())
            .set_key(Some(key(pk.clone(), keys::SINGLE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("GetItem", e))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let corrupt = |reason: &str| LedgerError::CorruptItem {
            pk: pk.clone(),
            reason: reason.to_owned(),
        };
        let payload = match (
            string_attr(&item, "payload"),
            string_attr(&item, "payload_base64"),
        ) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => BASE64
                .decode(encoded)
                .map_err(|_| corrupt("payload_base64 is not base64"))?,
            (None, None) => return Err(corrupt("no payload")),
        };
        let text = |name: &str| string_attr(&item, name).map(str::to_owned);
        Ok(Some(QuarantinedPayload {
            id: id.to_owned(),
            kind: text("payload_kind").unwrap_or_default(),
            payload,
            truncated: matches!(
                item.get("payload_truncated"),
                Some(AttributeValue::Bool(true))
            ),
            reason: text("reason").unwrap_or_default(),
            path: text("path").unwrap_or_default(),
            origin: text("origin").unwrap_or_default(),
            provider: text("provider"),
            received_at: text("received_at").unwrap_or_default(),
            related_event_sid: text("related_event_sid"),
            callback_kind: text("callback_kind"),
            idempotency_token: text("idempotency_token"),
        }))
    }

    /// Removes a quarantined payload (after a successful redrive).
    pub async fn delete_quarantined(&self, id: &str) -> Result<(), LedgerError> {
        self.client
            .delete_item()
            .table_name(self.table_name())
            .set_key(Some(key(keys::quarantine_pk(id), keys::SINGLE)))
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("DeleteItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_kind_path_and_bytes() {
        let a = quarantine_id(&QuarantineKind::Event, "kinesis", b"x");
        assert_eq!(a, quarantine_id(&QuarantineKind::Event, "kinesis", b"x"));
        assert_ne!(a, quarantine_id(&QuarantineKind::Event, "webhook", b"x"));
        assert_ne!(a, quarantine_id(&QuarantineKind::Conflict, "kinesis", b"x"));
        assert_ne!(a, quarantine_id(&QuarantineKind::Event, "kinesis", b"y"));
        assert_eq!(a.len(), 32);
    }
}
