//! The rules of closed periods: an invoice's usage frozen once, and the usage that arrives
//! late booked as adjustments of it.
//!
//! A close covers whole UTC days, for one account or for every account. Its snapshot is one
//! line per booking (account, SIM, fleet, network, country) and [`Billed`] (the customer,
//! plan and zone the usage went to when the close was taken) with the usage and names, in a
//! canonical text whose SHA-256 is kept beside it. Usage booked into the period after the
//! functions learned of the close is also recorded as an adjustment, and counted in the
//! rollups' late counters, so that snapshot + adjustments = live usage, always; [`verify`]
//! checks exactly that.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use sha2::{Digest, Sha256};

use crate::customers::{Customers, UNASSIGNED};
use crate::error::LedgerError;
use crate::event::DataVolume;
use crate::time::{TimeRange, hour_of, midnight, z_time};
use crate::usage::{
    Attribution, Booking, BookingNames, HourUsage, Overflow, QueryError, UsageCell, UsageQuery,
    UsageRecord, aggregate_billed,
};
use crate::zones::Zones;

/// Whether the snapshot is stored yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    /// Registered; the functions are learning of it; no snapshot yet.
    Settling,
    Closed,
}

/// A closed (or closing) period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// `None`: every account.
    pub account_sid: Option<String>,
    /// Whole UTC days.
    pub period: TimeRange,
    pub closed_at: String,
    pub state: CloseState,
    /// SHA-256 (hex) of the snapshot's canonical text, once stored.
    pub snapshot_sha256: Option<String>,
    pub snapshot_at: Option<String>,
    pub lines: u64,
    pub parts: u64,
}

impl Close {
    /// `<account or *>#<start>#<end>`.
    pub fn id(&self) -> String {
        close_id(self.account_sid.as_deref(), self.period)
    }

    /// Whether usage of `account` booked on `day` falls in this period.
    pub fn covers(&self, account_sid: Option<&str>, day: NaiveDate) -> bool {
        self.takes_account(account_sid) && self.period.contains(midnight(day))
    }

    /// Whether this close is for `account` (a close for every account is for each).
    pub fn takes_account(&self, account_sid: Option<&str>) -> bool {
        match &self.account_sid {
            None => true,
            Some(account) => account_sid == Some(account.as_str()),
        }
    }

