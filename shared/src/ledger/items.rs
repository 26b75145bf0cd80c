//! Building the DynamoDB items and update expressions the ledger writes.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, LedgerError, Origin, keys, timestamp};
use crate::event::{ConnectionEvent, Provider};
use crate::ledger::Delivery;

pub(crate) fn key(pk: String, sk: &str) -> Item {
    Item::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

pub(crate) fn number_attr(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

pub(crate) fn string_set_contains(item: &Item, name: &str, wanted: &str) -> bool {
    matches!(item.get(name), Some(AttributeValue::Ss(values)) if values.iter().any(|v| v == wanted))
}

/// `provider#path`, e.g. `kore#kinesis`: who delivered an event, and how.
pub(crate) fn delivery_tag(provider: Provider, origin: &Origin) -> String {
    format!("{}#{}", provider.as_str(), origin.path())
}

/// The event record: normalized fields, the untouched `data`, its hash, who delivered it.
pub(crate) fn event_item(event: &ConnectionEvent, delivery: &Delivery) -> Item {
    let mut item = key(keys::event_pk(&event.key), keys::SINGLE);
    let day = event.billing_day_string();
    let event_time = timestamp(event.event_time);
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_owned(), value);
    };
    put("event_sid", s(event.key.as_str()));
    put("kind", s(event.kind.name()));
    put("event_type", s(event.event_type.as_str()));
    put("provider", s(event.provider.as_str()));
    put("path", s(delivery.origin.path()));
    put("origin", s(delivery.origin.locator()));
    put(
        "deliveries",
        AttributeValue::Ss(vec![delivery_tag(event.provider, &delivery.origin)]),
    );
    put("received_at", s(timestamp(delivery.received_at)));
    put("event_time", s(event_time.as_str()));
    put("billing_day", s(day.as_str()));
    put("billing_month", s(event.billing_month_string()));
    put("data", s(event.data.as_str()));
    put("data_hash", s(event.data_hash.to_hex()));
    // The time index is partitioned by the day of `event_time`, which is what it sorts on.
    let index_day = event.event_time.format("%Y-%m-%d").to_string();
    put(
        "gsi1pk",
        s(keys::events_by_day_pk(
            &index_day,
            keys::shard_of(event.key.as_str()),
        )),
    );
    put("gsi1sk", s(format!("{event_time}#{}", event.key)));
    let optional = [
        ("sim_sid", event.sim_sid.as_deref()),
        ("account_sid", event.account_sid.as_deref()),
        ("fleet_sid", event.fleet_sid.as_deref()),
        ("cloud_event_id", event.cloud_event_id.as_deref()),
        ("source", event.source.as_deref()),
        (
            "session_sid",
            event.session.as_ref().map(|s| s.sid.as_str()),
        ),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            put(name, s(value));
        }
    }
    if let Some(usage) = event.usage {
        put("data_upload", n(usage.upload));
        put("data_download", n(usage.download));
        put("data_total", n(usage.total));
    }
    if let Some(cumulative) = event.session.as_ref().and_then(|s| s.cumulative) {
        put("cumulative_upload", n(cumulative.upload));
        put("cumulative_download", n(cumulative.download));
        put("cumulative_total", n(cumulative.total));
    }
    item
}

/// One `UpdateItem` (or transaction `Update`) to run.
pub(crate) struct UpdateSpec {
    pub key: Item,
    pub expression: String,
    pub values: Item,
}

/// The day rollup, the month rollup and the session's window sums for a usage event.
pub(crate) fn usage_updates(event: &ConnectionEvent) -> Result<Vec<UpdateSpec>, LedgerError> {
    let (Some(usage), Some(sim_sid)) = (event.usage, event.sim_sid.as_deref()) else {
        return Err(LedgerError::Invalid(format!(
            "usage event {} has no usage or no sim_sid",
            event.key
        )));
    };
    let amounts = [
        (":up", n(usage.upload)),
        (":down", n(usage.download)),
        (":total", n(usage.total)),
        (":one", n(1)),
        (":sim", s(sim_sid)),
    ];
    let mut updates = Vec::with_capacity(3);
    for period in [event.billing_day_string(), event.billing_month_string()] {
        let mut set = vec![
            "sim_sid = :sim",
            "period = :period",
            "gsi3pk = :g3",
            "gsi3sk = :sim",
        ];
        let mut values: Item = amounts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        values.insert(
            ":g3".into(),
            s(keys::period_pk(&period, keys::shard_of(sim_sid))),
        );
        if let Some(account) = event.account_sid.as_deref() {
            set.extend(["account_sid = :account", "gsi1pk = :g1", "gsi1sk = :sim"]);
            values.insert(":account".into(), s(account));
            values.insert(":g1".into(), s(keys::account_period_pk(account, &period)));
        }
        if let Some(fleet) = event.fleet_sid.as_deref() {
            set.extend(["fleet_sid = :fleet", "gsi2pk = :g2", "gsi2sk = :sim"]);
            values.insert(":fleet".into(), s(fleet));
            values.insert(":g2".into(), s(keys::fleet_period_pk(fleet, &period)));
        }
        values.insert(":period".into(), s(period.as_str()));
        updates.push(UpdateSpec {
            key: key(keys::sim_pk(sim_sid), &keys::rollup_sk(&period)),
            expression: format!(
                "ADD data_upload :up, data_download :down, data_total :total, usage_events :one SET {}",
                set.join(", ")
            ),
            values,
        });
    }
    if let Some(session) = &event.session {
        let mut set = vec!["sim_sid = :sim", "session_sid = :sid"];
        let mut values: Item = amounts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        values.insert(":sid".into(), s(session.sid.as_str()));
        if let Some(start) = session.start_time {
            set.push("start_time = :start");
            values.insert(":start".into(), s(timestamp(start)));
        }
        if let Some(end) = session.end_time {
            set.push("end_time = :end");
            values.insert(":end".into(), s(timestamp(end)));
        }
        updates.push(UpdateSpec {
            key: key(keys::sim_pk(sim_sid), &keys::session_sk(&session.sid)),
            expression: format!(
                "ADD window_upload :up, window_download :down, window_total :total, windows_received :one SET {}",
                set.join(", ")
            ),
            values,
        });
    }
    Ok(updates)
}

/// Sets the session's cumulative totals; the caller adds the condition that they grow.
pub(crate) fn session_high_water(event: &ConnectionEvent) -> Option<UpdateSpec> {
    let session = event.session.as_ref()?;
    let cumulative = session.cumulative?;
    let sim_sid = event.sim_sid.as_deref()?;
    Some(UpdateSpec {
        key: key(keys::sim_pk(sim_sid), &keys::session_sk(&session.sid)),
        expression: "SET cumulative_upload = :up, cumulative_download = :down, \
                     cumulative_total = :total, sim_sid = :sim, session_sid = :sid"
            .into(),
        values: Item::from([
            (":up".to_owned(), n(cumulative.upload)),
            (":down".to_owned(), n(cumulative.download)),
            (":total".to_owned(), n(cumulative.total)),
            (":sim".to_owned(), s(sim_sid)),
            (":sid".to_owned(), s(session.sid.as_str())),
        ]),
    })
}
