//! The callback record, one per provider and idempotency token, and the SIM status a
//! SIM-update callback sets.

use aws_sdk_dynamodb::types::AttributeValue;
use kore_ingest_core::callback::{Callback, TokenSource};
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::time::timestamp;

use super::attrs::{Item, key, s};
use crate::ledger::keys;

pub fn callback_item(callback: &Callback, payload: &[u8], delivery: &Delivery) -> Item {
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

/// The key of a SIM's latest status.
pub fn sim_status_key(sim_sid: &str) -> Item {
    key(keys::sim_pk(sim_sid), keys::SIM_STATUS_SK)
}

/// The `SET` of a SIM's latest status, and its values.
pub fn sim_status_update(sim_sid: &str, status: &str, delivery: &Delivery) -> (&'static str, Item) {
    (
        "SET sim_sid = :sim, #status = :status, updated_at = :at",
        Item::from([
            (":sim".to_owned(), s(sim_sid)),
            (":status".to_owned(), s(status)),
            (":at".to_owned(), s(timestamp(delivery.received_at))),
        ]),
    )
}
