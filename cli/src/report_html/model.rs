//! The report's figures, from the stored cells: every figure is a `usage` query's answer
//! ([`aggregate_attributed`] over the same cells, with the report's filters), summed across accounts
//! where a view shows one line per value. Pure: no DynamoDB, no clock, no HTML.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use kore_ingest_core::alerts::{Alert, AlertKind};
use kore_ingest_core::customers::Customers;
use kore_ingest_core::time::{TimeRange, z_time};
use kore_ingest_core::usage::{
    Attribution, Granularity, GroupBy, GroupValue, HourUsage, Overflow, QueryError, SessionSummary,
    UsageCell, UsageFilters, UsageQuery, UsageRecord, aggregate_attributed, per_sim,
};
use kore_ingest_core::zones::Zones;
use serde::Serialize;

/// The dimension the page splits usage by; serialized as the JSON block names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Fleet,
    Network,
    IsoCountry,
    Customer,
    Zone,
}

impl Dimension {
    pub fn group_by(self) -> GroupBy {
        match self {
            Dimension::Fleet => GroupBy::Fleet,
            Dimension::Network => GroupBy::Network,
            Dimension::IsoCountry => GroupBy::IsoCountry,
            Dimension::Customer => GroupBy::Customer,
            Dimension::Zone => GroupBy::Zone,
        }
    }

    /// How the page names it.
    pub fn noun(self) -> &'static str {
        match self {
            Dimension::Fleet => "fleet",
            Dimension::Network => "network",
            Dimension::IsoCountry => "country",
            Dimension::Customer => "customer",
            Dimension::Zone => "zone",
        }
    }

    /// What the page calls usage without a value of it.
    pub fn unknown(self) -> &'static str {
        match self {
            Dimension::Fleet => "(no fleet)",
            Dimension::Network => "(no network)",
            Dimension::IsoCountry => "(unknown country)",
            // Usage no row assigns is customer `-`; every usage has a zone.
            Dimension::Customer | Dimension::Zone => "-",
        }
    }
}

/// The buckets of the usage-over-time view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Buckets {
    Hour,
    Day,
}

impl Buckets {
    pub fn granularity(self) -> Granularity {
        match self {
            Buckets::Hour => Granularity::Hour,
            Buckets::Day => Granularity::Day,
        }
    }

    fn step(self) -> Duration {
        match self {
            Buckets::Hour => Duration::hours(1),
            Buckets::Day => Duration::days(1),
        }
    }

    /// How the page names one.
    pub fn noun(self) -> &'static str {
        match self {
            Buckets::Hour => "hour",
            Buckets::Day => "day",
        }
    }
}

/// What the report shows and over which cells.
#[derive(Debug, Clone)]
pub struct Scope {
    pub range: TimeRange,
    /// The buckets of the usage-over-time view; `None` when the cells have none (a closed
    /// snapshot holds the period as one line per booking).
    pub buckets: Option<Buckets>,
    pub group: Dimension,
    pub filters: UsageFilters,
    pub top: usize,
    /// Upper case ISO codes; empty: no roaming view.
    pub home_countries: Vec<String>,
    /// The customers and zones in force, for the customer and zone groupings.
    pub customers: Option<Customers>,
    pub zones: Option<Zones>,
}

/// Where the figures come from, as the header states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// The live ledger: figures that can still change, not an invoice.
    Ledger,
    /// A closed period's snapshot, its hash checked when it was read.
    Closed {
        snapshot_sha256: String,
        closed_at: String,
    },
}

/// Bytes and events of one line of a view; the JSON names are the `usage` record's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sum {
    pub data_upload: u64,
    pub data_download: u64,
    pub data_total: u64,
    pub usage_events: u64,
}

impl From<HourUsage> for Sum {
    fn from(sum: HourUsage) -> Self {
        Sum {
            data_upload: sum.usage.upload,
            data_download: sum.usage.download,
            data_total: sum.usage.total,
            usage_events: sum.events,
        }
    }
}

/// One value of a dimension over the period: `value` is the SID or country (`None`:
/// usage without one), `name` what it is called where the ledger knows a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub value: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub sum: Sum,
}

