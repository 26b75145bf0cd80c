//! The callback record, one per provider and idempotency token; and for a SIM-update
//! callback, its entry in the SIM's status history and the SIM's current status.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use kore_ingest_core::callback::{Callback, CallbackKind, SentAtSource, TokenSource};
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::event::Provider;
use kore_ingest_core::forward::StoredCallback;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::sim_status::StatusChange;
use kore_ingest_core::time::timestamp;

use super::attrs::{Item, key, pk_of, s, string_attr};
use crate::ledger::keys;

/// When the callback was sent and where that time comes from, as stored.
#[derive(Debug, Clone, Copy)]
pub struct SentAt {
    pub at: DateTime<Utc>,
    pub source: SentAtSource,
}

pub fn callback_item(
    callback: &Callback,
    payload: &[u8],
    delivery: &Delivery,
    sent: SentAt,
) -> Item {
    let provider = callback.provider.as_str();
    let mut item = key(
        keys::callback_pk(provider, &callback.idempotency_token),
        keys::SINGLE,
    );
    item.insert("callback_kind".into(), s(callback.kind.as_str()));
    item.insert("provider".into(), s(provider));
    item.insert("idempotency_token".into(), s(&callback.idempotency_token));
    let token_source = match callback.token_source {
        TokenSource::Header => "header",
        TokenSource::PayloadHash => "payload-hash",
    };
    item.insert("token_source".into(), s(token_source));
    item.insert("path".into(), s(delivery.origin.path()));
    item.insert("origin".into(), s(delivery.origin.locator()));
    item.insert("received_at".into(), s(timestamp(delivery.received_at)));
    item.insert("sent_at".into(), s(timestamp(sent.at)));
    item.insert("sent_at_source".into(), s(sent.source.as_str()));
    // parse_callback only accepts UTF-8 payloads, so the text is lossless.
    item.insert(
        "payload".into(),
        s(String::from_utf8_lossy(payload).into_owned()),
    );
    let fields = callback
        .fields
        .iter()
        .map(|(name, value)| AttributeValue::L(vec![s(name), s(value)]))
        .collect();
    item.insert("fields".into(), AttributeValue::L(fields));
    for (name, value) in [
        ("sim_sid", &callback.sim_sid),
        ("account_sid", &callback.account_sid),
        ("status", &callback.status),
    ] {
        if let Some(value) = value {
            item.insert(name.into(), s(value));
        }
    }
    item
}

/// A callback record read back.
pub fn stored_callback_of(item: &Item) -> Result<StoredCallback, LedgerError> {
    let pk = pk_of(item);
    let corrupt = |reason: String| LedgerError::CorruptItem {
        pk: pk.to_owned(),
        reason,
    };
    let id = keys::callback_id_of_pk(pk)
        .ok_or_else(|| corrupt("not a callback".into()))?
        .to_owned();
    let text =
        |name: &str| string_attr(item, name).ok_or_else(|| corrupt(format!("`{name}` is missing")));
    let kind = CallbackKind::from_path_segment(text("callback_kind")?)
        .ok_or_else(|| corrupt("`callback_kind` is unknown".into()))?;
    let provider = Provider::from_name(text("provider")?)
        .ok_or_else(|| corrupt("`provider` is unknown".into()))?;
    let received_at = time_attr(item, "received_at").map_err(corrupt)?;
    // A record stored without a send time was sent when it arrived, as far as is known.
    let (sent_at, sent_at_source) = match string_attr(item, "sent_at") {
        Some(_) => (
            time_attr(item, "sent_at").map_err(corrupt)?,
            string_attr(item, "sent_at_source")
                .and_then(SentAtSource::parse)
                .ok_or_else(|| corrupt("`sent_at_source` is unknown".into()))?,
        ),
        None => (received_at, SentAtSource::ArrivalNoDate),
    };
    let mut fields = Vec::new();
    if let Some(AttributeValue::L(list)) = item.get("fields") {
        for pair in list {
            match pair {
                AttributeValue::L(pair) => match pair.as_slice() {
                    [AttributeValue::S(name), AttributeValue::S(value)] => {
                        fields.push((name.clone(), value.clone()))
                    }
                    _ => return Err(corrupt("a field is not a name and a value".into())),
                },
                _ => return Err(corrupt("a field is not a name and a value".into())),
            }
        }
    }
    let optional = |name: &str| string_attr(item, name).map(str::to_owned);
    Ok(StoredCallback {
        id,
        kind,
        provider,
        sent_at,
        sent_at_source,
        received_at,
        sim_sid: optional("sim_sid"),
        account_sid: optional("account_sid"),
        status: optional("status"),
        fields,
    })
}

