//! The items the ledger writes and reads back, attribute by attribute. Sizes matter: DynamoDB
//! bills a write per started kilobyte (twice in a transaction), so the event record and the
//! rollup are kept under 1 KB in the shape real traffic has, with short attribute names
//! and nothing that can be derived from the stored `data`.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Timelike, Utc};

use super::{Item, LedgerError, keys, timestamp};
use crate::delivery::{Delivery, delivery_tag};
use crate::event::{ConnectionEvent, DataHash, DataVolume, DedupeKey};
use crate::usage::{Booking, BookingNames, HourUsage, UsageCell};

pub(crate) fn key(pk: String, sk: &str) -> Item {
    Item::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: u64) -> AttributeValue {
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

pub(crate) fn string_set(item: &Item, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(values)) => values.clone(),
        _ => Vec::new(),
    }
}

// ---- event records ----------------------------------------------------------------------

/// Attribute names of an event record. The legacy layout (before compression) used
/// `data` (text) and `data_hash` (hex); both are still read.
const DATA_DEFLATE: &str = "z";
const DATA_HASH: &str = "h";
const EVENT_TYPE: &str = "ty";
const EVENT_TIME: &str = "et";
const RECEIVED_AT: &str = "ra";
pub(crate) const DELIVERIES: &str = "deliveries";
const LEGACY_DATA: &str = "data";
const LEGACY_DATA_HASH: &str = "data_hash";
const LEGACY_EVENT_TYPE: &str = "event_type";
const LEGACY_EVENT_TIME: &str = "event_time";
const LEGACY_RECEIVED_AT: &str = "received_at";

/// What the duplicate check reads of a stored event.
pub(crate) const DIGEST_PROJECTION: &str = "pk, h, data_hash, deliveries";

/// A stored data object larger than this after inflating is refused as corrupt: nothing
/// the pipeline accepts is larger (Kinesis records and webhook bodies are at most 1 MB).
const MAX_DATA_BYTES: usize = 8 * 1024 * 1024;

/// The event record: the `data` object exactly as received (deflated), its hash, the
/// envelope's type and time, when it first arrived and who delivered it. Everything else
/// (SIM, amounts, booking) is derived from `data` when needed, which keeps the item, and so
/// its write, at one kilobyte. Events without usage also carry the time index keys.
pub(crate) fn event_item(event: &ConnectionEvent, delivery: &Delivery) -> Item {
    let mut item = key(keys::event_pk(&event.key), keys::SINGLE);
    let compressed = miniz_oxide::deflate::compress_to_vec(event.data.as_bytes(), 6);
    item.insert(
        DATA_DEFLATE.into(),
        AttributeValue::B(Blob::new(compressed)),
    );
    item.insert(
        DATA_HASH.into(),
        AttributeValue::B(Blob::new(event.data_hash.as_bytes().to_vec())),
    );
    item.insert(
        DELIVERIES.into(),
        AttributeValue::Ss(vec![delivery_tag(event.provider, &delivery.origin)]),
    );
    item.insert(EVENT_TYPE.into(), s(event.event_type.as_str()));
    let event_time = timestamp(event.event_time);
    item.insert(RECEIVED_AT.into(), s(timestamp(delivery.received_at)));
    if event.usage.is_none() {
        // The time index (gsi1 keys are always projected): how events without usage are
        // found again by time. Usage events are found through their booking lists instead,
        // which costs no index write per event.
        let day = event.event_time.format("%Y-%m-%d").to_string();
        item.insert(
            "gsi1pk".into(),
            s(keys::events_by_day_pk(
                &day,
                keys::shard_of(event.key.as_str()),
            )),
        );
        item.insert("gsi1sk".into(), s(format!("{event_time}#{}", event.key)));
    }
    item.insert(EVENT_TIME.into(), s(event_time));
    item
}

/// The stored hash and deliveries of an event: enough to tell a duplicate from a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredDigest {
    pub data_hash: Option<DataHash>,
    pub deliveries: Vec<String>,
}

