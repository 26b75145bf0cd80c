//! `kore-usage compare`: the ledger against the provider's UsageRecords, SIM by SIM and
//! bucket by bucket, with the likely cause of each difference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::event::ConnectionEvent;
use kore_ingest_core::time::{TimeRange, z_time};
use kore_ingest_core::usage::{
    Granularity, GroupBy, GroupValue, Overflow, SessionSummary, UsageFilters, UsageQuery,
    sessions_of,
};
use serde::{Deserialize, Serialize};

use crate::args::{Format, parse_duration, parse_z_time};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, json, print};
use crate::source::{DaySource, Source};

const EXAMPLES: &str = "\
Examples:
  kore-usage compare --usage-records november-page-1.json november-page-2.json
  kore-usage compare --usage-records records.json --as-of 2024-12-02T12:00:00Z --format json

Reads the JSON the KORE or Twilio UsageRecords API returns (`usage_records`, grouped by SIM,
hourly or daily; any number of pages, of at most 400 days; a page given twice counts once) and
compares each record with the ledger, and each bucket the ledger has in the records' days, for
the records' accounts, that no record shows (provider 0). A difference
is explained as: a window the ledger never received (one of the SIM's sessions has a gap),
the provider's settlement delay (the provider shows less, and the bucket ended less than
--settlement before --as-of), or a window that crossed the bucket's boundary (its bytes are
the difference). Anything else is unexplained, and the exit code is then 1.";

/// Compare the ledger with the provider's UsageRecords, and explain each difference.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// UsageRecords pages, as the API returned them.
    #[arg(long = "usage-records", value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// When the provider's figures were taken (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_z_time)]
    pub as_of: Option<DateTime<Utc>>,
    /// How long the provider may take to show usage (UsageRecords: typically 48 hours).
    #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = parse_duration)]
    pub settlement: Duration,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Where each day's events are read: auto (the archive for a day sealed finally),
    /// ledger or archive.
    #[arg(long, value_enum, default_value_t)]
    pub source: Source,
}

#[derive(Debug, Deserialize)]
struct Page {
    usage_records: Vec<ProviderRecord>,
}

#[derive(Debug, Deserialize)]
struct ProviderRecord {
    sim_sid: Option<String>,
    #[serde(default)]
    account_sid: Option<String>,
    period: ProviderPeriod,
    #[serde(default)]
    data_total: Option<u64>,
    #[serde(default)]
    data_upload: Option<u64>,
    #[serde(default)]
    data_download: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ProviderPeriod {
    start_time: String,
    end_time: String,
}

/// One compared bucket. The JSON keys are a contract.
#[derive(Debug, Clone, Serialize)]
struct Comparison {
    sim_sid: String,
    start_time: String,
    end_time: String,
    ledger_total: u64,
    provider_total: u64,
    difference: i128,
    /// `match`, `session-gap`, `settlement`, `boundary` or `unexplained`.
    cause: &'static str,
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    records: usize,
    matching: usize,
    explained: usize,
    unexplained: usize,
    differences: Vec<Comparison>,
}

fn parse_time(text: &str, file: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Failure::Failed(format!("{file}: `{text}` is not an RFC 3339 time")))
}

/// Provider records: (SIM, start, end) -> bytes.
type Buckets = BTreeMap<(String, DateTime<Utc>, DateTime<Utc>), u64>;

/// What identifies a provider's record: SIM, account, start and end.
type RecordKey = (String, Option<String>, DateTime<Utc>, DateTime<Utc>);

/// The most days the records of one bucket length may span: the ledger is read over the
/// whole span, so records far apart (a typo, a hostile file) would be read hour by hour.
const MAX_SPAN_DAYS: i64 = 400;

/// What the provider's pages show: the records summed per SIM and bucket over accounts, and
/// the accounts they are for (`None`: a record named none, so any account may be in them).
struct ProviderUsage {
    buckets: Buckets,
    accounts: Option<BTreeSet<String>>,
}