    /// Whether this close and one of `account_sid` over `period` could claim the same usage.
    pub fn overlaps(&self, account_sid: Option<&str>, period: &TimeRange) -> bool {
        let accounts_meet = match (&self.account_sid, account_sid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        accounts_meet && self.period.overlaps(period)
    }

    /// Who the close is for, as a sentence says it.
    pub fn whom(&self) -> &str {
        self.account_sid.as_deref().unwrap_or("every account")
    }
}

pub fn close_id(account_sid: Option<&str>, period: TimeRange) -> String {
    format!(
        "{}#{}#{}",
        account_sid.unwrap_or("*"),
        z_time(period.start()),
        z_time(period.end())
    )
}

/// The least time between a period's end and its close, even with `--force`. It lets the
/// commits of recent usage skip the check of their day's marker: that one item would
/// otherwise be part of every transaction of the day, a hot key and a source of
/// transaction conflicts between unrelated SIMs.
pub const MIN_CLOSE_AGE: Duration = Duration::from_secs(3600);

/// The longest a commit is in flight after it decided whether to check its day (the SDK's
/// timeouts and retries are well under it).
pub const COMMIT_IN_FLIGHT: Duration = Duration::from_secs(600);

/// When a close of `period` may be registered at the earliest.
pub fn earliest_close(period: &TimeRange) -> DateTime<Utc> {
    period.end() + chrono::Duration::from_std(MIN_CLOSE_AGE).unwrap_or_default()
}

/// Whether usage booked on `day`, committed at `now`, could land in a period closed
/// meanwhile, so that its commit must check the day's marker. A close covering `day` ends at
/// midnight after it at the earliest and is registered `MIN_CLOSE_AGE` later still.
pub fn closable(day: NaiveDate, now: DateTime<Utc>) -> bool {
    let in_flight = chrono::Duration::from_std(COMMIT_IN_FLIGHT).unwrap_or_default();
    match day.succ_opt() {
        Some(next) => {
            now + in_flight
                >= midnight(next) + chrono::Duration::from_std(MIN_CLOSE_AGE).unwrap_or_default()
        }
        None => true,
    }
}

/// How long `close` waits, after registering a period, before it reads the snapshot: the
/// functions' cache of closes plus the longest a commit can take.
pub fn settle_time(closed_periods_ttl: Duration) -> Duration {
    closed_periods_ttl + Duration::from_secs(30)
}

/// Why a close cannot be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    #[error("the period from {start} to {end} was already closed at {closed_at}")]
    AlreadyClosed {
        start: String,
        end: String,
        closed_at: String,
    },
    #[error("the period ends at {end}: it can be closed from {earliest} on, even with --force")]
    TooRecent { end: String, earliest: String },
    #[error("the period overlaps the closed period from {start} to {end} ({account})")]
    Overlaps {
        start: String,
        end: String,
        account: String,
    },
    #[error("the closed period's snapshot no longer matches its SHA-256: run verify-close")]
    SnapshotAltered,
    #[error("the snapshot cannot be read: {0}")]
    SnapshotUnreadable(String),
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error("the rollup of {subject} on {day} counts more late usage than usage")]
    LateAboveTotal { subject: String, day: NaiveDate },
    #[error(
        "late usage of {subject} on {day} arrived while the snapshot was read: run the same close again"
    )]
    LateArriving { subject: String, day: NaiveDate },
    #[error(
        "the rollups of {day} were read without their hours, which a change of customer that day needs"
    )]
    HoursNotRead { day: NaiveDate },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(
        "the period was closed before closes recorded customers and zones: its snapshot answers by bookings only"
    )]
    NotBilled,
    #[error("the period was closed while no zones were applied: its snapshot has no zones")]
    NoZones,
}

/// Whom a snapshot line's usage was billed to when the close was taken: the customer at
/// the usage's hours ([`UNASSIGNED`] where no row assigned it), the plan of the row that
/// assigned it, and its zone (`None` when no zones were applied). A later change of the
/// mapping does not change a closed period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Billed {
    pub customer_id: String,
    pub plan_id: Option<String>,
    pub zone: Option<String>,
}

/// One line of a snapshot: a booking's usage over the period billed one way, with its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLine {
    pub booking: Booking,
    pub names: BookingNames,
    pub usage: HourUsage,
    /// `None` in a snapshot taken before closes recorded customers and zones.
    pub billed: Option<Billed>,
}

/// A snapshot's canonical text: one tab-separated line per booking and [`Billed`], sorted by
/// account, SIM, fleet, network, country, then customer, plan and zone; tabs, newlines and
/// backslashes inside a value escaped. A line without `billed` has the first 12 fields
/// only, as snapshots had before closes recorded customers, so their hashes still hold.
pub fn canonical_text(lines: &[SnapshotLine]) -> String {
    let mut sorted: Vec<&SnapshotLine> = lines.iter().collect();
    sorted.sort_by(|a, b| {
        ByAccount(&a.booking)
            .cmp(&ByAccount(&b.booking))
            .then_with(|| a.billed.cmp(&b.billed))
    });
    let mut text = String::new();
    for line in sorted {
        let b = &line.booking;
        let n = &line.names;
        let u = &line.usage;
        let mut fields = vec![
            escape(b.account_sid.as_deref()),
            escape(Some(&b.sim_sid)),
            escape(b.fleet_sid.as_deref()),
            escape(b.network_sid.as_deref()),
            escape(b.iso_country.as_deref()),
            u.usage.upload.to_string(),
            u.usage.download.to_string(),
            u.usage.total.to_string(),
            u.events.to_string(),
            escape(n.sim_iccid.as_deref()),
            escape(n.sim_unique_name.as_deref()),
            escape(n.network_name.as_deref()),
        ];
        if let Some(billed) = &line.billed {
            fields.push(escape(Some(&billed.customer_id)));
            fields.push(escape(billed.plan_id.as_deref()));
            fields.push(escape(billed.zone.as_deref()));
        }
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    text
}

/// A booking ordered by account first, then SIM, fleet, network and country: the order of
/// a snapshot's lines and of `verify`'s problems.
#[derive(PartialEq, Eq)]
struct ByAccount<'a>(&'a Booking);