impl StoredDigest {
    pub fn of(item: &Item) -> Self {
        StoredDigest {
            data_hash: stored_hash(item),
            deliveries: string_set(item, DELIVERIES),
        }
    }
}

fn stored_hash(item: &Item) -> Option<DataHash> {
    match (item.get(DATA_HASH), string_attr(item, LEGACY_DATA_HASH)) {
        (Some(AttributeValue::B(bytes)), _) => DataHash::from_bytes(bytes.as_ref()),
        (_, Some(hex)) => DataHash::from_hex(hex),
        _ => None,
    }
}

/// An event record read back, in either layout.
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
    /// The event normalized again from its stored `data` (kind, SIM, usage, booking...).
    pub fn event(&self) -> Result<ConnectionEvent, LedgerError> {
        super::reports::normalized(self)
    }

    /// An event record as DynamoDB returns it (a read, or a stream's new image).
    pub fn from_item(item: &Item) -> Result<Self, LedgerError> {
        let pk = string_attr(item, "pk").unwrap_or_default();
        let corrupt = |reason: &str| LedgerError::CorruptItem {
            pk: pk.to_owned(),
            reason: reason.to_owned(),
        };
        let sid = pk
            .strip_prefix(keys::EVENT_PK_PREFIX)
            .ok_or_else(|| corrupt("not an event record"))?;
        let key = DedupeKey::new(sid, "pk").map_err(|e| corrupt(&format!("bad event key: {e}")))?;
        let data = match (item.get(DATA_DEFLATE), string_attr(item, LEGACY_DATA)) {
            (Some(AttributeValue::B(bytes)), _) => {
                let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(
                    bytes.as_ref(),
                    MAX_DATA_BYTES,
                )
                .map_err(|_| corrupt("the deflated data does not inflate"))?;
                String::from_utf8(raw).map_err(|_| corrupt("the data is not UTF-8"))?
            }
            (_, Some(text)) => text.to_owned(),
            _ => return Err(corrupt("no data")),
        };
        let event_type = string_attr(item, EVENT_TYPE)
            .or_else(|| string_attr(item, LEGACY_EVENT_TYPE))
            .ok_or_else(|| corrupt("no event type"))?
            .to_owned();
        let event_time = string_attr(item, EVENT_TIME)
            .or_else(|| string_attr(item, LEGACY_EVENT_TIME))
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .ok_or_else(|| corrupt("no event time"))?
            .with_timezone(&Utc);
        Ok(StoredEvent {
            key,
            event_type,
            event_time,
            data,
            data_hash: stored_hash(item),
            deliveries: string_set(item, DELIVERIES),
            received_at: string_attr(item, RECEIVED_AT)
                .or_else(|| string_attr(item, LEGACY_RECEIVED_AT))
                .map(str::to_owned),
        })
    }
}

// ---- usage rollups ------------------------------------------------------------------------

const SET_ICCID: &str = "ic";
const SET_UNIQUE_NAME: &str = "un";
const SET_NETWORK_NAME: &str = "nn";
/// Bumped by every write: `kore-usage rebuild` rewrites a rollup only if no commit touched
/// it since it was read.
pub(crate) const VERSION: &str = "v";
/// The day's totals, kept beside the hours so that whole-day queries (a month by SIM) read
/// four numbers per item rather than ninety-six.
const DAY_ATTRS: [&str; 4] = ["du", "dd", "dt", "dn"];
/// The day's late usage: what was booked into a closed period after it was closed (see
/// [`super::closes`]); the rest of the day is what the close's snapshot holds.
const LATE_ATTRS: [&str; 4] = ["xu", "xd", "xt", "xn"];
/// What a read takes of a rollup, so that a month over many SIMs reads as little as it
/// needs: the booking alone, the day's totals (with the names a grouping shows), or what a
/// close needs (its late counters and version too).
pub(crate) const BOOKING_ONLY: &str = "pk, sk";
pub(crate) const DAY_TOTALS: &str = "pk, sk, du, dd, dt, dn";
pub(crate) const DAY_TOTALS_AND_SIM_NAMES: &str = "pk, sk, du, dd, dt, dn, ic, un";
pub(crate) const DAY_TOTALS_AND_NETWORK_NAME: &str = "pk, sk, du, dd, dt, dn, nn";
pub(crate) const CLOSE_READ: &str = "pk, sk, v, du, dd, dt, dn, xu, xd, xt, xn, ic, un, nn";

