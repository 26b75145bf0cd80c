//! The quarantine entry. A payload is kept whole whatever its size (Kinesis records up to
//! 1 MB, webhook bodies up to `MAX_BODY_BYTES`): one that fits is stored in the entry's item
//! (text, or base64 when it is not UTF-8); a larger one as raw bytes in parts, one item each
//! under the entry's partition, written before the entry, so that an entry that exists
//! always has all its parts.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kore_ingest_core::event::Provider;
use kore_ingest_core::excerpt::bounded_reason;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::quarantine::{
    QuarantineEntry, QuarantineKind, QuarantineSummary, QuarantinedPayload, quarantine_id,
};
use kore_ingest_core::time::timestamp;
use sha2::{Digest, Sha256};

use super::attrs::{Item, bytes_attr, key, n, number_attr, pk_of, s, string_attr};
use crate::ledger::keys;

/// DynamoDB items hold 400 KB: a payload whose stored form (text, or base64) is longer than
/// this goes into parts (real events are about 1.5 KB, so almost every entry is one item).
const MAX_INLINE_PAYLOAD: usize = 350_000;
/// Raw bytes per part item: under 400 KB with the keys and the attribute name.
const PART_BYTES: usize = 350_000;

/// An entry to write: its id, its item, and the parts to write first (none when inline).
pub struct EntryItems {
    pub id: String,
    pub entry: Item,
    pub parts: Vec<Item>,
}

/// The items of an entry keeping the first `keep` bytes of its payload (all of it when
/// `keep` is at least its length, with its full size and hash otherwise). The id is that of
/// the whole payload.
pub fn entry_items(entry: &QuarantineEntry<'_>, keep: usize) -> EntryItems {
    let path = entry.delivery.origin.path();
    let id = quarantine_id(&entry.kind, path, entry.payload);
    let received_at = timestamp(entry.delivery.received_at);
    let pk = keys::quarantine_pk(&id);
    let mut item = key(pk.clone(), keys::SINGLE);
    let mut put = |name: &str, value: String| {
        item.insert(name.to_owned(), s(value));
    };
    put("quarantine_id", id.clone());
    put("payload_kind", entry.kind.name().to_owned());
    put("reason", bounded_reason(&entry.reason).into_owned());
    put("path", path.to_owned());
    put("origin", entry.delivery.origin.locator());
    put("received_at", received_at.clone());
    put("gsi1pk", keys::QUARANTINE_INDEX_PK.to_owned());
    put("gsi1sk", keys::quarantine_index_sk(&received_at, &id));
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
        item.insert(
            "payload_sha256".into(),
            s(hex::encode(Sha256::digest(entry.payload))),
        );
        item.insert("payload_size".into(), n(entry.payload.len() as u64));
        item.insert("payload_truncated".into(), AttributeValue::Bool(true));
    }
    let mut parts = Vec::new();
    match std::str::from_utf8(stored) {
        Ok(text) if text.len() <= MAX_INLINE_PAYLOAD => {
            item.insert("payload".into(), s(text));
        }
        Err(_) if stored.len().div_ceil(3) * 4 <= MAX_INLINE_PAYLOAD => {
            item.insert("payload_base64".into(), s(BASE64.encode(stored)));
        }
        _ => {
            for (index, bytes) in stored.chunks(PART_BYTES).enumerate() {
                let mut part = key(pk.clone(), keys::part_sk(index));
                part.insert(
                    "payload_part".into(),
                    AttributeValue::B(Blob::new(bytes.to_vec())),
                );
                parts.push(part);
            }
            item.insert("payload_parts".into(), n(parts.len() as u64));
            item.insert("payload_stored_size".into(), n(stored.len() as u64));
            item.insert(
                "payload_stored_sha256".into(),
                s(hex::encode(Sha256::digest(stored))),
            );
        }
    }
    EntryItems {
        id,
        entry: item,
        parts,
    }
}