impl ByAccount<'_> {
    fn key(&self) -> (Option<&str>, &str, Option<&str>, Option<&str>, Option<&str>) {
        let b = self.0;
        (
            b.account_sid.as_deref(),
            &b.sim_sid,
            b.fleet_sid.as_deref(),
            b.network_sid.as_deref(),
            b.iso_country.as_deref(),
        )
    }
}

impl Ord for ByAccount<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for ByAccount<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn escape(value: Option<&str>) -> String {
    value
        .unwrap_or_default()
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    Some(out)
}

/// The lines of a canonical text.
pub fn parse_canonical(text: &str) -> Result<Vec<SnapshotLine>, String> {
    text.lines()
        .enumerate()
        .map(|(n, line)| parse_line(n + 1, line))
        .collect()
}

fn parse_line(n: usize, line: &str) -> Result<SnapshotLine, String> {
    let mut fields: Vec<&str> = line.split('\t').collect();
    let billed = match fields.len() {
        15 => {
            let zone = fields.pop().and_then(unescape);
            let plan_id = fields.pop().and_then(unescape);
            let customer_id = fields
                .pop()
                .and_then(unescape)
                .ok_or_else(|| format!("line {n}: no customer"))?;
            Some(Billed {
                customer_id,
                plan_id,
                zone,
            })
        }
        _ => None,
    };
    let [
        account,
        sim,
        fleet,
        network,
        country,
        up,
        down,
        total,
        events,
        iccid,
        name,
        network_name,
    ] = <[&str; 12]>::try_from(fields).map_err(|_| format!("line {n}: not 12 or 15 fields"))?;
    let number = |field: &str| {
        field
            .parse::<u64>()
            .map_err(|_| format!("line {n}: `{field}` is not a count"))
    };
    Ok(SnapshotLine {
        booking: Booking {
            sim_sid: unescape(sim).ok_or_else(|| format!("line {n}: no SIM"))?,
            account_sid: unescape(account),
            fleet_sid: unescape(fleet),
            network_sid: unescape(network),
            iso_country: unescape(country),
        },
        names: BookingNames {
            sim_iccid: unescape(iccid),
            sim_unique_name: unescape(name),
            network_name: unescape(network_name),
        },
        usage: HourUsage {
            usage: DataVolume {
                upload: number(up)?,
                download: number(down)?,
                total: number(total)?,
            },
            events: number(events)?,
        },
        billed,
    })
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether a snapshot's text still hashes to what was recorded at the close: the one check
/// every reader of a snapshot makes.
pub fn snapshot_intact(close: &Close, text: &str) -> bool {
    close.snapshot_sha256.as_deref() == Some(sha256_hex(text).as_str())
}

/// A stored snapshot's lines, once it is [`snapshot_intact`].
pub fn verified_lines(close: &Close, text: &str) -> Result<Vec<SnapshotLine>, CloseError> {
    if !snapshot_intact(close, text) {
        return Err(CloseError::SnapshotAltered);
    }
    parse_canonical(text).map_err(CloseError::SnapshotUnreadable)
}

/// The snapshot lines of a close as usage cells: the whole period as one hour, its start.
pub fn snapshot_cells(close: &Close, lines: &[SnapshotLine]) -> Vec<UsageCell> {
    lines
        .iter()
        .map(|line| UsageCell {
            booking: line.booking.clone(),
            hour: close.period.start(),
            usage: line.usage,
            names: line.names.clone(),
        })
        .collect()
}

/// What `query` asks of a closed period, from its snapshot lines: by customer and zone as
/// the close billed them, never as the mapping says now.
pub fn closed_usage(
    query: &UsageQuery,
    close: &Close,
    lines: &[SnapshotLine],
) -> Result<Vec<UsageRecord>, CloseError> {
    fn billed(line: &SnapshotLine) -> Option<&Billed> {
        line.billed.as_ref()
    }
    if (query.wants_customers() || query.wants_zones()) && lines.iter().any(|l| billed(l).is_none())
    {
        return Err(CloseError::NotBilled);
    }
    if query.wants_zones()
        && lines
            .iter()
            .any(|l| billed(l).is_some_and(|b| b.zone.is_none()))
    {
        return Err(CloseError::NoZones);
    }
    let cells = snapshot_cells(close, lines)
        .into_iter()
        .zip(lines)
        .map(|(cell, line)| {
            let customer = billed(line).map_or(UNASSIGNED, |b| b.customer_id.as_str());
            let zone = billed(line).and_then(|b| b.zone.as_deref());
            (cell, customer, zone)
        });
    Ok(aggregate_billed(query, cells)?)
}

/// A late usage event recorded against a closed period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub close_id: String,
    pub event_sid: String,
    pub booking: Booking,
    /// The UTC hour the usage was booked in.
    pub booked_hour: DateTime<Utc>,
    pub usage: DataVolume,
    pub received_at: String,
    /// When its commit was built (it lands within [`COMMIT_IN_FLIGHT`] of that); `None` for
    /// adjustments written before this was kept.
    pub recorded_at: Option<String>,
}