/// The four counters of an hour: `u07`, `d07`, `t07`, `n07` for 07:00-08:00 UTC.
fn hour_attrs(hour: u32) -> [String; 4] {
    ["u", "d", "t", "n"].map(|c| format!("{c}{hour:02}"))
}

fn counts(usage: &HourUsage) -> [u64; 4] {
    [
        usage.usage.upload,
        usage.usage.download,
        usage.usage.total,
        usage.events,
    ]
}

fn read_counts(item: &Item, names: [&str; 4]) -> Option<HourUsage> {
    let [up, down, total, events] = names.map(|name| number_attr(item, name));
    Some(HourUsage {
        usage: DataVolume {
            upload: up.unwrap_or(0),
            download: down.unwrap_or(0),
            total: total.unwrap_or(0),
        },
        events: events?,
    })
}

/// The sum of some hours, checked.
pub(crate) fn day_total<'a>(
    hours: impl IntoIterator<Item = &'a HourUsage>,
) -> Result<HourUsage, LedgerError> {
    hours
        .into_iter()
        .try_fold(HourUsage::default(), |sum, hour| sum.checked_add(*hour))
        .ok_or_else(|| LedgerError::Invalid("usage counts overflow".into()))
}

/// `SET` clauses for the names that are known.
fn set_names(names: &BookingNames, sets: &mut Vec<String>, values: &mut Item) {
    for (name, value) in [
        (SET_ICCID, &names.sim_iccid),
        (SET_UNIQUE_NAME, &names.sim_unique_name),
        (SET_NETWORK_NAME, &names.network_name),
    ] {
        if let Some(value) = value {
            sets.push(format!("{name} = :{name}"));
            values.insert(format!(":{name}"), s(value.as_str()));
        }
    }
}

/// A rollup's sort key: the booking, `#`-separated, unknown parts empty. `%` and `#` inside
/// a value are escaped, so any value round-trips.
pub(crate) fn booking_sk(booking: &Booking) -> String {
    let part = |value: Option<&str>| {
        value
            .unwrap_or_default()
            .replace('%', "%25")
            .replace('#', "%23")
    };
    [
        part(Some(&booking.sim_sid)),
        part(booking.account_sid.as_deref()),
        part(booking.fleet_sid.as_deref()),
        part(booking.network_sid.as_deref()),
        part(booking.iso_country.as_deref()),
    ]
    .join("#")
}

pub(crate) fn booking_of_sk(sk: &str) -> Option<Booking> {
    let parts: Vec<Option<String>> = sk
        .split('#')
        .map(|p| (!p.is_empty()).then(|| p.replace("%23", "#").replace("%25", "%")))
        .collect();
    let [sim, account, fleet, network, country] = <[Option<String>; 5]>::try_from(parts).ok()?;
    Some(Booking {
        sim_sid: sim?,
        account_sid: account,
        fleet_sid: fleet,
        network_sid: network,
        iso_country: country,
    })
}

/// The prefix of every rollup sort key of one SIM.
pub(crate) fn sim_sk_prefix(sim_sid: &str) -> String {
    format!("{}#", sim_sid.replace('%', "%25").replace('#', "%23"))
}

/// The key of a rollup item.
pub(crate) fn rollup_key(day: NaiveDate, booking: &Booking) -> Item {
    key(
        keys::usage_pk(
            &day.format("%Y-%m-%d").to_string(),
            keys::usage_shard(&booking.sim_sid),
        ),
        &booking_sk(booking),
    )
}

