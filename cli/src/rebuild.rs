//! `kore-usage rebuild`: recompute the usage rollups of a range from the stored events.

use std::process::ExitCode;

use kore_ingest_aws::archive::{Archiver, EventTable, MANIFESTS};
use kore_ingest_aws::ledger::{RebuildReport, RollupDifference, UsageLedger};
use kore_ingest_core::time::TimeRange;
use serde::Serialize;

use crate::args::{Format, RangeArgs};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, json, print};
use crate::source::archive_store;

const EXAMPLES: &str = "\
Examples:
  kore-usage rebuild --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --check
  kore-usage rebuild --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z

With --check nothing changes: every rollup whose hours in the range differ from the events
stored for them is listed, and the exit code is 1 if there is any (the audit to run before
invoicing a period). Without --check those rollups are rewritten from the events; a rollup a
new event changes meanwhile is compared again, never overwritten.

Days whose event records may have expired (LEDGER_RETENTION_DAYS) are never rebuilt: the
rollups are all that is left of their expired events. `--check --from-archive` compares the
rollups with the events the archive sealed for those days instead:
  kore-usage rebuild --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --check --from-archive";

/// Recompute the usage rollups of a range from the stored event records.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Change nothing; list the rollups that differ from their events (exit 1 if any).
    #[arg(long)]
    pub check: bool,
    /// With --check: compare with the events the archive sealed for each day (every day of
    /// the range must be sealed finally) instead of the ledger's.
    #[arg(long, requires = "check")]
    pub from_archive: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The JSON keys are a contract.
#[derive(Debug, Serialize)]
struct Difference<'a> {
    day: String,
    sim_sid: &'a str,
    account_sid: Option<&'a str>,
    fleet_sid: Option<&'a str>,
    network_sid: Option<&'a str>,
    iso_country: Option<&'a str>,
    hours: &'a [u32],
    stored_total: u64,
    stored_events: u64,
    expected_total: u64,
    expected_events: u64,
}

impl<'a> From<&'a RollupDifference> for Difference<'a> {
    fn from(d: &'a RollupDifference) -> Self {
        Difference {
            day: d.day.format("%Y-%m-%d").to_string(),
            sim_sid: &d.booking.sim_sid,
            account_sid: d.booking.account_sid.as_deref(),
            fleet_sid: d.booking.fleet_sid.as_deref(),
            network_sid: d.booking.network_sid.as_deref(),
            iso_country: d.booking.iso_country.as_deref(),
            hours: &d.hours,
            stored_total: d.stored.usage.total,
            stored_events: d.stored.events,
            expected_total: d.expected.usage.total,
            expected_events: d.expected.events,
        }
    }
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    checked_only: bool,
    rollups_compared: usize,
    usage_events: usize,
    differences: Vec<Difference<'a>>,
    rewritten: usize,
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let range = args.range.whole_hours()?;
    let report = match args.from_archive {
        true => check_against_archive(ledger, range).await?,
        false => ledger
            .rebuilder()
            .run(range, args.check)
            .await
            .or_fail(ledger)?,
    };
    let text = match args.format {
        Format::Json => json(&Summary {
            checked_only: args.check,
            rollups_compared: report.rollups_compared,
            usage_events: report.usage_events,
            differences: report.differences.iter().map(Difference::from).collect(),
            rewritten: report.rewritten,
        })?,
        Format::Table => text(&report, args.check),
    };
    print(&text)?;
    Ok(if args.check && !report.differences.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The rollups of `range` compared with the usage events the archive sealed for its days.
async fn check_against_archive(ledger: &UsageLedger, range: TimeRange) -> Result<RebuildReport> {
    let store = archive_store().await?;
    let archiver = Archiver {
        ledger,
        store: &store,
    };
    let mut events = Vec::new();
    for day in range.days() {
        let manifest = archiver.manifest(day).await.or_fail(ledger)?;
        let Some(manifest) = manifest.filter(|m| m.is_final) else {
            return Err(Failure::Failed(format!(
                "{day} has no final seal in {}: there is no settled copy of its events to compare its rollups with",
                store.place(MANIFESTS)
            )));
        };
        let archived = archiver.archived_events(day, &manifest, EventTable::Usage);
        events.extend(archived.await.or_fail(ledger)?.into_iter().map(|(_, e)| e));
    }
    ledger
        .rebuilder()
        .check_against(range, &events)
        .await
        .or_fail(ledger)
}

fn text(report: &RebuildReport, check: bool) -> String {
    let mut out = String::new();
    if !report.differences.is_empty() {
        let mut table = Table::new(&[
            ("DAY", Align::Left),
            ("SIM", Align::Left),
            ("ACCOUNT", Align::Left),
            ("FLEET", Align::Left),
            ("NETWORK", Align::Left),
            ("COUNTRY", Align::Left),
            ("HOURS", Align::Left),
            ("STORED", Align::Right),
            ("FROM EVENTS", Align::Right),
        ]);
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        for d in &report.differences {
            table.row(vec![
                d.day.format("%Y-%m-%d").to_string(),
                d.booking.sim_sid.clone(),
                dash(&d.booking.account_sid),
                dash(&d.booking.fleet_sid),
                dash(&d.booking.network_sid),
                dash(&d.booking.iso_country),
                d.hours
                    .iter()
                    .map(|h| format!("{h:02}"))
                    .collect::<Vec<_>>()
                    .join(","),
                format!("{} B / {} ev", d.stored.usage.total, d.stored.events),
                format!("{} B / {} ev", d.expected.usage.total, d.expected.events),
            ]);
        }
        out.push_str(&table.render());
    }
    let verdict = match (check, report.differences.len()) {
        (true, 0) => "every rollup matches its events".to_owned(),
        (true, n) => format!("{n} rollup(s) differ from their events"),
        (false, _) => format!("{} rollup(s) rewritten", report.rewritten),
    };
    out.push_str(&format!(
        "{} rollups compared with {} usage events: {verdict}.\n",
        report.rollups_compared, report.usage_events
    ));
    out
}
