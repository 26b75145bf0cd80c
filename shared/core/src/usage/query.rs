//! Usage the way billing asks for it, the way the provider's UsageRecords API answers it: per
//! account and UTC hour, day or range, grouped by SIM, fleet, network or country (or by the
//! customer and zone an [`Attribution`] gives it), filtered by any of them. Pure: the ledger hands in the stored hour cells, [`aggregate`] filters,
//! buckets and sums them (every sum checked).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use super::booking::{Booking, BookingNames};
use super::counts::{HourUsage, Overflow};
use crate::customers::{Assignment, Customers, Holder, UNASSIGNED};
use crate::event::DataVolume;
use crate::time::{RangeError, TimeRange, is_whole_day, is_whole_hour, midnight, z_time};
use crate::zones::Zones;

/// A stored hour of one booking, as the ledger reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCell {
    pub booking: Booking,
    /// The start of the UTC hour.
    pub hour: DateTime<Utc>,
    pub usage: HourUsage,
    pub names: BookingNames,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    Hour,
    Day,
    /// One bucket from the start to the end of the query.
    #[default]
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Sim,
    Fleet,
    Network,
    IsoCountry,
    /// The customer the usage belongs to at its hour ([`Attribution`]).
    Customer,
    /// The roaming zone of its network or country ([`Attribution`]).
    Zone,
}

/// Filters combine (AND); `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilters {
    pub account_sid: Option<String>,
    pub sim_sid: Option<String>,
    pub fleet_sid: Option<String>,
    pub network_sid: Option<String>,
    pub iso_country: Option<String>,
    /// The customer at the usage's hour (`-`: usage no row assigns).
    pub customer_id: Option<String>,
    pub zone: Option<String>,
}

/// Who usage belongs to and which zone it is in: the customers mapping and the zones as
/// applied, for the queries that group or filter by them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attribution<'a> {
    pub customers: Option<&'a Customers>,
    pub zones: Option<&'a Zones>,
}

impl Attribution<'_> {
    /// The customers row usage booked to `booking` in the hour starting `hour` belongs to;
    /// `None` without a mapping or a row.
    pub fn assignment(&self, booking: &Booking, hour: DateTime<Utc>) -> Option<&Assignment> {
        let holder = Holder {
            sim_sid: &booking.sim_sid,
            fleet_sid: booking.fleet_sid.as_deref(),
            account_sid: booking.account_sid.as_deref(),
        };
        self.customers?.assignment_at(&holder, hour)
    }

    /// The customer of usage booked to `booking` in the hour starting `hour`; without a
    /// mapping or a row, nobody's ([`UNASSIGNED`]).
    pub fn customer(&self, booking: &Booking, hour: DateTime<Utc>) -> &str {
        self.assignment(booking, hour)
            .map_or(UNASSIGNED, |a| a.customer_id.as_str())
    }

    /// The zone of usage booked to `booking`; `None` without zones.
    pub fn zone(&self, booking: &Booking) -> Option<&str> {
        self.zones.map(|z| {
            z.zone_of(
                booking.network_sid.as_deref(),
                booking.iso_country.as_deref(),
            )
        })
    }
}

impl UsageFilters {
    /// Whether usage booked to `booking` passes the filters on what the booking names (the
    /// customer and zone filters are checked with the [`Attribution`]).
    pub fn matches(&self, booking: &Booking) -> bool {
        wanted(&self.account_sid, booking.account_sid.as_deref())
            && wanted(&self.sim_sid, Some(&booking.sim_sid))
            && wanted(&self.fleet_sid, booking.fleet_sid.as_deref())
            && wanted(&self.network_sid, booking.network_sid.as_deref())
            && wanted(&self.iso_country, booking.iso_country.as_deref())
    }

    /// Whether usage of `customer` in `zone` passes the customer and zone filters.
    fn attributed(&self, customer: &str, zone: Option<&str>) -> bool {
        wanted(&self.customer_id, Some(customer)) && wanted(&self.zone, zone)
    }
}

/// A filter (`None`: anything) against a value (`None`: unknown, which only `None` takes).
fn wanted(filter: &Option<String>, value: Option<&str>) -> bool {
    filter.as_deref().is_none_or(|wanted| value == Some(wanted))
}

/// Why a query cannot run; each reads as one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error(
        "--{which} must be on a whole hour (minutes and seconds zero), e.g. 2024-11-01T00:00:00Z"
    )]
    NotWholeHour { which: &'static str },
    #[error("with --granularity day, --{which} must be at midnight UTC, e.g. 2024-11-01T00:00:00Z")]
    NotWholeDay { which: &'static str },
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error("no zones are applied: run `kore-usage zones apply FILE.json` first")]
    NoZones,
}