/// What a commit adds to one rollup item (one SIM, day and booking): per-hour counts and
/// the latest names. Deltas of the same item merge (a transaction may touch an item once).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RollupDelta {
    pub day: NaiveDate,
    pub booking: Booking,
    pub hours: BTreeMap<u32, HourUsage>,
    /// The part of it booked into a closed period.
    pub late: HourUsage,
    names: BookingNames,
    /// When the usage carrying `names` happened: the latest wins.
    names_at: DateTime<Utc>,
}

impl RollupDelta {
    /// The delta of one usage event; `late` when it falls into a closed period.
    pub fn of(event: &ConnectionEvent, late: bool) -> Option<Self> {
        let booking = Booking::of(event)?;
        let usage = HourUsage::window(event.usage?);
        Some(RollupDelta {
            day: event.billing_day,
            booking,
            hours: BTreeMap::from([(event.booking_hour().hour(), usage)]),
            late: if late { usage } else { HourUsage::default() },
            names: BookingNames::of(event),
            names_at: event.booked_at,
        })
    }

    pub fn same_item(&self, other: &RollupDelta) -> bool {
        self.day == other.day && self.booking == other.booking
    }

    /// Folds `other` (a delta for the same item) into this one. Counts are checked: each
    /// event is at most 2^50 bytes, so only an absurd batch could overflow.
    pub fn merge(&mut self, other: RollupDelta) -> Result<(), LedgerError> {
        let overflow = || LedgerError::Invalid("usage counts overflow".into());
        for (hour, usage) in other.hours {
            let sum = self.hours.entry(hour).or_default();
            *sum = sum.checked_add(usage).ok_or_else(overflow)?;
        }
        self.late = self.late.checked_add(other.late).ok_or_else(overflow)?;
        if other.names_at >= self.names_at {
            self.names = other.names;
            self.names_at = other.names_at;
        }
        Ok(())
    }

    /// `ADD` of the hours, the day's totals and the version; `SET` of the names.
    pub fn into_update(self) -> Result<UpdateSpec, LedgerError> {
        let mut values = Item::from([(":one".to_owned(), n(1))]);
        let mut adds = vec![format!("{VERSION} :one")];
        let day = day_total(self.hours.values())?;
        let hour_counts = self
            .hours
            .iter()
            .map(|(hour, usage)| (hour_attrs(*hour), counts(usage)));
        let day_counts = std::iter::once((DAY_ATTRS.map(str::to_owned), counts(&day)));
        let late_counts =
            (self.late.events > 0).then(|| (LATE_ATTRS.map(str::to_owned), counts(&self.late)));
        for (names, counts) in hour_counts.chain(day_counts).chain(late_counts) {
            for (name, count) in names.into_iter().zip(counts) {
                adds.push(format!("{name} :{name}"));
                values.insert(format!(":{name}"), n(count));
            }
        }
        let mut sets = Vec::new();
        set_names(&self.names, &mut sets, &mut values);
        let mut expression = format!("ADD {}", adds.join(", "));
        if !sets.is_empty() {
            expression.push_str(" SET ");
            expression.push_str(&sets.join(", "));
        }
        Ok(UpdateSpec {
            key: rollup_key(self.day, &self.booking),
            expression,
            values,
        })
    }
}

/// One `UpdateItem` (or transaction `Update`) to run.
pub(crate) struct UpdateSpec {
    pub key: Item,
    pub expression: String,
    pub values: Item,
}

/// Merges deltas of the same item, keeping the order in which items first appear.
pub(crate) fn merge_deltas(
    deltas: impl IntoIterator<Item = RollupDelta>,
) -> Result<Vec<RollupDelta>, LedgerError> {
    let mut merged: Vec<RollupDelta> = Vec::new();
    for delta in deltas {
        match merged.iter_mut().find(|m| m.same_item(&delta)) {
            Some(existing) => existing.merge(delta)?,
            None => merged.push(delta),
        }
    }
    Ok(merged)
}

