//! `kore-usage close`, `adjustments` and `verify-close`: an invoiced period frozen once, the
//! usage that arrives late listed as adjustments of it, and the proof that the two still
//! add up to what the ledger holds.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::closes::{Adjustment, Close, CloseState, settle_time};
use kore_ingest_core::time::{TimeRange, z_time};
use kore_ingest_core::usage::HourUsage;
use serde::Serialize;

use crate::args::{Format, RangeArgs, ReportFormat, humane, parse_duration};
use crate::customers::{customers_in_force, zones_in_force};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, counted, csv_field, json, print};

const CLOSE_EXAMPLES: &str = "\
Examples:
  kore-usage close --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage close --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z \\
      --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9 --grace 72h

A period is whole UTC days, for one account or for every account. Usage keeps arriving for
up to 48 hours after a period ends, so close refuses before --end plus --grace unless
--force, and within an hour of --end even with it. It registers the period, marks its days
(a commit into a marked day is an adjustment, whatever its writer knew), waits --settle, then
stores the snapshot: one line per account, SIM, fleet, network and country, with a SHA-256
over its canonical form. Usage booked into the period after that is stored and counted as
always, and also recorded as an adjustment of the period. Closing a period twice, or one
that overlaps a closed period of the same account, is refused. A close interrupted before its
snapshot is finished by running the same command again.";

/// Freeze a period's usage for invoicing; late usage becomes adjustments of it.
#[derive(Debug, clap::Args)]
#[command(after_help = CLOSE_EXAMPLES)]
pub struct CloseArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only this account (AC...); without it, every account.
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// How long after --end usage is still expected (e.g. 48h, 2d, 30m).
    #[arg(long, value_name = "DURATION", default_value = "48h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Close before --end plus --grace (never within an hour of --end).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the functions to learn of the close before the snapshot is read
    /// (default: their CLOSED_PERIODS_TTL_MS plus 30 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The JSON keys are a contract.
#[derive(Debug, Serialize)]
struct CloseJson<'a> {
    account_sid: Option<&'a str>,
    start_time: String,
    end_time: String,
    state: &'static str,
    closed_at: &'a str,
    snapshot_at: Option<&'a str>,
    snapshot_sha256: Option<&'a str>,
    lines: u64,
}

impl<'a> From<&'a Close> for CloseJson<'a> {
    fn from(close: &'a Close) -> Self {
        CloseJson {
            account_sid: close.account_sid.as_deref(),
            start_time: z_time(close.period.start()),
            end_time: z_time(close.period.end()),
            state: match close.state {
                CloseState::Settling => "settling",
                CloseState::Closed => "closed",
            },
            closed_at: &close.closed_at,
            snapshot_at: close.snapshot_at.as_deref(),
            snapshot_sha256: close.snapshot_sha256.as_deref(),
            lines: close.lines,
        }
    }
}

pub async fn close(ledger: &UsageLedger, args: CloseArgs) -> Result<ExitCode> {
    let period = args.range.whole_days()?;
    let settles_at = chrono::Duration::from_std(args.grace)
        .ok()
        .and_then(|grace| period.end().checked_add_signed(grace))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--grace {} is too long: --end plus --grace must be a time",
                humane(args.grace)
            ))
        })?;
    if Utc::now() < settles_at && !args.force {
        return Err(Failure::Failed(format!(
            "the period ends at {} and usage keeps arriving for {}: close it after {}, or pass --force",
            z_time(period.end()),
            humane(args.grace),
            z_time(settles_at)
        )));
    }
    // Read ahead of registering: a bad setting must not leave a close without a snapshot.
    let settle = match args.settle {
        Some(settle) => settle,
        // As long as the functions trust their copy of the closes, plus a commit's time.
        None => settle_time(ledger.table().config().closed_periods_ttl),
    };
    // Whom the usage is billed to, as the mapping says now: the snapshot keeps it.
    let customers = customers_in_force(ledger).await?;
    let zones = zones_in_force(ledger).await?;
    let registered = ledger
        .closes()
        .register(args.account.as_deref(), period)
        .await
        .or_fail(ledger)?;
    if !settle.is_zero() {
        eprintln!(
            "close: waiting {} for every function to learn of the close before the snapshot",
            humane(settle)
        );
        tokio::time::sleep(settle).await;
    }
    let closed = ledger
        .closes()
        .store_snapshot(&registered, customers.as_ref(), zones.as_ref())
        .await
        .or_fail(ledger)?;
    let text = match args.format {
        Format::Json => json(&CloseJson::from(&closed))?,
        Format::Table => format!(
            "Closed {} from {} to {}: {} lines, snapshot SHA-256 {}.\n",
            closed.whom(),
            z_time(closed.period.start()),
            z_time(closed.period.end()),
            closed.lines,
            closed.snapshot_sha256.as_deref().unwrap_or_default()
        ),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

const ADJUSTMENTS_EXAMPLES: &str = "\
Examples:
  kore-usage adjustments --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage adjustments --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --format csv

Every usage event booked into a closed period after it was closed, with when it arrived:
what to invoice as a correction of that period.";

/// List the late usage booked into closed periods.
#[derive(Debug, clap::Args)]
#[command(after_help = ADJUSTMENTS_EXAMPLES)]
pub struct AdjustmentsArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only this account's adjustments.
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// The JSON keys are a contract.
#[derive(Debug, Serialize)]
struct AdjustmentJson<'a> {
    period_start: String,
    period_end: String,
    event_sid: &'a str,
    account_sid: Option<&'a str>,
    sim_sid: &'a str,
    fleet_sid: Option<&'a str>,
    network_sid: Option<&'a str>,
    iso_country: Option<&'a str>,
    booked_hour: String,
    data_upload: u64,
    data_download: u64,
    data_total: u64,
    received_at: &'a str,
}