/// One day's rollup of one booking, as a close reads it: the day's usage and the part of
/// it that arrived after the close, and its hours where the day is read hour by hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupTotals {
    pub day: NaiveDate,
    pub booking: Booking,
    pub names: BookingNames,
    pub day_total: HourUsage,
    pub late: HourUsage,
    /// By hour of the day; empty unless the hours were read.
    pub hours: BTreeMap<u32, HourUsage>,
}

/// What a close bills usage to: the customers mapping and the zones in force when it is
/// taken (either may be missing), and the adjustments already recorded against it, which
/// place the late usage of a day whose customer changes in its hours.
#[derive(Debug, Clone, Copy, Default)]
pub struct Billing<'a> {
    pub customers: Option<&'a Customers>,
    pub zones: Option<&'a Zones>,
    pub adjustments: &'a [Adjustment],
}

impl Billing<'_> {
    /// Whom usage of `booking` in the hour starting `hour` is billed to: the customer and
    /// zone as queries attribute them, and the plan of the customer's row.
    pub fn billed(&self, booking: &Booking, hour: DateTime<Utc>) -> Billed {
        let attribution = Attribution {
            customers: self.customers,
            zones: self.zones,
        };
        let assignment = attribution.assignment(booking, hour);
        Billed {
            customer_id: attribution.customer(booking, hour).to_owned(),
            plan_id: assignment.and_then(|a| a.plan_id.clone()),
            zone: attribution.zone(booking).map(str::to_owned),
        }
    }

    /// Whether `day`'s usage must be billed hour by hour (a customer row starts or ends in it).
    pub fn hourly(&self, day: NaiveDate) -> bool {
        self.customers
            .is_some_and(|c| c.changes_within(midnight(day)))
    }

    /// The late usage of `rollup` by hour, from the adjustments; it must add up to the
    /// rollup's late counters, else more arrived between the two reads.
    fn late_by_hour(&self, rollup: &RollupTotals) -> Result<BTreeMap<u32, HourUsage>, CloseError> {
        let mut hours: BTreeMap<u32, HourUsage> = BTreeMap::new();
        let mut sum = HourUsage::default();
        let overflow = || (rollup.booking.subject(), rollup.day.to_string());
        for adjustment in self.adjustments {
            if adjustment.booking != rollup.booking
                || adjustment.booked_hour.date_naive() != rollup.day
            {
                continue;
            }
            let late = HourUsage::window(adjustment.usage);
            let hour = hours.entry(adjustment.booked_hour.hour()).or_default();
            *hour = hour.plus(late, overflow)?;
            sum = sum.plus(late, overflow)?;
        }
        if sum != rollup.late {
            return Err(CloseError::LateArriving {
                subject: rollup.booking.subject(),
                day: rollup.day,
            });
        }
        Ok(hours)
    }

    /// The usage of one rollup committed before the close, each part with whom it is
    /// billed to: the whole day at once, or hour by hour on a day the customer changes.
    fn parts(&self, rollup: &RollupTotals) -> Result<Vec<(Billed, HourUsage)>, CloseError> {
        let late_above_total = || CloseError::LateAboveTotal {
            subject: rollup.booking.subject(),
            day: rollup.day,
        };
        if !self.hourly(rollup.day) {
            let before = rollup
                .day_total
                .checked_sub(rollup.late)
                .ok_or_else(late_above_total)?;
            let billed = self.billed(&rollup.booking, midnight(rollup.day));
            return Ok(vec![(billed, before)]);
        }
        if rollup.hours.is_empty() && rollup.day_total.events > 0 {
            return Err(CloseError::HoursNotRead { day: rollup.day });
        }
        let late = self.late_by_hour(rollup)?;
        let mut parts = Vec::new();
        for (hour, usage) in &rollup.hours {
            let late = late.get(hour).copied().unwrap_or_default();
            let before = usage.checked_sub(late).ok_or_else(late_above_total)?;
            let at =
                hour_of(rollup.day, *hour).ok_or(CloseError::HoursNotRead { day: rollup.day })?;
            parts.push((self.billed(&rollup.booking, at), before));
        }
        Ok(parts)
    }
}