/// A rollup item read back: its day, booking, version, stored hours and day totals (a
/// whole-day read projects the day totals only).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredRollup {
    pub key: Item,
    pub day: NaiveDate,
    pub booking: Booking,
    pub names: BookingNames,
    pub hours: BTreeMap<u32, HourUsage>,
    pub day_total: Option<HourUsage>,
    /// Late usage booked into a closed period.
    pub late: Option<HourUsage>,
    pub version: Option<u64>,
}

impl StoredRollup {
    pub fn from_item(item: &Item) -> Result<Self, LedgerError> {
        let pk = string_attr(item, "pk").unwrap_or_default();
        let corrupt = |reason: &str| LedgerError::CorruptItem {
            pk: pk.to_owned(),
            reason: reason.to_owned(),
        };
        let day = pk
            .strip_prefix("USAGE#")
            .and_then(|rest| rest.split('#').next())
            .and_then(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok())
            .ok_or_else(|| corrupt("not a usage rollup"))?;
        let sk = string_attr(item, "sk").unwrap_or_default();
        let booking = booking_of_sk(sk).ok_or_else(|| corrupt("bad booking sort key"))?;
        let hours = (0..24)
            .filter_map(|hour| {
                let names = hour_attrs(hour);
                let names = [&names[0], &names[1], &names[2], &names[3]].map(String::as_str);
                Some((hour, read_counts(item, names)?))
            })
            .collect();
        let text = |name: &str| string_attr(item, name).map(str::to_owned);
        Ok(StoredRollup {
            key: key(pk.to_owned(), sk),
            day,
            booking,
            names: BookingNames {
                sim_iccid: text(SET_ICCID),
                sim_unique_name: text(SET_UNIQUE_NAME),
                network_name: text(SET_NETWORK_NAME),
            },
            hours,
            day_total: read_counts(item, DAY_ATTRS),
            late: read_counts(item, LATE_ATTRS),
            version: number_attr(item, VERSION),
        })
    }

    /// The stored hours, one cell each.
    pub fn cells(&self) -> impl Iterator<Item = UsageCell> + '_ {
        self.hours.iter().filter_map(|(hour, usage)| {
            let at = self.day.and_hms_opt(*hour, 0, 0)?.and_utc();
            Some(UsageCell {
                booking: self.booking.clone(),
                hour: at,
                usage: *usage,
                names: self.names.clone(),
            })
        })
    }

    /// The whole day as one cell at midnight: enough for day and range buckets.
    pub fn day_cell(&self) -> Option<UsageCell> {
        Some(UsageCell {
            booking: self.booking.clone(),
            hour: self.day.and_hms_opt(0, 0, 0)?.and_utc(),
            usage: self.day_total?,
            names: self.names.clone(),
        })
    }
}

/// A whole rollup item, as the commits of `hours` would have left it (one commit: version 1).
/// For tools that load a ledger directly, such as the benchmark's month of 10,000 SIMs.
pub fn rollup_item(
    day: NaiveDate,
    booking: &Booking,
    hours: &BTreeMap<u32, HourUsage>,
    names: &BookingNames,
) -> Result<Item, LedgerError> {
    let mut item = rollup_key(day, booking);
    item.insert(VERSION.into(), n(1));
    let total = day_total(hours.values())?;
    let hour_counts = hours
        .iter()
        .map(|(hour, usage)| (hour_attrs(*hour), counts(usage)));
    let day_counts = std::iter::once((DAY_ATTRS.map(str::to_owned), counts(&total)));
    for (names, counts) in hour_counts.chain(day_counts) {
        for (name, count) in names.into_iter().zip(counts) {
            item.insert(name, n(count));
        }
    }
    let (mut sets, mut values) = (Vec::new(), Item::new());
    set_names(names, &mut sets, &mut values);
    for (name, value) in values {
        item.insert(name.trim_start_matches(':').to_owned(), value);
    }
    Ok(item)
}