/// A validated query: a range on whole hours (whole days for `Day`), a granularity, a grouping
/// dimension and filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    range: TimeRange,
    pub granularity: Granularity,
    pub group: Option<GroupBy>,
    pub filters: UsageFilters,
    /// Days read hour by hour even where a day total would answer: the days a customer row
    /// starts or ends within, so each hour's usage goes to the customer of that hour.
    pub hourly_days: BTreeSet<NaiveDate>,
}

impl UsageQuery {
    pub fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        granularity: Granularity,
        group: Option<GroupBy>,
        filters: UsageFilters,
    ) -> Result<Self, QueryError> {
        for (which, at) in [("start", start), ("end", end)] {
            if !is_whole_hour(at) {
                return Err(QueryError::NotWholeHour { which });
            }
            if granularity == Granularity::Day && !is_whole_day(at) {
                return Err(QueryError::NotWholeDay { which });
            }
        }
        let range = TimeRange::new(start, end)?;
        Ok(UsageQuery {
            range,
            granularity,
            group,
            filters,
            hourly_days: BTreeSet::new(),
        })
    }

    pub fn range(&self) -> TimeRange {
        self.range
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.range.start()
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.range.end()
    }

    /// The UTC days the range touches, in order.
    pub fn days(&self) -> Vec<NaiveDate> {
        self.range.days()
    }

    /// Whether it groups or filters by customer.
    pub fn wants_customers(&self) -> bool {
        self.group == Some(GroupBy::Customer) || self.filters.customer_id.is_some()
    }

    /// Whether it groups or filters by zone.
    pub fn wants_zones(&self) -> bool {
        self.group == Some(GroupBy::Zone) || self.filters.zone.is_some()
    }

    /// Whether a whole day's totals answer for `day` (buckets of a day or more, and the day
    /// wholly inside the range); otherwise its hours are read one by one.
    pub fn reads_whole_day(&self, day: NaiveDate) -> bool {
        self.granularity != Granularity::Hour
            && self.range.covers_day(day)
            && !self.hourly_days.contains(&day)
    }

    /// The bucket an hour falls in.
    fn bucket(&self, hour: DateTime<Utc>) -> Period {
        match self.granularity {
            Granularity::Hour => Period::new(hour, hour + Duration::hours(1)),
            Granularity::Day => {
                let day = midnight(hour.date_naive());
                Period::new(day, day + Duration::days(1))
            }
            Granularity::All => Period::new(self.start(), self.end()),
        }
    }
}

/// A time bucket, `[start_time, end_time)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
}

impl Period {
    fn new(start_time: DateTime<Utc>, end_time: DateTime<Utc>) -> Self {
        Period {
            start_time,
            end_time,
        }
    }
}

impl From<TimeRange> for Period {
    fn from(range: TimeRange) -> Self {
        Period::new(range.start(), range.end())
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", z_time(self.start_time), z_time(self.end_time))
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut period = serializer.serialize_struct("Period", 2)?;
        period.serialize_field("start_time", &z_time(self.start_time))?;
        period.serialize_field("end_time", &z_time(self.end_time))?;
        period.end()
    }
}

/// The grouping dimension's value and its names, as a record carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum GroupValue {
    Sim {
        sim_sid: String,
        sim_iccid: Option<String>,
        sim_unique_name: Option<String>,
    },
    Fleet {
        fleet_sid: Option<String>,
    },
    Network {
        network_sid: Option<String>,
        network_name: Option<String>,
    },
    IsoCountry {
        iso_country: Option<String>,
    },
    Customer {
        customer_id: String,
    },
    Zone {
        zone: String,
    },
}

impl GroupValue {
    /// The value records are keyed and sorted on (the SID or country; unknown first).
    pub fn key(&self) -> Option<&str> {
        match self {
            GroupValue::Sim { sim_sid, .. } => Some(sim_sid),
            GroupValue::Fleet { fleet_sid } => fleet_sid.as_deref(),
            GroupValue::Network { network_sid, .. } => network_sid.as_deref(),
            GroupValue::IsoCountry { iso_country } => iso_country.as_deref(),
            GroupValue::Customer { customer_id } => Some(customer_id),
            GroupValue::Zone { zone } => Some(zone),
        }
    }
}

