//! The quarantine: every payload that could not become a record, kept raw with the reason
//! and where it came from, listable and re-drivable. Quarantining the same payload from the
//! same path again is a no-op, so retries never pile up copies.
//!
//! A payload is kept whole whatever its size (Kinesis records up to 1 MB, webhook bodies up
//! to `MAX_BODY_BYTES`): one that fits is stored in the entry's item (text, or base64 when it
//! is not UTF-8); a larger one as raw bytes in parts, one item each under the entry's
//! partition (`PART#00000`, ...), written before the entry's item, so that an entry that
//! exists always has all its parts.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use super::items::{key, number_attr, string_attr};
use super::{Delivery, Item, LedgerError, UsageLedger, keys, timestamp};
use crate::callback::CallbackKind;
use crate::event::{DedupeKey, Provider};

/// DynamoDB items hold 400 KB: a payload whose stored form (text, or base64) is longer than
/// this goes into parts (real events are about 1.5 KB, so almost every entry is one item).
const MAX_INLINE_PAYLOAD: usize = 350_000;
/// Raw bytes per part item: under 400 KB with the keys and the attribute name.
const PART_BYTES: usize = 350_000;
/// Sort keys of the parts, under the entry's partition key.
const PART_SK_PREFIX: &str = "PART#";

fn part_sk(index: usize) -> String {
    format!("{PART_SK_PREFIX}{index:05}")
}

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
    /// The stored name (`payload_kind`): `event`, `conflict` or `callback`.
    pub fn name(&self) -> &'static str {
        match self {
            QuarantineKind::Event => "event",
            QuarantineKind::Conflict => "conflict",
            QuarantineKind::Callback { .. } => "callback",
        }
    }

    /// The kind an entry was stored with, from its attributes; `None` when they name no kind
    /// this code writes.
    fn stored(
        name: &str,
        callback_kind: Option<&str>,
        idempotency_token: Option<&str>,
    ) -> Option<Self> {
        Some(match name {
            "event" => QuarantineKind::Event,
            "conflict" => QuarantineKind::Conflict,
            "callback" => QuarantineKind::Callback {
                kind: CallbackKind::from_path_segment(callback_kind?)?,
                idempotency_token: idempotency_token.map(str::to_owned),
            },
            _ => return None,
        })
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
    /// What it was meant to be; a callback's kind and idempotency token are in it.
    pub kind: QuarantineKind,
    pub payload: Vec<u8>,
    /// Only the start of the original is kept (a body refused as too large).
    pub truncated: bool,
    /// The original's size in bytes, when only its start is kept.
    pub original_size: Option<u64>,
    pub reason: String,
    pub path: String,
    pub origin: String,
    pub provider: Option<Provider>,
    pub received_at: String,
    pub related_event_sid: Option<String>,
}

/// One line of the quarantine list (from the index: no payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineSummary {
    pub id: String,
    pub reason: String,
    pub path: String,
    pub provider: Option<Provider>,
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

/// The provider an entry was stored with, if any; one this code never writes makes the
/// item corrupt (`pk` names it).
fn stored_provider(item: &Item, pk: impl Fn() -> String) -> Result<Option<Provider>, LedgerError> {
    string_attr(item, "provider")
        .map(|name| {
            Provider::from_name(name).ok_or_else(|| LedgerError::CorruptItem {
                pk: pk(),
                reason: format!("provider `{name}` is neither kore nor twilio"),
            })
        })
        .transpose()
}

impl UsageLedger {
    /// Stores the payload, whole, in the quarantine and returns its id.
    pub async fn quarantine(&self, entry: QuarantineEntry<'_>) -> Result<String, LedgerError> {
        let keep = entry.payload.len();
        self.quarantine_truncated(entry, keep).await
    }