/// The update that makes a rollup's `hours` what `wanted` says (an hour not in `wanted` is
/// removed) and its day totals `day`, with its names; `kore-usage rebuild` runs it under a
/// condition on the version it read.
pub(crate) fn rollup_rewrite(
    key: Item,
    hours: impl IntoIterator<Item = u32>,
    wanted: &BTreeMap<u32, HourUsage>,
    day: HourUsage,
    names: &BookingNames,
) -> UpdateSpec {
    let mut sets = Vec::new();
    let mut removes = Vec::new();
    let mut values = Item::from([(":one".to_owned(), n(1))]);
    for hour in hours {
        let names = hour_attrs(hour);
        match wanted.get(&hour) {
            Some(usage) => {
                for (name, count) in names.into_iter().zip(counts(usage)) {
                    sets.push(format!("{name} = :{name}"));
                    values.insert(format!(":{name}"), n(count));
                }
            }
            None => removes.extend(names),
        }
    }
    for (name, count) in DAY_ATTRS.into_iter().zip(counts(&day)) {
        sets.push(format!("{name} = :{name}"));
        values.insert(format!(":{name}"), n(count));
    }
    set_names(names, &mut sets, &mut values);
    let mut expression = format!("ADD {VERSION} :one SET {}", sets.join(", "));
    if !removes.is_empty() {
        expression.push_str(" REMOVE ");
        expression.push_str(&removes.join(", "));
    }
    UpdateSpec {
        key,
        expression,
        values,
    }
}

// ---- booking lists ------------------------------------------------------------------------

pub(crate) const BOOKED_EVENTS: &str = "ev";