pub async fn adjustments(ledger: &UsageLedger, args: AdjustmentsArgs) -> Result<ExitCode> {
    let range = args.range.whole_hours()?;
    let account = args.account.as_deref();
    let closes: Vec<Close> = ledger
        .closes()
        .all()
        .await
        .or_fail(ledger)?
        .into_iter()
        .filter(|c| c.overlaps(account, &range))
        .collect();
    let mut rows: Vec<(Close, Adjustment)> = Vec::new();
    for close in closes {
        for adjustment in ledger.closes().adjustments(&close).await.or_fail(ledger)? {
            let of_account =
                account.is_none_or(|a| adjustment.booking.account_sid.as_deref() == Some(a));
            if range.contains(adjustment.booked_hour) && of_account {
                rows.push((close.clone(), adjustment));
            }
        }
    }
    rows.sort_by(|a, b| {
        (&a.1.received_at, &a.1.event_sid).cmp(&(&b.1.received_at, &b.1.event_sid))
    });
    let records: Vec<AdjustmentJson<'_>> = rows
        .iter()
        .map(|(close, a)| AdjustmentJson::of(close, a))
        .collect();
    let text = match args.format {
        ReportFormat::Json => json(&records)?,
        ReportFormat::Csv => adjustments_csv(&records),
        ReportFormat::Table if records.is_empty() => "No adjustments.\n".to_owned(),
        ReportFormat::Table => adjustments_table(&records, range)?,
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

impl<'a> AdjustmentJson<'a> {
    fn of(close: &Close, a: &'a Adjustment) -> Self {
        AdjustmentJson {
            period_start: z_time(close.period.start()),
            period_end: z_time(close.period.end()),
            event_sid: &a.event_sid,
            account_sid: a.booking.account_sid.as_deref(),
            sim_sid: &a.booking.sim_sid,
            fleet_sid: a.booking.fleet_sid.as_deref(),
            network_sid: a.booking.network_sid.as_deref(),
            iso_country: a.booking.iso_country.as_deref(),
            booked_hour: z_time(a.booked_hour),
            data_upload: a.usage.upload,
            data_download: a.usage.download,
            data_total: a.usage.total,
            received_at: &a.received_at,
        }
    }
}

fn adjustments_csv(records: &[AdjustmentJson<'_>]) -> String {
    let mut out = String::from(
        "period_start,period_end,event_sid,account_sid,sim_sid,fleet_sid,network_sid,iso_country,booked_hour,data_upload,data_download,data_total,received_at\n",
    );
    for r in records {
        let text = [
            r.period_start.clone(),
            r.period_end.clone(),
            r.event_sid.to_owned(),
            r.account_sid.unwrap_or_default().to_owned(),
            r.sim_sid.to_owned(),
            r.fleet_sid.unwrap_or_default().to_owned(),
            r.network_sid.unwrap_or_default().to_owned(),
            r.iso_country.unwrap_or_default().to_owned(),
            r.booked_hour.clone(),
        ];
        let mut cells: Vec<String> = text.iter().map(|c| csv_field(c)).collect();
        cells.extend([r.data_upload, r.data_download, r.data_total].map(|n| n.to_string()));
        cells.push(csv_field(r.received_at));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn adjustments_table(records: &[AdjustmentJson<'_>], range: TimeRange) -> Result<String> {
    let mut table = Table::new(&[
        ("PERIOD", Align::Left),
        ("EVENT", Align::Left),
        ("SIM", Align::Left),
        ("BOOKED", Align::Left),
        ("TOTAL", Align::Right),
        ("RECEIVED", Align::Left),
    ]);
    let mut total = HourUsage::default();
    for r in records {
        let late = HourUsage {
            usage: kore_ingest_core::event::DataVolume {
                upload: r.data_upload,
                download: r.data_download,
                total: r.data_total,
            },
            events: 1,
        };
        total = total.plus(late, || {
            ("the adjustments' total".into(), range.to_string())
        })?;
        table.row(vec![
            format!("{}..{}", r.period_start, r.period_end),
            r.event_sid.to_owned(),
            r.sim_sid.to_owned(),
            r.booked_hour.clone(),
            r.data_total.to_string(),
            r.received_at.to_owned(),
        ]);
    }
    table.footer(vec![
        format!(
            "TOTAL ({})",
            counted(records.len(), "adjustment", "adjustments")
        ),
        String::new(),
        String::new(),
        String::new(),
        total.usage.total.to_string(),
    ]);
    Ok(table.render())
}

const VERIFY_EXAMPLES: &str = "\
Examples:
  kore-usage verify-close --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage verify-close --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --account AC..

Recomputes the snapshot's SHA-256 and checks, booking by booking, that the snapshot plus the
adjustments equal the live rollups. Exit 1 if anything differs.";

/// Check a closed period: its snapshot's hash, and snapshot + adjustments = live usage.
#[derive(Debug, clap::Args)]
#[command(after_help = VERIFY_EXAMPLES)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// The account the period was closed for (without it: the close of every account).
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
}

pub async fn verify(ledger: &UsageLedger, args: VerifyArgs) -> Result<ExitCode> {
    let period = args.range.whole_days()?;
    let close = closed(ledger, args.account.as_deref(), period).await?;
    let problems = ledger.closes().verify(&close).await.or_fail(ledger)?;
    let mut text = String::new();
    for problem in &problems {
        text.push_str(problem);
        text.push('\n');
    }
    if problems.is_empty() {
        text.push_str(&format!(
            "The close of {} from {} to {} holds: its snapshot hashes to {}, and snapshot plus adjustments equal the live usage.\n",
            close.whom(),
            z_time(close.period.start()),
            z_time(close.period.end()),
            close.snapshot_sha256.as_deref().unwrap_or_default()
        ));
    }
    print(&text)?;
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The finished close of exactly this period, or why there is none.
pub async fn closed(
    ledger: &UsageLedger,
    account: Option<&str>,
    period: TimeRange,
) -> Result<Close> {
    let (start, end) = (period.start(), period.end());
    let close = ledger
        .closes()
        .find(account, period)
        .await
        .or_fail(ledger)?
        .ok_or_else(|| {
            Failure::Failed(format!(
                "no period from {} to {} was closed{}",
                z_time(start),
                z_time(end),
                account.map(|a| format!(" for {a}")).unwrap_or_default()
            ))
        })?;
    if close.state != CloseState::Closed {
        return Err(Failure::Failed(format!(
            "the close from {} to {} has no snapshot yet: run the same close again to finish it",
            z_time(start),
            z_time(end)
        )));
    }
    Ok(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn late(event_sid: &str, total: u64) -> AdjustmentJson<'_> {
        AdjustmentJson {
            period_start: "2024-10-28T00:00:00Z".into(),
            period_end: "2024-10-29T00:00:00Z".into(),
            event_sid,
            account_sid: None,
            sim_sid: "HS1",
            fleet_sid: None,
            network_sid: None,
            iso_country: None,
            booked_hour: "2024-10-28T23:00:00Z".into(),
            data_upload: 0,
            data_download: total,
            data_total: total,
            received_at: "2024-10-29T00:05:00Z",
        }
    }

    fn footer(records: &[AdjustmentJson<'_>]) -> String {
        let range = TimeRange::new(
            "2024-10-28T00:00:00Z".parse().unwrap(),
            "2024-10-29T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        let table = adjustments_table(records, range).unwrap();
        table.lines().last().unwrap().to_owned()
    }

    #[test]
    fn the_adjustments_total_counts_one_adjustment_in_the_singular() {
        assert!(footer(&[late("EZ1", 4444)]).starts_with("TOTAL (1 adjustment) "));
        let two = footer(&[late("EZ1", 4444), late("EZ2", 1)]);
        assert!(two.starts_with("TOTAL (2 adjustments) "), "{two}");
        assert!(two.ends_with("4445"), "{two}");
    }
}