impl ProviderUsage {
    /// Whether usage of `account` belongs in these pages: a bucket only the ledger has is a
    /// difference only then (pages fetched for one account say nothing of the others).
    fn covers(&self, account: Option<&str>) -> bool {
        match (&self.accounts, account) {
            (None, _) => true,
            (Some(accounts), Some(account)) => accounts.contains(account),
            (Some(_), None) => false,
        }
    }
}

/// The provider's records. A record is one SIM, account and period: the same record again
/// (a page given twice) counts once, and two different figures for it are refused.
fn read_pages(files: &[PathBuf]) -> Result<ProviderUsage> {
    let mut records: BTreeMap<RecordKey, u64> = BTreeMap::new();
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Failed(format!("cannot read {name}: {e}")))?;
        let page: Page = serde_json::from_str(&text)
            .map_err(|e| Failure::Failed(format!("{name} is not a UsageRecords page: {e}")))?;
        for record in page.usage_records {
            let sim = record.sim_sid.ok_or_else(|| {
                Failure::Failed(format!(
                    "{name}: a record without sim_sid (fetch the records with Group=sim)"
                ))
            })?;
            let start = parse_time(&record.period.start_time, &name)?;
            let end = parse_time(&record.period.end_time, &name)?;
            let too_large = || {
                Failure::Failed(format!(
                    "{name}: the data of {sim} from {} to {} adds up to more than 2^64 bytes",
                    record.period.start_time, record.period.end_time
                ))
            };
            let total = match record.data_total {
                Some(total) => total,
                None => record
                    .data_upload
                    .unwrap_or(0)
                    .checked_add(record.data_download.unwrap_or(0))
                    .ok_or_else(too_large)?,
            };
            let account = record.account_sid;
            match records.insert((sim.clone(), account.clone(), start, end), total) {
                Some(earlier) if earlier != total => {
                    return Err(Failure::Failed(format!(
                        "{name}: two records for {sim} (account {}) from {} to {} differ ({earlier} and {total} bytes): give each page of one fetch once",
                        account.as_deref().unwrap_or("-"),
                        record.period.start_time,
                        record.period.end_time
                    )));
                }
                _ => {}
            }
        }
    }
    let mut buckets = Buckets::new();
    let mut accounts = Some(BTreeSet::new());
    for ((sim, account, start, end), total) in records {
        match (&mut accounts, account) {
            (Some(seen), Some(account)) => {
                seen.insert(account);
            }
            (_, None) => accounts = None,
            (None, Some(_)) => {}
        }
        let bucket = buckets.entry((sim.clone(), start, end)).or_default();
        *bucket = bucket.checked_add(total).ok_or_else(|| {
            Failure::Failed(Overflow::new(format!("SIM {sim}"), z_time(start)).to_string())
        })?;
    }
    Ok(ProviderUsage { buckets, accounts })
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let pages = read_pages(&args.files)?;
    let provider = &pages.buckets;
    let as_of = args.as_of.unwrap_or_else(Utc::now);
    let settlement = chrono::Duration::from_std(args.settlement).unwrap_or_default();
    let ledger_buckets = ledger_totals(ledger, provider).await?;
    let ledger_totals: Buckets = ledger_buckets
        .iter()
        .map(|(key, bucket)| (key.clone(), bucket.total))
        .collect();
    let mut comparisons = Vec::new();
    let mut matching = 0;
    let mut evidence: BTreeMap<String, (Vec<ConnectionEvent>, Vec<SessionSummary>)> =
        BTreeMap::new();
    // Every bucket either side has: usage of the pages' accounts that the provider does not
    // show is a difference too.
    let ledger_only = ledger_buckets
        .iter()
        .filter(|(key, bucket)| {
            bucket.total > 0
                && !provider.contains_key(*key)
                && bucket.accounts.iter().any(|a| pages.covers(a.as_deref()))
        })
        .map(|(key, _)| (key, &0));
    for (key, provider_total) in provider.iter().chain(ledger_only) {
        let ledger_total = ledger_totals.get(key).copied().unwrap_or(0);
        let difference = i128::from(*provider_total) - i128::from(ledger_total);
        if difference == 0 {
            matching += 1;
            continue;
        }
        let (sim, start, end) = key;
        if !evidence.contains_key(sim) {
            evidence.insert(sim.clone(), sim_evidence(ledger, args.source, sim).await?);
        }
        let (events, sessions) = &evidence[sim];
        let bucket = TimeRange::new(*start, *end).map_err(|e| Failure::Failed(e.to_string()))?;
        let (cause, detail) = explain(difference, bucket, events, sessions, as_of, settlement);
        comparisons.push(Comparison {
            sim_sid: sim.clone(),
            start_time: z_time(*start),
            end_time: z_time(*end),
            ledger_total,
            provider_total: *provider_total,
            difference,
            cause,
            detail,
        });
    }
    let unexplained = comparisons
        .iter()
        .filter(|c| c.cause == "unexplained")
        .count();
    let summary = Summary {
        records: provider.len(),
        matching,
        explained: comparisons.len() - unexplained,
        unexplained,
        differences: comparisons,
    };
    let text = match args.format {
        Format::Json => json(&summary)?,
        Format::Table => table(&summary),
    };
    print(&text)?;
    Ok(if unexplained > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The ledger's usage in one SIM's bucket, and the accounts it was booked to.
#[derive(Debug, Default)]
struct LedgerBucket {
    total: u64,
    accounts: BTreeSet<Option<String>>,
}

/// The ledger's figure for every bucket in the days the provider's records span, one query
/// per bucket length.
async fn ledger_totals(
    ledger: &UsageLedger,
    provider: &Buckets,
) -> Result<BTreeMap<(String, DateTime<Utc>, DateTime<Utc>), LedgerBucket>> {
    let mut totals: BTreeMap<_, LedgerBucket> = BTreeMap::new();
    let mut by_length: BTreeMap<i64, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for (_, start, end) in provider.keys() {
        let span = by_length
            .entry((*end - *start).num_seconds())
            .or_insert((*start, *end));
        span.0 = span.0.min(*start);
        span.1 = span.1.max(*end);
    }
    for (length, (start, end)) in by_length {
        let days = (end - start).num_days();
        if days > MAX_SPAN_DAYS {
            return Err(Failure::Failed(format!(
                "the records span {days} days, from {} to {}: compare takes records of at most {MAX_SPAN_DAYS} days at once (give the pages of one period)",
                z_time(start),
                z_time(end)
            )));
        }
        let granularity = match length {
            3600 => Granularity::Hour,
            86_400 => Granularity::Day,
            _ => {
                return Err(Failure::Failed(format!(
                    "buckets of {length} s: compare takes hourly or daily UsageRecords"
                )));
            }
        };
        let query = UsageQuery::new(
            start,
            end,
            granularity,
            Some(GroupBy::Sim),
            UsageFilters::default(),
        )
        .map_err(|e| Failure::Failed(format!("the records' periods: {e}")))?;
        for record in ledger.rollups().usage(&query).await.or_fail(ledger)? {
            let Some(GroupValue::Sim { sim_sid, .. }) = record.group else {
                continue;
            };
            let period = record.period;
            let bucket = totals
                .entry((sim_sid.clone(), period.start_time, period.end_time))
                .or_default();
            bucket.total = bucket.total.checked_add(record.data_total).ok_or_else(|| {
                Failure::Failed(Overflow::new(format!("SIM {sim_sid}"), period).to_string())
            })?;
            bucket.accounts.insert(record.account_sid.clone());
        }
    }
    Ok(totals)
}

/// Every event of the SIM, read once: its sessions need them all, and each of its buckets
/// that differs is explained from the events around that bucket.
async fn sim_evidence(
    ledger: &UsageLedger,
    source: Source,
    sim: &str,
) -> Result<(Vec<ConnectionEvent>, Vec<SessionSummary>)> {
    let days = DaySource::of_sim(ledger, source, sim).await?;
    let events: Vec<ConnectionEvent> = days
        .usage_of_sim(sim, None)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let sessions = sessions_of(sim, &events)?;
    Ok((events, sessions))
}

/// The likely cause of a difference (provider minus ledger) in one SIM's bucket.
fn explain(
    difference: i128,
    bucket: TimeRange,
    events: &[ConnectionEvent],
    sessions: &[SessionSummary],
    as_of: DateTime<Utc>,
    settlement: chrono::Duration,
) -> (&'static str, Option<String>) {
    // A settlement reaching before the calendar's start covers every bucket.
    if difference < 0
        && as_of
            .checked_sub_signed(settlement)
            .is_none_or(|settled| bucket.end() > settled)
    {
        return (
            "settlement",
            Some(format!(
                "the bucket ended {} before the provider's figures were taken; the provider may not show all of it yet",
                humane(as_of - bucket.end())
            )),
        );
    }
    // A window whose bytes are the difference and that started in one bucket and ended
    // in the other: booked here by its end, maybe by its start there.
    let crossing = events.iter().find(|e| {
        let (Some(usage), Some(window_start)) = (
            e.usage,
            e.session.as_ref().and_then(|s| s.update_start_time),
        ) else {
            return false;
        };
        let crosses = (window_start < bucket.start() && bucket.contains(e.booked_at))
            || (bucket.contains(window_start) && e.booked_at >= bucket.end());
        crosses && i128::from(usage.total) == difference.abs()
    });
    if let Some(e) = crossing {
        return (
            "boundary",
            Some(format!(
                "window {} ran across the bucket's boundary ({} B)",
                e.key,
                e.usage.map_or(0, |u| u.total)
            )),
        );
    }
    if difference > 0 {
        let active: Vec<&str> = events
            .iter()
            .filter(|e| bucket.contains(e.booked_at))
            .filter_map(|e| e.session.as_ref().map(|s| s.sid.as_str()))
            .collect();
        let gap = sessions.iter().find(|s| {
            let missing = s
                .cumulative
                .map_or(0, |c| i128::from(c.total) - i128::from(s.windows.total));
            s.has_gap() && active.contains(&s.session_sid.as_str()) && missing >= difference
        });
        if let Some(session) = gap {
            let missing = session
                .cumulative
                .map_or(0, |c| c.total.saturating_sub(session.windows.total));
            return (
                "session-gap",
                Some(format!(
                    "session {} reports {missing} B more than the windows the ledger received: a window never arrived",
                    session.session_sid
                )),
            );
        }
    }
    ("unexplained", None)
}

fn humane(span: chrono::Duration) -> String {
    let hours = span.num_hours();
    if hours >= 1 {
        format!("{hours} h")
    } else {
        format!("{} min", span.num_minutes().max(0))
    }
}

fn table(summary: &Summary) -> String {
    let mut out = String::new();
    if !summary.differences.is_empty() {
        let mut table = Table::new(&[
            ("SIM", Align::Left),
            ("START", Align::Left),
            ("END", Align::Left),
            ("LEDGER", Align::Right),
            ("PROVIDER", Align::Right),
            ("DIFFERENCE", Align::Right),
            ("CAUSE", Align::Left),
        ]);
        for c in &summary.differences {
            table.row(vec![
                c.sim_sid.clone(),
                c.start_time.clone(),
                c.end_time.clone(),
                c.ledger_total.to_string(),
                c.provider_total.to_string(),
                c.difference.to_string(),
                c.cause.to_owned(),
            ]);
        }
        out.push_str(&table.render());
        for c in summary.differences.iter().filter(|c| c.detail.is_some()) {
            out.push_str(&format!(
                "{} {}: {}\n",
                c.sim_sid,
                c.start_time,
                c.detail.as_deref().unwrap_or_default()
            ));
        }
    }
    out.push_str(&format!(
        "{} records compared: {} match, {} differ with a likely cause, {} unexplained.\n",
        summary.records, summary.matching, summary.explained, summary.unexplained
    ));
    out
}