/// One usage record: an account, a time bucket and a value of the grouping dimension.
/// Serializes to the `kore-usage usage --format json` contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    pub account_sid: Option<String>,
    pub period: Period,
    pub data_upload: u64,
    pub data_download: u64,
    pub data_total: u64,
    pub usage_events: u64,
    #[serde(flatten)]
    pub group: Option<GroupValue>,
}

impl UsageRecord {
    pub fn usage(&self) -> DataVolume {
        DataVolume {
            upload: self.data_upload,
            download: self.data_download,
            total: self.data_total,
        }
    }

    /// The record's bytes and events, to be summed with [`HourUsage::plus`].
    pub fn counts(&self) -> HourUsage {
        HourUsage {
            usage: self.usage(),
            events: self.usage_events,
        }
    }
}

/// Record key: bucket, account, group value.
type RecordKey = (Period, Option<String>, Option<String>);

/// A record being summed: the sum, and the group value with the names of its latest hour.
type RecordSum = (HourUsage, Option<(DateTime<Utc>, GroupValue)>);

/// Sums the cells the query covers into records: one per account, bucket and group value
/// that has usage, sorted by bucket start, then account, then group value.
pub fn aggregate(
    query: &UsageQuery,
    cells: impl IntoIterator<Item = UsageCell>,
) -> Result<Vec<UsageRecord>, QueryError> {
    aggregate_attributed(query, cells, Attribution::default())
}

/// [`aggregate`], with the customers and zones that group and filter by them.
pub fn aggregate_attributed(
    query: &UsageQuery,
    cells: impl IntoIterator<Item = UsageCell>,
    attribution: Attribution,
) -> Result<Vec<UsageRecord>, QueryError> {
    if query.wants_zones() && attribution.zones.is_none() {
        return Err(QueryError::NoZones);
    }
    let billed = cells.into_iter().map(|cell| {
        let customer = attribution.customer(&cell.booking, cell.hour);
        let zone = attribution.zone(&cell.booking);
        (cell, customer, zone)
    });
    aggregate_billed(query, billed)
}

/// [`aggregate`] over cells that each name their customer and zone already (a closed
/// period's snapshot lines, billed as they were when it was taken).
pub fn aggregate_billed<'a>(
    query: &UsageQuery,
    cells: impl IntoIterator<Item = (UsageCell, &'a str, Option<&'a str>)>,
) -> Result<Vec<UsageRecord>, QueryError> {
    let mut records: BTreeMap<RecordKey, RecordSum> = BTreeMap::new();
    for (cell, customer, zone) in cells {
        if !query.range.contains(cell.hour)
            || !query.filters.matches(&cell.booking)
            || !query.filters.attributed(customer, zone)
        {
            continue;
        }
        let group = query
            .group
            .map(|group| group_value(group, &cell, customer, zone));
        let key = (
            query.bucket(cell.hour),
            cell.booking.account_sid.clone(),
            group.as_ref().and_then(|g| g.key().map(str::to_owned)),
        );
        let sum = records.get(&key).map(|(sum, _)| *sum).unwrap_or_default();
        let sum = sum.plus(cell.usage, || {
            (subject(query.group, &key), key.0.to_string())
        })?;
        let entry = records.entry(key).or_default();
        entry.0 = sum;
        if let Some(group) = group
            && entry
                .1
                .as_ref()
                .is_none_or(|(latest, _)| *latest <= cell.hour)
        {
            entry.1 = Some((cell.hour, group));
        }
    }
    Ok(records
        .into_iter()
        .filter(|(_, (sum, _))| sum.events > 0)
        .map(|((period, account_sid, _), (sum, group))| UsageRecord {
            account_sid,
            period,
            data_upload: sum.usage.upload,
            data_download: sum.usage.download,
            data_total: sum.usage.total,
            usage_events: sum.events,
            group: group.map(|(_, g)| g),
        })
        .collect())
}

/// Whose sum a record is, for an overflow: the group value, else the account.
fn subject(group: Option<GroupBy>, (_, account, value): &RecordKey) -> String {
    let value = value.as_deref().unwrap_or("(unknown)");
    match group {
        Some(GroupBy::Sim) => format!("SIM {value}"),
        Some(GroupBy::Fleet) => format!("fleet {value}"),
        Some(GroupBy::Network) => format!("network {value}"),
        Some(GroupBy::IsoCountry) => format!("country {value}"),
        Some(GroupBy::Customer) => format!("customer {value}"),
        Some(GroupBy::Zone) => format!("zone {value}"),
        None => format!("account {}", account.as_deref().unwrap_or("(unknown)")),
    }
}