    /// Stores only the first `keep` bytes of the payload, with its full size and SHA-256
    /// (for a body refused because it is larger than the function accepts); the id is that
    /// of the whole payload. With `keep` at least the payload's length, the same as
    /// [`Self::quarantine`].
    pub async fn quarantine_truncated(
        &self,
        entry: QuarantineEntry<'_>,
        keep: usize,
    ) -> Result<String, LedgerError> {
        let path = entry.delivery.origin.path();
        let id = quarantine_id(&entry.kind, path, entry.payload);
        let received_at = timestamp(entry.delivery.received_at);
        let pk = keys::quarantine_pk(&id);
        let mut item = key(pk.clone(), keys::SINGLE);
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
        let stored = &entry.payload[..entry.payload.len().min(keep)];
        if stored.len() < entry.payload.len() {
            put("payload_sha256", hex::encode(Sha256::digest(entry.payload)));
            item.insert(
                "payload_size".into(),
                AttributeValue::N(entry.payload.len().to_string()),
            );
            item.insert("payload_truncated".into(), AttributeValue::Bool(true));
        }
        let inline = match std::str::from_utf8(stored) {
            Ok(text) if text.len() <= MAX_INLINE_PAYLOAD => {
                Some(("payload", AttributeValue::S(text.to_owned())))
            }
            Err(_) if stored.len().div_ceil(3) * 4 <= MAX_INLINE_PAYLOAD => {
                Some(("payload_base64", AttributeValue::S(BASE64.encode(stored))))
            }
            _ => None,
        };
        match inline {
            Some((name, value)) => {
                item.insert(name.into(), value);
            }
            None => {
                let parts: Vec<&[u8]> = stored.chunks(PART_BYTES).collect();
                item.insert(
                    "payload_parts".into(),
                    AttributeValue::N(parts.len().to_string()),
                );
                item.insert(
                    "payload_stored_size".into(),
                    AttributeValue::N(stored.len().to_string()),
                );
                item.insert(
                    "payload_stored_sha256".into(),
                    AttributeValue::S(hex::encode(Sha256::digest(stored))),
                );
                // Parts first: an entry that exists always has its parts. Writing them again
                // (a retry) writes the same bytes, since the id is a hash of them.
                futures::future::try_join_all(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(index, part)| self.put_part(&pk, index, part)),
                )
                .await?;
            }
        }

