//! Building the DynamoDB items and update expressions the ledger writes.

use std::collections::BTreeMap;

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

/// What usage events add to one rollup or session item: byte counts and an event count to
/// `ADD`, attributes to `SET`. Deltas for the same item merge, so that one transaction can
/// carry many events of a SIM (a transaction may not touch an item twice).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UsageDelta {
    pub key: Item,
    /// `data` for rollups (`data_upload`...), `window` for session window sums.
    prefix: &'static str,
    counter: &'static str,
    upload: u64,
    download: u64,
    total: u64,
    events: u64,
    /// Attribute name to value; a later event's value replaces an earlier one's.
    sets: BTreeMap<&'static str, AttributeValue>,
}

impl UsageDelta {
    /// Folds `other` (a delta for the same item) into this one.
    pub fn merge(&mut self, other: UsageDelta) {
        self.upload += other.upload;
        self.download += other.download;
        self.total += other.total;
        self.events += other.events;
        self.sets.extend(other.sets);
    }

    pub fn into_update(self) -> UpdateSpec {
        let prefix = self.prefix;
        let mut values = Item::from([
            (":up".to_owned(), n(self.upload)),
            (":down".to_owned(), n(self.download)),
            (":total".to_owned(), n(self.total)),
            (":one".to_owned(), n(self.events)),
        ]);
        let mut sets = Vec::with_capacity(self.sets.len());
        for (name, value) in self.sets {
            sets.push(format!("{name} = :{name}"));
            values.insert(format!(":{name}"), value);
        }
        let mut expression = format!(
            "ADD {prefix}_upload :up, {prefix}_download :down, {prefix}_total :total, {} :one",
            self.counter
        );
        if !sets.is_empty() {
            expression.push_str(" SET ");
            expression.push_str(&sets.join(", "));
        }
        UpdateSpec {
            key: self.key,
            expression,
            values,
        }
    }
}

/// Merges deltas of the same item, keeping the order in which items first appear.
pub(crate) fn merge_deltas(deltas: impl IntoIterator<Item = UsageDelta>) -> Vec<UsageDelta> {
    let mut merged: Vec<UsageDelta> = Vec::new();
    for delta in deltas {
        match merged.iter_mut().find(|m| m.key == delta.key) {
            Some(existing) => existing.merge(delta),
            None => merged.push(delta),
        }
    }
    merged
}

/// The day rollup, the month rollup and the session's window sums for a usage event.
pub(crate) fn usage_deltas(event: &ConnectionEvent) -> Result<Vec<UsageDelta>, LedgerError> {
    let (Some(usage), Some(sim_sid)) = (event.usage, event.sim_sid.as_deref()) else {
        return Err(LedgerError::Invalid(format!(
            "usage event {} has no usage or no sim_sid",
            event.key
        )));
    };
    let delta = |key: Item, prefix, counter, sets| UsageDelta {
        key,
        prefix,
        counter,
        upload: usage.upload,
        download: usage.download,
        total: usage.total,
        events: 1,
        sets,
    };
    let mut deltas = Vec::with_capacity(3);
    for period in [event.billing_day_string(), event.billing_month_string()] {
        let mut sets = BTreeMap::from([
            ("sim_sid", s(sim_sid)),
            (
                "gsi3pk",
                s(keys::period_pk(&period, keys::shard_of(sim_sid))),
            ),
            ("gsi3sk", s(sim_sid)),
        ]);
        if let Some(account) = event.account_sid.as_deref() {
            sets.insert("account_sid", s(account));
            sets.insert("gsi1pk", s(keys::account_period_pk(account, &period)));
            sets.insert("gsi1sk", s(sim_sid));
        }
        if let Some(fleet) = event.fleet_sid.as_deref() {
            sets.insert("fleet_sid", s(fleet));
            sets.insert("gsi2pk", s(keys::fleet_period_pk(fleet, &period)));
            sets.insert("gsi2sk", s(sim_sid));
        }
        let key = key(keys::sim_pk(sim_sid), &keys::rollup_sk(&period));
        sets.insert("period", s(period));
        deltas.push(delta(key, "data", "usage_events", sets));
    }
    if let Some(session) = &event.session {
        let mut sets = BTreeMap::from([
            ("sim_sid", s(sim_sid)),
            ("session_sid", s(session.sid.as_str())),
        ]);
        if let Some(start) = session.start_time {
            sets.insert("start_time", s(timestamp(start)));
        }
        if let Some(end) = session.end_time {
            sets.insert("end_time", s(timestamp(end)));
        }
        deltas.push(delta(
            key(keys::sim_pk(sim_sid), &keys::session_sk(&session.sid)),
            "window",
            "windows_received",
            sets,
        ));
    }
    Ok(deltas)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;

    fn usage_event(sid: &str, day: &str, session: &str, up: u64, down: u64) -> ConnectionEvent {
        parse_event(
            &serde_json::json!({
                "type": "com.kore.iot.supersim.connection.data-session.updated",
                "source": "kore-events",
                "id": sid,
                "time": format!("{day}T10:00:00Z"),
                "data": {
                    "event_sid": sid,
                    "sim_sid": "HS1",
                    "account_sid": "AC1",
                    "data_session_sid": session,
                    "data_session_update_end_time": format!("{day}T10:00:00Z"),
                    "data_upload": up,
                    "data_download": down,
                    "data_total": up + down,
                },
            })
            .to_string(),
        )
        .expect("a valid usage event")
    }

    fn added(update: &UpdateSpec, placeholder: &str) -> u64 {
        number_attr(&update.values, placeholder).expect("a number")
    }

    #[test]
    fn deltas_of_one_item_merge_into_one_update_with_the_sums() {
        let events = [
            usage_event("EZ1", "2024-11-03", "PI1", 10, 20),
            usage_event("EZ2", "2024-11-03", "PI1", 1, 2),
            usage_event("EZ3", "2024-11-04", "PI2", 100, 200),
        ];
        let deltas = events.iter().flat_map(|e| usage_deltas(e).expect("deltas"));
        let updates: Vec<UpdateSpec> = merge_deltas(deltas)
            .into_iter()
            .map(UsageDelta::into_update)
            .collect();
        // Day 3, the month, session PI1, day 4, session PI2: each item once.
        assert_eq!(updates.len(), 5);
        let day3 = &updates[0];
        assert_eq!(
            string_attr(&day3.key, "sk"),
            Some(keys::rollup_sk("2024-11-03").as_str())
        );
        assert_eq!(
            (
                added(day3, ":up"),
                added(day3, ":total"),
                added(day3, ":one")
            ),
            (11, 33, 2)
        );
        let month = &updates[1];
        assert_eq!(
            string_attr(&month.key, "sk"),
            Some(keys::rollup_sk("2024-11").as_str())
        );
        assert_eq!((added(month, ":total"), added(month, ":one")), (333, 3));
        assert!(month.expression.starts_with(
            "ADD data_upload :up, data_download :down, data_total :total, usage_events :one SET "
        ));
        let session = &updates[2];
        assert_eq!((added(session, ":down"), added(session, ":one")), (22, 2));
        assert!(
            session
                .expression
                .contains("window_total :total, windows_received :one")
        );
    }
}