/// One bucket of the usage-over-time view, split by the report's group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub start_time: String,
    pub end_time: String,
    #[serde(flatten)]
    pub sum: Sum,
    /// Per group value with usage in the bucket, keyed like [`Line::value`].
    pub groups: Vec<GroupBytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupBytes {
    pub value: Option<String>,
    pub data_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopSim {
    pub sim_sid: String,
    pub sim_iccid: Option<String>,
    pub sim_unique_name: Option<String>,
    /// The fleets its usage was booked to in the period (a SIM that moved has two).
    pub fleets: Vec<Option<String>>,
    #[serde(flatten)]
    pub sum: Sum,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Roaming {
    pub home_countries: Vec<String>,
    /// Usage in a country that is not a home country.
    pub roaming_data_total: u64,
    /// Usage whose country is not known.
    pub unknown_data_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapSession {
    pub sim_sid: String,
    pub session_sid: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub windows_received: u64,
    pub received_total: u64,
    pub cumulative_total: Option<u64>,
}

/// The alerts whose period starts on a day, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertDay {
    pub day: String,
    pub usage: u64,
    pub silence: u64,
    pub quality: u64,
}

/// Every figure of the report; serialized, it is the JSON block embedded in the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub title: String,
    pub start_time: String,
    pub end_time: String,
    pub generated_at: String,
    pub source: Source,
    pub filters: BTreeMap<&'static str, String>,
    pub group: Dimension,
    pub total: Sum,
    pub sims_with_usage: u64,
    /// Every value of the group, most data first.
    pub groups: Vec<Line>,
    /// `null` without buckets.
    pub granularity: Option<Buckets>,
    pub buckets: Vec<Bucket>,
    pub top_sims: Vec<TopSim>,
    pub countries: Vec<Line>,
    pub networks: Vec<Line>,
    pub roaming: Option<Roaming>,
    pub sessions_with_gaps: Vec<GapSession>,
    pub alerts_per_day: Vec<AlertDay>,
}

/// What the report states besides the cells: its title, when it was made, its source.
#[derive(Debug, Clone)]
pub struct Heading {
    pub title: String,
    pub generated_at: String,
    pub source: Source,
}

impl Scope {
    /// The `usage` query with the report's range and filters.
    fn query(
        &self,
        granularity: Granularity,
        group: Option<GroupBy>,
        filters: UsageFilters,
    ) -> Result<UsageQuery, QueryError> {
        UsageQuery::new(
            self.range.start(),
            self.range.end(),
            granularity,
            group,
            filters,
        )
    }

    fn records(
        &self,
        cells: &[UsageCell],
        granularity: Granularity,
        group: Option<GroupBy>,
    ) -> Result<Vec<UsageRecord>, QueryError> {
        let query = self.query(granularity, group, self.filters.clone())?;
        let attribution = Attribution {
            customers: self.customers.as_ref(),
            zones: self.zones.as_ref(),
        };
        aggregate_attributed(&query, cells.iter().cloned(), attribution)
    }
}

/// The figures: every view from `cells` through the `usage` queries; the alerts are handed
/// in as read. The sessions with gaps are the top SIMs' ([`gap_sessions`]), read once the top
/// SIMs are known.
pub fn figures(
    scope: &Scope,
    heading: Heading,
    cells: &[UsageCell],
    alerts: &[Alert],
) -> Result<Figures, QueryError> {
    let period = scope.range.to_string();
    let total = scope
        .records(cells, Granularity::All, None)?
        .iter()
        .try_fold(HourUsage::default(), |sum, record| {
            sum.plus(record.counts(), || {
                ("the report's total".into(), period.clone())
            })
        })?;
    let per_sim_records = scope.records(cells, Granularity::All, Some(GroupBy::Sim))?;
    let sims = per_sim(&per_sim_records, &period)?;
    let group = Some(scope.group.group_by());
    let groups = lines(scope.records(cells, Granularity::All, group)?, &period)?;
    let buckets = match scope.buckets {
        Some(buckets_of) => buckets(
            scope.range,
            buckets_of.step(),
            scope.records(cells, buckets_of.granularity(), group)?,
            &period,
        )?,
        None => Vec::new(),
    };
    let top_sims = top_sims(scope, cells, &per_sim_records, &sims)?;
    let countries = lines(
        scope.records(cells, Granularity::All, Some(GroupBy::IsoCountry))?,
        &period,
    )?;
    let networks = lines(
        scope.records(cells, Granularity::All, Some(GroupBy::Network))?,
        &period,
    )?;
    let roaming = roaming(&scope.home_countries, &countries);
    let mut filters = BTreeMap::new();
    let f = &scope.filters;
    for (name, value) in [
        ("account_sid", &f.account_sid),
        ("fleet_sid", &f.fleet_sid),
        ("iso_country", &f.iso_country),
    ] {
        if let Some(value) = value {
            filters.insert(name, value.clone());
        }
    }
    Ok(Figures {
        title: heading.title,
        start_time: z_time(scope.range.start()),
        end_time: z_time(scope.range.end()),
        generated_at: heading.generated_at,
        source: heading.source,
        filters,
        group: scope.group,
        total: total.into(),
        sims_with_usage: sims.iter().filter(|(_, sum)| sum.events > 0).count() as u64,
        groups,
        granularity: scope.buckets,
        buckets,
        top_sims,
        countries,
        networks,
        roaming,
        sessions_with_gaps: Vec::new(),
        alerts_per_day: alerts_per_day(alerts),
    })
}

/// Per group value (across accounts): the sum, and the value with the names its last record
/// carries (records come sorted by account; a network's name is the same in each).
type Summed = BTreeMap<Option<String>, (HourUsage, Option<GroupValue>)>;

fn sum_lines(records: &[UsageRecord], period: &str) -> Result<Summed, Overflow> {
    let mut sums: Summed = BTreeMap::new();
    for record in records {
        let key = record
            .group
            .as_ref()
            .and_then(|g| g.key().map(str::to_owned));
        let entry = sums.entry(key.clone()).or_default();
        entry.0 = entry.0.plus(record.counts(), || {
            (
                key.clone().unwrap_or_else(|| "(unknown)".into()),
                period.to_owned(),
            )
        })?;
        entry.1 = record.group.clone();
    }
    Ok(sums)
}

/// One line per value, most data first (then by value, so ties are stable).
fn lines(records: Vec<UsageRecord>, period: &str) -> Result<Vec<Line>, Overflow> {
    let mut lines: Vec<Line> = sum_lines(&records, period)?
        .into_iter()
        .map(|(value, (sum, group))| Line {
            value,
            name: group.and_then(|g| match g {
                GroupValue::Network { network_name, .. } => network_name,
                _ => None,
            }),
            sum: sum.into(),
        })
        .collect();
    lines.sort_by(|a, b| (b.sum.data_total, &a.value).cmp(&(a.sum.data_total, &b.value)));
    Ok(lines)
}

/// Every bucket of the range, in order (those without usage too, so the time axis is
/// even), each with its sum and its sum per group value.
fn buckets(
    range: TimeRange,
    step: Duration,
    records: Vec<UsageRecord>,
    period: &str,
) -> Result<Vec<Bucket>, Overflow> {
    let mut by_start: BTreeMap<DateTime<Utc>, Vec<UsageRecord>> = BTreeMap::new();
    for record in records {
        by_start
            .entry(record.period.start_time)
            .or_default()
            .push(record);
    }
    let mut buckets = Vec::new();
    let mut start = range.start();
    while start < range.end() {
        let end = (start + step).min(range.end());
        let lines = sum_lines(by_start.get(&start).map_or(&[][..], Vec::as_slice), period)?;
        let sum = lines.values().try_fold(HourUsage::default(), |sum, line| {
            sum.plus(line.0, || {
                (
                    "a bucket's total".into(),
                    format!("{}..{}", z_time(start), z_time(end)),
                )
            })
        })?;
        buckets.push(Bucket {
            start_time: z_time(start),
            end_time: z_time(end),
            sum: sum.into(),
            groups: lines
                .into_iter()
                .map(|(value, (sum, _))| GroupBytes {
                    value,
                    data_total: sum.usage.total,
                })
                .collect(),
        });
        start = end;
    }
    Ok(buckets)
}

/// The N SIMs with the most data, with their names and the fleets their usage was booked to
/// (`usage --sim S --group fleet`).
fn top_sims(
    scope: &Scope,
    cells: &[UsageCell],
    records: &[UsageRecord],
    sims: &[(String, HourUsage)],
) -> Result<Vec<TopSim>, QueryError> {
    let mut ranked: Vec<&(String, HourUsage)> = sims.iter().collect();
    ranked.sort_by(|a, b| (b.1.usage.total, &a.0).cmp(&(a.1.usage.total, &b.0)));
    ranked
        .into_iter()
        .take(scope.top)
        .map(|(sim_sid, sum)| {
            let names = records.iter().rev().find_map(|r| match &r.group {
                Some(GroupValue::Sim {
                    sim_sid: sid,
                    sim_iccid,
                    sim_unique_name,
                }) if sid == sim_sid => Some((sim_iccid.clone(), sim_unique_name.clone())),
                _ => None,
            });
            let filters = UsageFilters {
                sim_sid: Some(sim_sid.clone()),
                ..scope.filters.clone()
            };
            let query = scope.query(Granularity::All, Some(GroupBy::Fleet), filters)?;
            // The query filters by SIM too; only the SIM's cells are cloned for it.
            let of_sim = cells
                .iter()
                .filter(|c| c.booking.sim_sid == *sim_sid)
                .cloned();
            let fleets: BTreeSet<Option<String>> =
                kore_ingest_core::usage::aggregate(&query, of_sim)?
                    .iter()
                    .map(|r| r.group.as_ref().and_then(|g| g.key().map(str::to_owned)))
                    .collect();
            let (sim_iccid, sim_unique_name) = names.unwrap_or_default();
            Ok(TopSim {
                sim_sid: sim_sid.clone(),
                sim_iccid,
                sim_unique_name,
                fleets: fleets.into_iter().collect(),
                sum: (*sum).into(),
            })
        })
        .collect()
}

fn roaming(home: &[String], countries: &[Line]) -> Option<Roaming> {
    if home.is_empty() {
        return None;
    }
    let (mut roaming_data_total, mut unknown_data_total) = (0u64, 0u64);
    for line in countries {
        let bytes = line.sum.data_total;
        match &line.value {
            None => unknown_data_total = unknown_data_total.saturating_add(bytes),
            Some(country) if !home.contains(country) => {
                roaming_data_total = roaming_data_total.saturating_add(bytes);
            }
            Some(_) => {}
        }
    }
    Some(Roaming {
        home_countries: home.to_vec(),
        roaming_data_total,
        unknown_data_total,
    })
}

/// The sessions with a gap (of the top SIMs: what is handed in) that touch the period; one
/// without a time it can be placed by is shown too, rather than hidden.
pub fn gap_sessions(scope: &Scope, sessions: &[SessionSummary]) -> Vec<GapSession> {
    let at = |text: Option<&str>| {
        text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let mut gaps: Vec<GapSession> = sessions
        .iter()
        .filter(|s| s.has_gap())
        .filter(|s| {
            let (start, end) = (at(s.start_time.as_deref()), at(s.end_time.as_deref()));
            match (start.or(end), end.or(start)) {
                (Some(first), Some(last)) => {
                    first < scope.range.end() && last >= scope.range.start()
                }
                _ => true,
            }
        })
        .map(|s| GapSession {
            sim_sid: s.sim_sid.clone(),
            session_sid: s.session_sid.clone(),
            start_time: s.start_time.clone(),
            end_time: s.end_time.clone(),
            windows_received: s.windows_received,
            received_total: s.windows.total,
            cumulative_total: s.cumulative.map(|c| c.total),
        })
        .collect();
    gaps.sort_by(|a, b| {
        (&a.sim_sid, &a.start_time, &a.session_sid).cmp(&(
            &b.sim_sid,
            &b.start_time,
            &b.session_sid,
        ))
    });
    gaps
}

fn alerts_per_day(alerts: &[Alert]) -> Vec<AlertDay> {
    let mut days: BTreeMap<String, AlertDay> = BTreeMap::new();
    for alert in alerts {
        let day: String = alert.period_start.chars().take(10).collect();
        let entry = days.entry(day.clone()).or_insert_with(|| AlertDay {
            day,
            ..AlertDay::default()
        });
        let count = match alert.kind {
            AlertKind::Usage => &mut entry.usage,
            AlertKind::Silence => &mut entry.silence,
            AlertKind::Quality => &mut entry.quality,
        };
        *count += 1;
    }
    days.into_values().collect()
}