/// The booking list of one commit: the events it booked for one SIM and day.
pub(crate) fn booking_list_item(sim_sid: &str, day: NaiveDate, events: &[&DedupeKey]) -> Item {
    let first = events[0];
    let mut item = key(
        keys::sim_pk(sim_sid),
        &keys::booked_sk(&day.format("%Y-%m-%d").to_string(), first),
    );
    item.insert(
        BOOKED_EVENTS.into(),
        AttributeValue::Ss(events.iter().map(|k| k.as_str().to_owned()).collect()),
    );
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event;

    fn usage_event(sid: &str, end: &str, network: &str, up: u64, down: u64) -> ConnectionEvent {
        parse_event(
            &serde_json::json!({
                "type": "com.kore.iot.supersim.connection.data-session.updated",
                "source": "kore-events",
                "id": sid,
                "time": end,
                "data": {
                    "event_sid": sid,
                    "sim_sid": "HS1",
                    "account_sid": "AC1",
                    "fleet_sid": "HF#1",
                    "sim_iccid": "8988",
                    "network": {"sid": network, "iso_country": "DE", "friendly_name": network},
                    "data_session_sid": "PI1",
                    "data_session_update_end_time": end,
                    "data_upload": up,
                    "data_download": down,
                    "data_total": up + down,
                },
            })
            .to_string(),
        )
        .expect("a valid usage event")
    }

    #[test]
    fn deltas_of_one_booking_and_day_merge_per_hour() {
        let events = [
            usage_event("EZ1", "2024-11-03T10:10:00Z", "HW1", 10, 20),
            usage_event("EZ2", "2024-11-03T10:50:00Z", "HW1", 1, 2),
            usage_event("EZ3", "2024-11-03T11:00:00Z", "HW1", 100, 200),
            usage_event("EZ4", "2024-11-03T11:05:00Z", "HW2", 7, 7),
            usage_event("EZ5", "2024-11-04T00:05:00Z", "HW1", 5, 5),
        ];
        let merged = merge_deltas(events.iter().filter_map(|e| RollupDelta::of(e, false))).unwrap();
        assert_eq!(
            merged.len(),
            3,
            "HW1 on the 3rd, HW2 on the 3rd, HW1 on the 4th"
        );
        let first = &merged[0];
        assert_eq!(first.hours[&10].usage.total, 33);
        assert_eq!(first.hours[&10].events, 2);
        assert_eq!(first.hours[&11].usage.upload, 100);
        let update = merged[0].clone().into_update().unwrap();
        assert!(
            update
                .expression
                .starts_with("ADD v :one, u10 :u10, d10 :d10, t10 :t10, n10 :n10, u11")
        );
        assert!(
            update
                .expression
                .contains(", du :du, dd :dd, dt :dt, dn :dn SET ")
        );
        assert!(update.expression.ends_with(" SET ic = :ic, nn = :nn"));
        assert_eq!(number_attr(&update.values, ":n10"), Some(2));
        // The day's totals: both hours.
        assert_eq!(number_attr(&update.values, ":dt"), Some(333));
        assert_eq!(number_attr(&update.values, ":dn"), Some(3));
    }

    #[test]
    fn booking_sort_keys_round_trip_any_value() {
        let booking = Booking {
            sim_sid: "HS%1".into(),
            account_sid: Some("AC1".into()),
            fleet_sid: Some("HF#1".into()),
            network_sid: None,
            iso_country: Some("DE".into()),
        };
        let sk = booking_sk(&booking);
        assert_eq!(sk, "HS%251#AC1#HF%231##DE");
        assert_eq!(booking_of_sk(&sk), Some(booking));
        assert!(sk.starts_with(&sim_sk_prefix("HS%1")));
    }

    #[test]
    fn event_records_round_trip_and_stay_under_a_kilobyte() {
        let event = usage_event(
            "EZ00000000000000000000000000000001",
            "2024-11-03T10:10:00Z",
            "HW1",
            10,
            20,
        );
        let delivery = crate::delivery::Delivery::now(crate::delivery::Origin::Kinesis {
            shard_id: "shardId-000000000000".into(),
            sequence_number: "1".into(),
        });
        let item = event_item(&event, &delivery);
        assert!(
            !item.contains_key("gsi1pk"),
            "usage events have no index entry"
        );
        let stored = StoredEvent::from_item(&item).unwrap();
        assert_eq!(stored.data, event.data);
        assert_eq!(stored.data_hash, Some(event.data_hash));
        assert_eq!(stored.deliveries, ["kore#kinesis"]);
        assert_eq!(
            super::super::reports::normalized(&stored).unwrap().usage,
            event.usage
        );

        // The real Twilio record, as its event record would be stored.
        let real = crate::event::parse_events(include_bytes!(
            "../../../tests/fixtures/twilio-kinesis-data-session-updated.json"
        ))
        .unwrap()
        .remove(0)
        .unwrap();
        let size = item_size(&event_item(&real, &delivery));
        assert!(size < 1024, "{size} bytes");
    }

    #[test]
    fn a_full_day_rollup_stays_under_a_kilobyte() {
        // Every hour used, large counts, long names: what a busy SIM's day looks like.
        let booking = Booking {
            sim_sid: format!("HS{}", "a".repeat(32)),
            account_sid: Some(format!("AC{}", "b".repeat(32))),
            fleet_sid: Some(format!("HF{}", "c".repeat(32))),
            network_sid: Some(format!("HW{}", "d".repeat(32))),
            iso_country: Some("DE".into()),
        };
        let hours: BTreeMap<u32, HourUsage> = (0..24)
            .map(|h| {
                let usage = DataVolume {
                    upload: 9_876_543,
                    download: 98_765_432,
                    total: 108_641_975,
                };
                (h, HourUsage { usage, events: 12 })
            })
            .collect();
        let names = BookingNames {
            sim_iccid: Some("89883070000012345678".into()),
            sim_unique_name: Some("asset-tracker-warehouse-07".into()),
            network_name: Some("Telekom.de".into()),
        };
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        let size = item_size(&rollup_item(day, &booking, &hours, &names).unwrap());
        assert!(size < 1024, "{size} bytes");
    }

    /// DynamoDB's item size: attribute names plus values.
    fn item_size(item: &Item) -> usize {
        item.iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        AttributeValue::S(s) => s.len(),
                        AttributeValue::B(b) => b.as_ref().len(),
                        AttributeValue::N(n) => n.len() / 2 + 1,
                        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
                        _ => 0,
                    }
            })
            .sum()
    }
}
