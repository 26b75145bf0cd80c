//! The usage rollup: one item per SIM, UTC day and booking, with the day's hours as
//! attributes (`u07`, `d07`, `t07`, `n07` for 07:00-08:00), the day's totals beside them so
//! that whole-day queries read four numbers rather than ninety-six, the late counters of
//! usage booked into a closed period, the latest names, and a version every write bumps.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use kore_ingest_core::closes::RollupTotals;
use kore_ingest_core::event::DataVolume;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{day_text, hour_of, timestamp};
use kore_ingest_core::usage::{
    Booking, BookingNames, DayBooking, HourUsage, Overflow, UsageCell, checked_sum,
};

use super::attrs::{Item, NotACount, count_attr, key, n, number_attr, pk_of, s, string_attr};
use crate::ledger::keys;

const SET_ICCID: &str = "ic";
const SET_UNIQUE_NAME: &str = "un";
const SET_NETWORK_NAME: &str = "nn";
/// Bumped by every write: `kore-usage rebuild` rewrites a rollup only if no commit touched
/// it since it was read.
pub const VERSION: &str = "v";
/// The day's totals.
const DAY_ATTRS: [&str; 4] = ["du", "dd", "dt", "dn"];
/// The day's late usage: what was booked into a closed period after it was closed; the rest
/// of the day is what the close's snapshot holds.
const LATE_ATTRS: [&str; 4] = ["xu", "xd", "xt", "xn"];

/// What a read takes of a rollup, so that a month over many SIMs reads as little as it
/// needs: the booking alone, the day's totals (with the names a grouping shows), or what a
/// close needs (its late counters and version too).
pub const BOOKING_ONLY: &str = "pk, sk";
pub const DAY_TOTALS: &str = "pk, sk, du, dd, dt, dn";
pub const DAY_TOTALS_AND_SIM_NAMES: &str = "pk, sk, du, dd, dt, dn, ic, un";
pub const DAY_TOTALS_AND_NETWORK_NAME: &str = "pk, sk, du, dd, dt, dn, nn";
pub const DAY_TOTALS_AND_NAMES: &str = "pk, sk, du, dd, dt, dn, ic, un, nn";
pub const CLOSE_READ: &str = "pk, sk, v, du, dd, dt, dn, xu, xd, xt, xn, ic, un, nn";

/// The four counters of an hour.
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