/// The snapshot of `close` from the rollups as they are: usage minus late usage, per booking
/// and [`Billed`], summed over the period's days, with the names of the latest day.
pub fn snapshot_lines(
    close: &Close,
    rollups: &[RollupTotals],
    billing: &Billing,
) -> Result<Vec<SnapshotLine>, CloseError> {
    let mut lines: BTreeMap<(&Booking, Billed), (NaiveDate, SnapshotLine)> = BTreeMap::new();
    for rollup in rollups {
        if !close.covers(rollup.booking.account_sid.as_deref(), rollup.day) {
            continue;
        }
        for (billed, before) in billing.parts(rollup)? {
            let (latest, line) = lines
                .entry((&rollup.booking, billed.clone()))
                .or_insert_with(|| {
                    let line = SnapshotLine {
                        booking: rollup.booking.clone(),
                        names: BookingNames::default(),
                        usage: HourUsage::default(),
                        billed: Some(billed),
                    };
                    (rollup.day, line)
                });
            line.usage = add(line.usage, before, &rollup.booking, close)?;
            if *latest <= rollup.day {
                *latest = rollup.day;
                line.names = rollup.names.clone();
            }
        }
    }
    Ok(lines
        .into_values()
        .map(|(_, line)| line)
        .filter(|line| line.usage.events > 0)
        .collect())
}