/// How many parts an entry has (0 when its payload is inline).
pub fn parts_of(item: &Item) -> u64 {
    number_attr(item, "payload_parts").unwrap_or(0)
}

/// The payload an entry holds inline, or `None` when it is in parts.
pub fn inline_payload(item: &Item) -> Result<Option<Vec<u8>>, LedgerError> {
    if let Some(text) = string_attr(item, "payload") {
        return Ok(Some(text.as_bytes().to_vec()));
    }
    if let Some(encoded) = string_attr(item, "payload_base64") {
        return BASE64
            .decode(encoded)
            .map(Some)
            .map_err(|_| corrupt(item, "payload_base64 is not base64"));
    }
    match parts_of(item) {
        0 => Err(corrupt(item, "no payload")),
        _ => Ok(None),
    }
}

/// The bytes of one part.
pub fn part_bytes<'a>(entry_pk: &str, part: &'a Item) -> Result<&'a [u8], LedgerError> {
    bytes_attr(part, "payload_part").ok_or_else(|| LedgerError::CorruptItem {
        pk: entry_pk.to_owned(),
        reason: "a payload part holds no bytes".into(),
    })
}

/// Whether parts joined are what the entry recorded.
pub fn parts_complete(item: &Item, payload: &[u8]) -> bool {
    string_attr(item, "payload_stored_sha256")
        .is_some_and(|expected| hex::encode(Sha256::digest(payload)) == expected)
}

/// An entry read back, with its payload.
pub fn payload_of(item: &Item, payload: Vec<u8>) -> Result<QuarantinedPayload, LedgerError> {
    let truncated = matches!(
        item.get("payload_truncated"),
        Some(AttributeValue::Bool(true))
    );
    let text = |name: &str| string_attr(item, name).map(str::to_owned);
    let kind_name = string_attr(item, "payload_kind").unwrap_or_default();
    let kind = QuarantineKind::from_names(
        kind_name,
        string_attr(item, "callback_kind"),
        string_attr(item, "idempotency_token"),
    )
    .ok_or_else(|| {
        corrupt(
            item,
            &format!(
                "payload_kind `{kind_name}` (callback_kind {:?}) is not a kind of quarantined payload",
                string_attr(item, "callback_kind")
            ),
        )
    })?;
    Ok(QuarantinedPayload {
        id: text("quarantine_id").unwrap_or_default(),
        kind,
        payload,
        truncated,
        original_size: number_attr(item, "payload_size").filter(|_| truncated),
        reason: text("reason").unwrap_or_default(),
        path: text("path").unwrap_or_default(),
        origin: text("origin").unwrap_or_default(),
        provider: provider_of(item)?,
        received_at: text("received_at").unwrap_or_default(),
        related_event_sid: text("related_event_sid"),
    })
}

/// A line of the quarantine list, from the index.
pub fn summary_of(item: &Item) -> Result<QuarantineSummary, LedgerError> {
    let text = |name: &str| string_attr(item, name).unwrap_or_default().to_owned();
    Ok(QuarantineSummary {
        id: text("quarantine_id"),
        reason: text("reason"),
        path: text("path"),
        provider: provider_of(item)?,
        received_at: text("received_at"),
        origin: text("origin"),
    })
}

/// The provider an entry was stored with, if any; one this code never writes makes the
/// item corrupt.
fn provider_of(item: &Item) -> Result<Option<Provider>, LedgerError> {
    string_attr(item, "provider")
        .map(|name| {
            Provider::from_name(name).ok_or_else(|| {
                corrupt(
                    item,
                    &format!("provider `{name}` is neither kore nor twilio"),
                )
            })
        })
        .transpose()
}

fn corrupt(item: &Item, reason: &str) -> LedgerError {
    LedgerError::CorruptItem {
        pk: pk_of(item).to_owned(),
        reason: reason.to_owned(),
    }
}