        // Already quarantined (`Exists`): the first copy, with its origin, is kept.
        self.put_if_absent(item).await?;
        Ok(id)
    }

    async fn put_part(&self, pk: &str, index: usize, bytes: &[u8]) -> Result<(), LedgerError> {
        let mut item = key(pk.to_owned(), &part_sk(index));
        item.insert(
            "payload_part".into(),
            AttributeValue::B(Blob::new(bytes.to_vec())),
        );
        let output = self
            .client
            .put_item()
            .table_name(self.table_name())
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("PutItem", e))?;
        self.add_consumed(output.consumed_capacity());
        Ok(())
    }

    /// The parts of a parted entry, joined in order.
    async fn read_parts(&self, pk: &str) -> Result<Vec<u8>, LedgerError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.table_name())
            .key_condition_expression("pk = :pk AND begins_with(sk, :part)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .expression_attribute_values(":part", AttributeValue::S(PART_SK_PREFIX.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut payload = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| LedgerError::from_sdk("Query", e))?;
            match item.get("payload_part") {
                Some(AttributeValue::B(bytes)) => payload.extend_from_slice(bytes.as_ref()),
                _ => {
                    return Err(LedgerError::CorruptItem {
                        pk: pk.to_owned(),
                        reason: "a payload part holds no bytes".into(),
                    });
                }
            }
        }
        Ok(payload)
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
        items
            .iter()
            .map(|item| {
                let text = |name: &str| string_attr(item, name).unwrap_or_default().to_owned();
                Ok(QuarantineSummary {
                    id: text("quarantine_id"),
                    reason: text("reason"),
                    path: text("path"),
                    provider: stored_provider(item, || text("pk"))?,
                    received_at: text("received_at"),
                    origin: text("origin"),
                })
            })
            .collect()
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
            number_attr(&item, "payload_parts"),
        ) {
            (Some(text), _, _) => text.as_bytes().to_vec(),
            (None, Some(encoded), _) => BASE64
                .decode(encoded)
                .map_err(|_| corrupt("payload_base64 is not base64"))?,
            (None, None, Some(_)) => {
                let payload = self.read_parts(&pk).await?;
                let expected = string_attr(&item, "payload_stored_sha256").unwrap_or_default();
                if hex::encode(Sha256::digest(&payload)) != expected {
                    return Err(corrupt("the payload's parts do not add up to it"));
                }
                payload
            }
            (None, None, None) => return Err(corrupt("no payload")),
        };
        let truncated = matches!(
            item.get("payload_truncated"),
            Some(AttributeValue::Bool(true))
        );
        let text = |name: &str| string_attr(&item, name).map(str::to_owned);
        let kind_name = string_attr(&item, "payload_kind").unwrap_or_default();
        let kind = QuarantineKind::stored(
            kind_name,
            string_attr(&item, "callback_kind"),
            string_attr(&item, "idempotency_token"),
        )
        .ok_or_else(|| {
            corrupt(&format!(
                "payload_kind `{kind_name}` (callback_kind {:?}) is not a kind of quarantined payload",
                string_attr(&item, "callback_kind")
            ))
        })?;
        Ok(Some(QuarantinedPayload {
            id: id.to_owned(),
            kind,
            payload,
            truncated,
            original_size: number_attr(&item, "payload_size").filter(|_| truncated),
            reason: text("reason").unwrap_or_default(),
            path: text("path").unwrap_or_default(),
            origin: text("origin").unwrap_or_default(),
            provider: stored_provider(&item, || pk.clone())?,
            received_at: text("received_at").unwrap_or_default(),
            related_event_sid: text("related_event_sid"),
        }))
    }

    /// Removes a quarantined payload (after a successful redrive): the entry first, so that
    /// it is gone at once, then its parts.
    pub async fn delete_quarantined(&self, id: &str) -> Result<(), LedgerError> {
        let pk = keys::quarantine_pk(id);
        let output = self
            .client
            .delete_item()
            .table_name(self.table_name())
            .set_key(Some(key(pk.clone(), keys::SINGLE)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("DeleteItem", e))?;
        let parts = output
            .attributes
            .as_ref()
            .and_then(|old| number_attr(old, "payload_parts"))
            .unwrap_or(0);
        for index in 0..parts as usize {
            self.client
                .delete_item()
                .table_name(self.table_name())
                .set_key(Some(key(pk.clone(), &part_sk(index))))
                .send()
                .await
                .map_err(|e| LedgerError::from_sdk("DeleteItem", e))?;
        }
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

    #[test]
    fn stored_kinds_read_back_as_written() {
        let kinds = [
            QuarantineKind::Event,
            QuarantineKind::Conflict,
            QuarantineKind::Callback {
                kind: CallbackKind::Sims,
                idempotency_token: Some("RQ1".into()),
            },
            QuarantineKind::Callback {
                kind: CallbackKind::EsimProfiles,
                idempotency_token: None,
            },
        ];
        for kind in kinds {
            let (callback_kind, token) = match &kind {
                QuarantineKind::Callback {
                    kind,
                    idempotency_token,
                } => (Some(kind.as_str()), idempotency_token.as_deref()),
                _ => (None, None),
            };
            assert_eq!(
                QuarantineKind::stored(kind.name(), callback_kind, token),
                Some(kind)
            );
        }
        assert_eq!(QuarantineKind::stored("callback", None, None), None);
        assert_eq!(
            QuarantineKind::stored("callback", Some("calls"), None),
            None
        );
        assert_eq!(QuarantineKind::stored("poison", None, None), None);
    }
}