/// Checks a close: the snapshot still hashes to what was stored, and, booking by booking,
/// snapshot + adjustments = the live rollups (and the rollups' late counters = the
/// adjustments). Every discrepancy, each as one sentence.
pub fn verify(
    close: &Close,
    snapshot_text: &str,
    rollups: &[RollupTotals],
    adjustments: &[Adjustment],
) -> Result<Vec<String>, CloseError> {
    let mut problems = Vec::new();
    if !snapshot_intact(close, snapshot_text) {
        problems.push(format!(
            "the snapshot hashes to {}, not the {} recorded when it was closed",
            sha256_hex(snapshot_text),
            close.snapshot_sha256.as_deref().unwrap_or("(none)")
        ));
    }
    let snapshot = match parse_canonical(snapshot_text) {
        Ok(lines) => lines,
        Err(reason) => {
            problems.push(format!("the snapshot cannot be read: {reason}"));
            return Ok(problems);
        }
    };
    // Per booking: (usage, late) live, and (snapshot, adjustments) recorded.
    let mut live: BTreeMap<ByAccount, (HourUsage, HourUsage)> = BTreeMap::new();
    for rollup in rollups {
        if !close.covers(rollup.booking.account_sid.as_deref(), rollup.day) {
            continue;
        }
        let entry = live.entry(ByAccount(&rollup.booking)).or_default();
        entry.0 = add(entry.0, rollup.day_total, &rollup.booking, close)?;
        entry.1 = add(entry.1, rollup.late, &rollup.booking, close)?;
    }
    let mut recorded: BTreeMap<ByAccount, (HourUsage, HourUsage)> = BTreeMap::new();
    for line in &snapshot {
        let entry = recorded.entry(ByAccount(&line.booking)).or_default();
        entry.0 = add(entry.0, line.usage, &line.booking, close)?;
    }
    for adjustment in adjustments {
        let entry = recorded.entry(ByAccount(&adjustment.booking)).or_default();
        let late = HourUsage::window(adjustment.usage);
        entry.1 = add(entry.1, late, &adjustment.booking, close)?;
    }
    let bookings: BTreeSet<&ByAccount> = live.keys().chain(recorded.keys()).collect();
    for key in bookings {
        let booking = key.0;
        let (live_usage, late) = live.get(key).copied().unwrap_or_default();
        let (snapshot_usage, adjusted) = recorded.get(key).copied().unwrap_or_default();
        let name = format!(
            "{} {}",
            booking.sim_sid,
            booking.account_sid.as_deref().unwrap_or("-")
        );
        if add(snapshot_usage, adjusted, booking, close)? != live_usage {
            problems.push(format!(
                "{name}: snapshot {} B + adjustments {} B is not the live {} B",
                snapshot_usage.usage.total, adjusted.usage.total, live_usage.usage.total
            ));
        } else if late != adjusted {
            problems.push(format!(
                "{name}: the rollups count {} B of late usage, the adjustments {} B",
                late.usage.total, adjusted.usage.total
            ));
        }
    }
    Ok(problems)
}