/// The counters `names` of a rollup read back (`None` when it has none of them): a sum past
/// 2^64, which DynamoDB stores exactly, is an overflow naming the SIM and `period`, never a
/// wrong count.
fn read_counts(
    item: &Item,
    names: [&str; 4],
    booking: &Booking,
    period: impl Fn() -> String,
) -> Result<Option<HourUsage>, LedgerError> {
    let mut counts = [None; 4];
    for (count, name) in counts.iter_mut().zip(names) {
        *count = count_attr(item, name).map_err(|problem| match problem {
            NotACount::TooLarge => LedgerError::from(Overflow::new(booking.subject(), period())),
            NotACount::Malformed => LedgerError::CorruptItem {
                pk: pk_of(item).to_owned(),
                reason: format!("`{name}` is not a count"),
            },
        })?;
    }
    let [up, down, total, events] = counts;
    Ok(events.map(|events| HourUsage {
        usage: DataVolume {
            upload: up.unwrap_or(0),
            download: down.unwrap_or(0),
            total: total.unwrap_or(0),
        },
        events,
    }))
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

/// The key of the rollup of one booking on one day.
pub fn rollup_key(day: NaiveDate, booking: &Booking) -> Item {
    let (pk, sk) = keys::rollup_key(day, booking);
    key(pk, sk)
}

/// One `UpdateItem` (or transaction `Update`) to run.
pub struct UpdateSpec {
    pub key: Item,
    pub expression: String,
    pub values: Item,
}

/// What a commit adds to one rollup: `ADD` of the hours, the day's totals, the late
/// counters and the version; `SET` of the names.
pub fn update_of(delta: &DayBooking) -> Result<UpdateSpec, LedgerError> {
    let mut values = Item::from([(":one".to_owned(), n(1))]);
    let mut adds = vec![format!("{VERSION} :one")];
    let day = delta.day_total()?;
    let hour_counts = delta
        .hours
        .iter()
        .map(|(hour, usage)| (hour_attrs(*hour), counts(usage)));
    let day_counts = std::iter::once((DAY_ATTRS.map(str::to_owned), counts(&day)));
    let late_counts =
        (delta.late.events > 0).then(|| (LATE_ATTRS.map(str::to_owned), counts(&delta.late)));
    for (names, counts) in hour_counts.chain(day_counts).chain(late_counts) {
        for (name, count) in names.into_iter().zip(counts) {
            adds.push(format!("{name} :{name}"));
            values.insert(format!(":{name}"), n(count));
        }
    }
    let mut sets = Vec::new();
    set_names(&delta.names, &mut sets, &mut values);
    let mut expression = format!("ADD {}", adds.join(", "));
    if !sets.is_empty() {
        expression.push_str(" SET ");
        expression.push_str(&sets.join(", "));
    }
    Ok(UpdateSpec {
        key: rollup_key(delta.day, &delta.booking),
        expression,
        values,
    })
}

/// A rollup item read back: its day, booking, version, stored hours and day totals (a
/// whole-day read projects the day totals only).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRollup {
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
        let pk = pk_of(item);
        let corrupt = |reason: &str| LedgerError::CorruptItem {
            pk: pk.to_owned(),
            reason: reason.to_owned(),
        };
        let day = keys::day_of_usage_pk(pk).ok_or_else(|| corrupt("not a usage rollup"))?;
        let sk = string_attr(item, "sk").unwrap_or_default();
        let booking = keys::booking_of_sk(sk).ok_or_else(|| corrupt("bad booking sort key"))?;
        let mut hours = BTreeMap::new();
        for hour in 0..24 {
            let names = hour_attrs(hour);
            let names = [&names[0], &names[1], &names[2], &names[3]].map(String::as_str);
            let period = || hour_of(day, hour).map_or_else(|| day_text(day), timestamp);
            if let Some(usage) = read_counts(item, names, &booking, period)? {
                hours.insert(hour, usage);
            }
        }
        let day_total = read_counts(item, DAY_ATTRS, &booking, || day_text(day))?;
        let late = read_counts(item, LATE_ATTRS, &booking, || {
            format!("{} (usage booked after its close)", day_text(day))
        })?;
        let text = |name: &str| string_attr(item, name).map(str::to_owned);
        Ok(StoredRollup {
            key: key(pk, sk),
            day,
            booking,
            names: BookingNames {
                sim_iccid: text(SET_ICCID),
                sim_unique_name: text(SET_UNIQUE_NAME),
                network_name: text(SET_NETWORK_NAME),
            },
            hours,
            day_total,
            late,
            version: number_attr(item, VERSION),
        })
    }

    /// The stored hours, one cell each.
    pub fn cells(&self) -> impl Iterator<Item = UsageCell> + '_ {
        self.hours.iter().filter_map(|(hour, usage)| {
            Some(UsageCell {
                booking: self.booking.clone(),
                hour: hour_of(self.day, *hour)?,
                usage: *usage,
                names: self.names.clone(),
            })
        })
    }

    /// The whole day as one cell at midnight: enough for day and range buckets.
    pub fn day_cell(&self) -> Option<UsageCell> {
        Some(UsageCell {
            booking: self.booking.clone(),
            hour: hour_of(self.day, 0)?,
            usage: self.day_total?,
            names: self.names.clone(),
        })
    }

    /// The day's usage and late usage, as a close reads them.
    pub fn totals(&self) -> RollupTotals {
        RollupTotals {
            day: self.day,
            booking: self.booking.clone(),
            names: self.names.clone(),
            day_total: self.day_total.unwrap_or_default(),
            late: self.late.unwrap_or_default(),
            hours: self.hours.clone(),
        }
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
    let total = checked_sum(hours.values())
        .ok_or_else(|| Overflow::new(booking.subject(), day_text(day)))?;
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
pub fn rollup_rewrite(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use kore_ingest_core::event::{ConnectionEvent, parse_event};
    use kore_ingest_core::usage::fold;

    fn usage_event(sid: &str, end: &str, network: &str, up: u64, down: u64) -> ConnectionEvent {
        parse_event(
            &serde_json::json!({
                "type": "com.kore.iot.supersim.connection.data-session.updated",
                "source": "kore-events",
                "id": sid,
                "time": end,
                "data": {
                    "event_sid": sid, "sim_sid": "HS1", "account_sid": "AC1", "fleet_sid": "HF#1",
                    "sim_iccid": "8988",
                    "network": {"sid": network, "iso_country": "DE", "friendly_name": network},
                    "data_session_sid": "PI1", "data_session_update_end_time": end,
                    "data_upload": up, "data_download": down, "data_total": up + down,
                },
            })
            .to_string(),
        )
        .expect("a valid usage event")
    }

    #[test]
    fn a_days_update_adds_hours_totals_and_version_and_sets_the_names() {
        let events = [
            usage_event("EZ1", "2024-11-03T10:10:00Z", "HW1", 10, 20),
            usage_event("EZ2", "2024-11-03T10:50:00Z", "HW1", 1, 2),
            usage_event("EZ3", "2024-11-03T11:00:00Z", "HW1", 100, 200),
        ];
        let folded = fold(events.iter().filter_map(|e| DayBooking::of(e, false))).unwrap();
        let update = update_of(folded.values().next().unwrap()).unwrap();
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
        let item = rollup_item(day, &booking, &hours, &names).unwrap();
        let size = item_size(&item);
        assert!(size < 1024, "{size} bytes");
        let back = StoredRollup::from_item(&item).unwrap();
        assert_eq!((back.booking, back.hours), (booking, hours));
    }

    /// DynamoDB's item size: attribute names plus values.
    pub(crate) fn item_size(item: &Item) -> usize {
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