fn time_attr(item: &Item, name: &str) -> Result<DateTime<Utc>, String> {
    string_attr(item, name)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .ok_or_else(|| format!("`{name}` is not an RFC 3339 time"))
}

/// A SIM-update callback's status as the history and the current status keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimStatusEntry {
    pub sim_sid: String,
    pub account_sid: Option<String>,
    pub change: StatusChange,
}

/// The history entry of one SIM-update callback, under the SIM: sorted by send time, then
/// arrival, then the callback's key (unique).
pub fn history_item(entry: &SimStatusEntry, callback_id: &str) -> Item {
    let change = &entry.change;
    let mut item = key(
        keys::sim_pk(&entry.sim_sid),
        keys::status_history_sk(
            &timestamp(change.sent_at),
            &timestamp(change.received_at),
            callback_id,
        ),
    );
    insert_status(&mut item, entry);
    item
}

fn insert_status(item: &mut Item, entry: &SimStatusEntry) {
    let change = &entry.change;
    item.insert("sim_sid".into(), s(&entry.sim_sid));
    if let Some(account) = &entry.account_sid {
        item.insert("account_sid".into(), s(account));
    }
    item.insert("status".into(), s(&change.status));
    item.insert("sent_at".into(), s(timestamp(change.sent_at)));
    item.insert("sent_at_source".into(), s(change.sent_at_source.as_str()));
    item.insert("received_at".into(), s(timestamp(change.received_at)));
    item.insert("provider".into(), s(change.provider.as_str()));
}

/// The key of a SIM's current status.
pub fn current_status_key(sim_sid: &str) -> Item {
    key(keys::sim_status_pk(sim_sid), sim_sid)
}

/// The update of a SIM's current status to an entry, and its condition: only over a status
/// sent earlier, or sent at the same time and arrived no later (the rule of
/// `kore_ingest_core::sim_status`, on the stored text forms, which sort as times).
pub struct CurrentStatusUpdate {
    pub expression: String,
    pub condition: &'static str,
    pub names: HashMap<String, String>,
    pub values: Item,
}

pub fn current_status_update(entry: &SimStatusEntry) -> CurrentStatusUpdate {
    let mut fields = Item::new();
    insert_status(&mut fields, entry);
    let mut names = HashMap::new();
    let mut values = Item::from([
        (":sent".to_owned(), s(timestamp(entry.change.sent_at))),
        (
            ":received".to_owned(),
            s(timestamp(entry.change.received_at)),
        ),
    ]);
    let mut sets = Vec::new();
    for (i, (name, value)) in fields.into_iter().enumerate() {
        sets.push(format!("#a{i} = :a{i}"));
        names.insert(format!("#a{i}"), name);
        values.insert(format!(":a{i}"), value);
    }
    CurrentStatusUpdate {
        expression: format!("SET {}", sets.join(", ")),
        condition: "attribute_not_exists(sent_at) OR sent_at < :sent \
                    OR (sent_at = :sent AND received_at <= :received)",
        names,
        values,
    }
}

/// A history entry or a current status, read back.
pub fn status_entry_of_item(item: &Item) -> Result<SimStatusEntry, LedgerError> {
    let pk = pk_of(item);
    let corrupt = |reason: String| LedgerError::CorruptItem {
        pk: pk.to_owned(),
        reason,
    };
    let text =
        |name: &str| string_attr(item, name).ok_or_else(|| corrupt(format!("`{name}` is missing")));
    Ok(SimStatusEntry {
        sim_sid: text("sim_sid")?.to_owned(),
        account_sid: string_attr(item, "account_sid").map(str::to_owned),
        change: StatusChange {
            status: text("status")?.to_owned(),
            sent_at: time_attr(item, "sent_at").map_err(corrupt)?,
            sent_at_source: SentAtSource::parse(text("sent_at_source")?)
                .ok_or_else(|| corrupt("`sent_at_source` is unknown".into()))?,
            received_at: time_attr(item, "received_at").map_err(corrupt)?,
            provider: Provider::from_name(text("provider")?)
                .ok_or_else(|| corrupt("`provider` is unknown".into()))?,
        },
    })
}