fn add(
    a: HourUsage,
    b: HourUsage,
    booking: &Booking,
    close: &Close,
) -> Result<HourUsage, CloseError> {
    Ok(a.plus(b, || (booking.subject(), close.period.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Today's usage, and yesterday's until 00:50, can be in no close when its commit lands
    /// (a close comes an hour after its period at the earliest, a commit is in flight ten
    /// minutes at most): only older usage checks its day's marker.
    #[test]
    fn only_usage_a_close_could_cover_by_the_time_it_lands_checks_its_day() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        assert!(!closable(day("2024-11-03"), at("2024-11-03T23:59:00Z")));
        assert!(!closable(day("2024-11-03"), at("2024-11-04T00:49:59Z")));
        assert!(closable(day("2024-11-03"), at("2024-11-04T00:50:00Z")));
        assert!(closable(day("2024-11-02"), at("2024-11-04T00:00:00Z")));
        let november = TimeRange::new(at("2024-11-01T00:00:00Z"), at("2024-12-01T00:00:00Z"));
        assert_eq!(
            earliest_close(&november.unwrap()),
            at("2024-12-01T01:00:00Z")
        );
    }

    fn line(account: &str, sim: &str, name: &str, total: u64) -> SnapshotLine {
        SnapshotLine {
            booking: Booking {
                sim_sid: sim.into(),
                account_sid: Some(account.into()),
                fleet_sid: None,
                network_sid: Some("HW1".into()),
                iso_country: Some("DE".into()),
            },
            names: BookingNames {
                sim_iccid: Some("8988".into()),
                sim_unique_name: Some(name.into()),
                network_name: None,
            },
            usage: HourUsage {
                usage: DataVolume {
                    upload: 1,
                    download: total - 1,
                    total,
                },
                events: 2,
            },
            billed: None,
        }
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn november(account: Option<&str>) -> Close {
        Close {
            account_sid: account.map(str::to_owned),
            period: TimeRange::new(at("2024-11-01T00:00:00Z"), at("2024-12-01T00:00:00Z")).unwrap(),
            closed_at: String::new(),
            state: CloseState::Closed,
            snapshot_sha256: None,
            snapshot_at: None,
            lines: 0,
            parts: 0,
        }
    }

    #[test]
    fn the_canonical_text_is_sorted_escaped_and_reads_back() {
        let lines = vec![
            line("AC2", "HS1", "plain", 10),
            line("AC1", "HS9", "tab\there\nand\\slash", 20),
        ];
        let text = canonical_text(&lines);
        assert!(
            text.starts_with(
                "AC1\tHS9\t\tHW1\tDE\t1\t19\t20\t2\t8988\ttab\\there\\nand\\\\slash\t\n"
            )
        );
        let back = parse_canonical(&text).unwrap();
        assert_eq!(back, vec![lines[1].clone(), lines[0].clone()]);
        // Order of the input does not change the hash; a changed count does.
        let reversed = canonical_text(&[lines[1].clone(), lines[0].clone()]);
        assert_eq!(sha256_hex(&text), sha256_hex(&reversed));
        assert_ne!(
            sha256_hex(&text),
            sha256_hex(&text.replace("\t20\t", "\t21\t"))
        );
    }

    #[test]
    fn a_snapshot_is_read_only_while_it_hashes_to_what_was_recorded() {
        let text = canonical_text(&[line("AC1", "HS1", "a", 10)]);
        let mut close = november(None);
        close.snapshot_sha256 = Some(sha256_hex(&text));
        assert_eq!(verified_lines(&close, &text).unwrap().len(), 1);
        let altered = text.replace("\t10\t", "\t11\t");
        assert_eq!(
            verified_lines(&close, &altered),
            Err(CloseError::SnapshotAltered)
        );
    }

    #[test]
    fn closes_cover_their_account_and_days_and_overlap_as_claims_do() {
        let november = november(Some("AC1"));
        let range = |s: &str, e: &str| TimeRange::new(at(s), at(e)).unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2024, 11, d).unwrap();
        assert!(november.covers(Some("AC1"), day(30)));
        assert!(!november.covers(Some("AC2"), day(30)));
        assert!(!november.covers(Some("AC1"), NaiveDate::from_ymd_opt(2024, 12, 1).unwrap()));
        let end_of_month = range("2024-11-30T00:00:00Z", "2024-12-02T00:00:00Z");
        assert!(november.overlaps(Some("AC1"), &end_of_month));
        assert!(november.overlaps(None, &end_of_month));
        let whole = range("2024-11-01T00:00:00Z", "2024-12-01T00:00:00Z");
        assert!(!november.overlaps(Some("AC2"), &whole));
        let december = range("2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z");
        assert!(!november.overlaps(Some("AC1"), &december));
        assert_eq!(
            november.id(),
            "AC1#2024-11-01T00:00:00Z#2024-12-01T00:00:00Z"
        );
    }

    #[test]
    fn snapshot_plus_adjustments_must_equal_the_live_rollups() {
        let close = {
            let mut close = november(None);
            let text = canonical_text(&[line("AC1", "HS1", "a", 10)]);
            close.snapshot_sha256 = Some(sha256_hex(&text));
            close
        };
        let snapshot = canonical_text(&[line("AC1", "HS1", "a", 10)]);
        let booking = line("AC1", "HS1", "a", 10).booking;
        let late = HourUsage::window(DataVolume {
            upload: 0,
            download: 5,
            total: 5,
        });
        let live = HourUsage {
            usage: DataVolume {
                upload: 1,
                download: 14,
                total: 15,
            },
            events: 3,
        };
        let rollup = RollupTotals {
            day: NaiveDate::from_ymd_opt(2024, 11, 3).unwrap(),
            booking: booking.clone(),
            names: BookingNames::default(),
            day_total: live,
            late,
            hours: BTreeMap::new(),
        };
        let adjustment = Adjustment {
            close_id: close.id(),
            event_sid: "EZ1".into(),
            booking,
            booked_hour: at("2024-11-03T10:00:00Z"),
            usage: late.usage,
            received_at: String::new(),
            recorded_at: None,
        };
        let holds = verify(
            &close,
            &snapshot,
            std::slice::from_ref(&rollup),
            &[adjustment],
        )
        .unwrap();
        assert!(holds.is_empty(), "{holds:?}");
        let problems = verify(&close, &snapshot, &[rollup], &[]).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("is not the live 15 B"), "{problems:?}");
    }

    #[test]
    fn problems_are_listed_by_account_then_sim_as_the_snapshot_is() {
        let close = november(None);
        // Two bookings whose SIM order and account order disagree, both missing live usage.
        let snapshot = canonical_text(&[line("AC2", "HS1", "a", 10), line("AC1", "HS9", "b", 20)]);
        let problems = verify(&close, &snapshot, &[], &[]).unwrap();
        let named: Vec<&str> = problems
            .iter()
            .filter_map(|p| p.split(':').next())
            .filter(|name| name.starts_with("HS"))
            .collect();
        assert_eq!(named, ["HS9 AC1", "HS1 AC2"], "{problems:?}");
    }

    /// SIM 1 is `early`'s until noon on the 3rd, then `late`'s. Its rollup of the 3rd has
    /// 100 B at 10:00 and 50 B at 14:00, 30 B of which came after the close.
    #[test]
    fn a_day_the_customer_changes_is_billed_hour_by_hour_and_its_late_usage_in_its_hour() {
        let sim = "HS00000000000000000000000000000001";
        let customers = Customers::parse_csv(&format!(
            "customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to\n\
             early,{sim},,,p1,2024-11-01T00:00:00Z,2024-11-03T12:00:00Z\n\
             late,{sim},,,,2024-11-03T12:00:00Z,\n"
        ))
        .unwrap();
        let booking = Booking {
            sim_sid: sim.into(),
            account_sid: Some("AC1".into()),
            fleet_sid: None,
            network_sid: None,
            iso_country: None,
        };
        let volume = |total| DataVolume {
            upload: 0,
            download: total,
            total,
        };
        let usage = |total, events| HourUsage {
            usage: volume(total),
            events,
        };
        let rollup = RollupTotals {
            day: NaiveDate::from_ymd_opt(2024, 11, 3).unwrap(),
            booking: booking.clone(),
            names: BookingNames::default(),
            day_total: usage(150, 3),
            late: usage(30, 1),
            hours: [(10, usage(100, 1)), (14, usage(50, 2))].into(),
        };
        let close = november(None);
        let adjustment = Adjustment {
            close_id: close.id(),
            event_sid: "EZ1".into(),
            booking,
            booked_hour: at("2024-11-03T14:00:00Z"),
            usage: volume(30),
            received_at: String::new(),
            recorded_at: None,
        };
        let billing = Billing {
            customers: Some(&customers),
            zones: None,
            adjustments: std::slice::from_ref(&adjustment),
        };
        let lines = snapshot_lines(&close, std::slice::from_ref(&rollup), &billing).unwrap();
        let billed: Vec<(&str, Option<&str>, u64, u64)> = lines
            .iter()
            .map(|l| {
                let b = l.billed.as_ref().unwrap();
                (
                    b.customer_id.as_str(),
                    b.plan_id.as_deref(),
                    l.usage.usage.total,
                    l.usage.events,
                )
            })
            .collect();
        assert_eq!(
            billed,
            [("early", Some("p1"), 100, 1), ("late", None, 20, 1)]
        );
        // The lines read back from their canonical text, customer and plan included.
        assert_eq!(parse_canonical(&canonical_text(&lines)).unwrap(), lines);

        // A late event counted in the rollup but not yet among the adjustments read: the
        // close cannot place it, and says to run again.
        let unplaced = Billing {
            adjustments: &[],
            ..billing
        };
        assert!(matches!(
            snapshot_lines(&close, &[rollup], &unplaced),
            Err(CloseError::LateArriving { .. })
        ));
    }
}