fn group_value(group: GroupBy, cell: &UsageCell, customer: &str, zone: Option<&str>) -> GroupValue {
    let (booking, names) = (&cell.booking, &cell.names);
    match group {
        GroupBy::Sim => GroupValue::Sim {
            sim_sid: booking.sim_sid.clone(),
            sim_iccid: names.sim_iccid.clone(),
            sim_unique_name: names.sim_unique_name.clone(),
        },
        GroupBy::Fleet => GroupValue::Fleet {
            fleet_sid: booking.fleet_sid.clone(),
        },
        GroupBy::Network => GroupValue::Network {
            network_sid: booking.network_sid.clone(),
            network_name: names.network_name.clone(),
        },
        GroupBy::IsoCountry => GroupValue::IsoCountry {
            iso_country: booking.iso_country.clone(),
        },
        GroupBy::Customer => GroupValue::Customer {
            customer_id: customer.to_owned(),
        },
        // `aggregate_attributed` refuses a zone query without zones.
        GroupBy::Zone => GroupValue::Zone {
            zone: zone.unwrap_or_default().to_owned(),
        },
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::All => "all",
        })
    }
}

/// The records of a query grouped by SIM, one sum per SIM (a SIM booked to two accounts has
/// two records, and one sum), sorted by SIM; `period` names the period an overflow is of.
pub fn per_sim(
    records: &[UsageRecord],
    period: &str,
) -> Result<Vec<(String, HourUsage)>, Overflow> {
    let mut sums: BTreeMap<&str, HourUsage> = BTreeMap::new();
    for record in records {
        let Some(GroupValue::Sim { sim_sid, .. }) = &record.group else {
            continue;
        };
        let sum = sums.entry(sim_sid).or_default();
        *sum = sum.plus(record.counts(), || {
            (format!("SIM {sim_sid}"), period.to_owned())
        })?;
    }
    Ok(sums
        .into_iter()
        .map(|(sim_sid, sum)| (sim_sid.to_owned(), sum))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn booking(account: &str, sim: &str, fleet: &str, network: Option<&str>) -> Booking {
        Booking {
            sim_sid: sim.into(),
            account_sid: Some(account.into()),
            fleet_sid: Some(fleet.into()),
            network_sid: network.map(str::to_owned),
            iso_country: network.map(|n| if n == "HW1" { "DE" } else { "FR" }.to_owned()),
        }
    }

    fn cell(booking: &Booking, hour: &str, up: u64, down: u64) -> UsageCell {
        UsageCell {
            booking: booking.clone(),
            hour: at(hour),
            usage: HourUsage::window(DataVolume {
                upload: up,
                download: down,
                total: up + down,
            }),
            names: BookingNames {
                sim_iccid: Some(format!("iccid-{hour}")),
                sim_unique_name: None,
                network_name: booking.network_sid.as_ref().map(|n| format!("{n}-name")),
            },
        }
    }

    fn query(
        start: &str,
        end: &str,
        granularity: Granularity,
        group: Option<GroupBy>,
    ) -> UsageQuery {
        UsageQuery::new(
            at(start),
            at(end),
            granularity,
            group,
            UsageFilters::default(),
        )
        .unwrap()
    }

    #[test]
    fn ranges_must_be_whole_hours_and_whole_days_for_day_buckets() {
        let q =
            |s: &str, e: &str, g| UsageQuery::new(at(s), at(e), g, None, UsageFilters::default());
        assert!(
            q(
                "2024-11-01T00:00:00Z",
                "2024-12-01T00:00:00Z",
                Granularity::Day
            )
            .is_ok()
        );
        assert_eq!(
            q(
                "2024-11-01T00:30:00Z",
                "2024-11-02T00:00:00Z",
                Granularity::Hour
            ),
            Err(QueryError::NotWholeHour { which: "start" })
        );
        assert_eq!(
            q(
                "2024-11-01T00:00:00Z",
                "2024-11-01T05:00:01Z",
                Granularity::All
            ),
            Err(QueryError::NotWholeHour { which: "end" })
        );
        assert_eq!(
            q(
                "2024-11-01T00:00:00Z",
                "2024-11-01T05:00:00Z",
                Granularity::Day
            ),
            Err(QueryError::NotWholeDay { which: "end" })
        );
        assert_eq!(
            q(
                "2024-11-01T05:00:00Z",
                "2024-11-01T05:00:00Z",
                Granularity::All
            ),
            Err(QueryError::Range(RangeError::Empty))
        );
    }

    #[test]
    fn records_per_account_bucket_and_group_value_sorted_with_latest_names() {
        let de = booking("AC1", "HS1", "HF1", Some("HW1"));
        let fr = booking("AC1", "HS1", "HF2", Some("HW2"));
        let other_account = booking("AC0", "HS2", "HF1", None);
        let cells = vec![
            cell(&de, "2024-11-30T23:00:00Z", 1, 2),
            cell(&fr, "2024-12-01T00:00:00Z", 10, 20),
            cell(&de, "2024-12-01T01:00:00Z", 100, 200),
            cell(&other_account, "2024-12-01T01:00:00Z", 5, 5),
            // Outside the range: never counted.
            cell(&de, "2024-12-02T00:00:00Z", 9, 9),
        ];
        let all = aggregate(
            &query(
                "2024-11-30T00:00:00Z",
                "2024-12-02T00:00:00Z",
                Granularity::All,
                Some(GroupBy::Sim),
            ),
            cells.clone(),
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].account_sid.as_deref(), Some("AC0"));
        assert_eq!((all[1].data_total, all[1].usage_events), (333, 3));
        assert_eq!(
            all[1].group,
            Some(GroupValue::Sim {
                sim_sid: "HS1".into(),
                sim_iccid: Some("iccid-2024-12-01T01:00:00Z".into()),
                sim_unique_name: None,
            })
        );

        let by_day_and_network = aggregate(
            &query(
                "2024-11-30T00:00:00Z",
                "2024-12-02T00:00:00Z",
                Granularity::Day,
                Some(GroupBy::Network),
            ),
            cells.clone(),
        )
        .unwrap();
        let keys: Vec<(String, Option<&str>, Option<&str>, u64)> = by_day_and_network
            .iter()
            .map(|r| {
                (
                    z_time(r.period.start_time),
                    r.account_sid.as_deref(),
                    r.group.as_ref().and_then(GroupValue::key),
                    r.data_total,
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                (
                    "2024-11-30T00:00:00Z".to_owned(),
                    Some("AC1"),
                    Some("HW1"),
                    3
                ),
                ("2024-12-01T00:00:00Z".to_owned(), Some("AC0"), None, 10),
                (
                    "2024-12-01T00:00:00Z".to_owned(),
                    Some("AC1"),
                    Some("HW1"),
                    300
                ),
                (
                    "2024-12-01T00:00:00Z".to_owned(),
                    Some("AC1"),
                    Some("HW2"),
                    30
                ),
            ]
        );

        let mut filtered = query(
            "2024-12-01T00:00:00Z",
            "2024-12-01T02:00:00Z",
            Granularity::Hour,
            Some(GroupBy::Fleet),
        );
        filtered.filters.fleet_sid = Some("HF1".into());
        filtered.filters.account_sid = Some("AC1".into());
        let records = aggregate(&filtered, cells).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(z_time(records[0].period.start_time), "2024-12-01T01:00:00Z");
        assert_eq!(z_time(records[0].period.end_time), "2024-12-01T02:00:00Z");
        assert_eq!(records[0].data_upload, 100);
    }

    #[test]
    fn json_has_the_contract_fields_with_null_for_an_unknown_network() {
        let unknown = booking("AC1", "HS1", "HF1", None);
        let records = aggregate(
            &query(
                "2024-12-01T00:00:00Z",
                "2024-12-01T01:00:00Z",
                Granularity::All,
                Some(GroupBy::Network),
            ),
            [cell(&unknown, "2024-12-01T00:00:00Z", 1, 2)],
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&records).unwrap(),
            serde_json::json!([{
                "account_sid": "AC1",
                "period": {"start_time": "2024-12-01T00:00:00Z", "end_time": "2024-12-01T01:00:00Z"},
                "data_upload": 1, "data_download": 2, "data_total": 3, "usage_events": 1,
                "network_sid": null, "network_name": null,
            }])
        );
    }

    #[test]
    fn sums_are_checked() {
        let b = booking("AC1", "HS1", "HF1", None);
        let mut huge = cell(&b, "2024-12-01T00:00:00Z", u64::MAX, 0);
        huge.usage.usage.total = 0;
        let records = aggregate(
            &query(
                "2024-12-01T00:00:00Z",
                "2024-12-01T01:00:00Z",
                Granularity::All,
                None,
            ),
            [huge.clone(), huge],
        );
        let Err(QueryError::Overflow(overflow)) = records else {
            panic!("{records:?}");
        };
        assert_eq!(overflow.subject, "account AC1");
        assert_eq!(
            overflow.period,
            "2024-12-01T00:00:00Z..2024-12-01T01:00:00Z"
        );
    }
}
