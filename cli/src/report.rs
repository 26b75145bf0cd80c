//! `kore-usage report`: usage per SIM for a month or a day.

use std::process::ExitCode;

use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::usage::{HourUsage, UsageFilters};
use serde::Serialize;

use crate::args::{ReportFormat, parse_period};
use crate::failure::{OrFail, Result};
use crate::output::{Align, Table, counted, csv_field, human_bytes, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage report --period 2024-11
  kore-usage report --period 2024-11-03 --sim HS11112222333344445555666677778888
  kore-usage report --period 2024-11 --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9 --format json
  kore-usage report --period 2024-11 --fleet HF99998888777766665555444433332222 --format csv

Without --sim, --account or --fleet every SIM with usage in the period is listed. Given
together, they narrow each other (e.g. --account with --fleet: the fleet's SIMs of that
account). Usage counts for the account and fleet that each event named when it happened.";

/// Usage per SIM for a month or a day (UTC billing days): `usage --group sim` over the
/// period, one line per SIM whatever account it was booked to.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// A month (YYYY-MM) or a day (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM|YYYY-MM-DD", value_parser = parse_period)]
    pub period: String,
    /// Only this SIM (HS...).
    #[arg(long, value_name = "HS..")]
    pub sim: Option<String>,
    /// Only this account's SIMs (AC...).
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// Only this fleet's SIMs (HF...).
    #[arg(long, value_name = "HF..")]
    pub fleet: Option<String>,
    /// Output format: an aligned table with readable sizes, or raw numbers.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// One line of the report; the JSON keys are a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Row {
    sim_sid: String,
    period: String,
    data_upload: u64,
    data_download: u64,
    data_total: u64,
    usage_events: u64,
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let period = args.period.as_str();
    // Usage is booked to the account and fleet each event named: a SIM that moved fleet
    // mid-month shows here only with what it used in that fleet.
    let filters = UsageFilters {
        sim_sid: args.sim.clone(),
        account_sid: args.account.clone(),
        fleet_sid: args.fleet.clone(),
        ..UsageFilters::default()
    };
    let rows: Vec<Row> = ledger
        .rollups()
        .usage_per_sim(period, filters)
        .await
        .or_fail(ledger)?
        .into_iter()
        .map(|(sim_sid, sum)| Row {
            sim_sid,
            period: period.to_owned(),
            data_upload: sum.usage.upload,
            data_download: sum.usage.download,
            data_total: sum.usage.total,
            usage_events: sum.events,
        })
        .collect();
    let text = match args.format {
        ReportFormat::Json => json(&rows)?,
        ReportFormat::Csv => csv(&rows),
        ReportFormat::Table if rows.is_empty() => {
            format!("No usage recorded for {period}.\n")
        }
        ReportFormat::Table => table(&rows)?,
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn csv(rows: &[Row]) -> String {
    let mut out =
        String::from("sim_sid,period,data_upload,data_download,data_total,usage_events\n");
    for row in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            csv_field(&row.sim_sid),
            csv_field(&row.period),
            row.data_upload,
            row.data_download,
            row.data_total,
            row.usage_events
        ));
    }
    out
}

fn table(rows: &[Row]) -> Result<String> {
    let mut table = Table::new(&[
        ("SIM", Align::Left),
        ("PERIOD", Align::Left),
        ("UPLOAD", Align::Right),
        ("DOWNLOAD", Align::Right),
        ("TOTAL", Align::Right),
        ("EVENTS", Align::Right),
    ]);
    let mut sum = HourUsage::default();
    for row in rows {
        let usage = HourUsage {
            usage: kore_ingest_core::event::DataVolume {
                upload: row.data_upload,
                download: row.data_download,
                total: row.data_total,
            },
            events: row.usage_events,
        };
        sum = sum.plus(usage, || ("the report's total".into(), row.period.clone()))?;
        table.row(vec![
            row.sim_sid.clone(),
            row.period.clone(),
            human_bytes(row.data_upload),
            human_bytes(row.data_download),
            human_bytes(row.data_total),
            row.usage_events.to_string(),
        ]);
    }
    table.footer(vec![
        format!("TOTAL ({})", counted(rows.len(), "SIM", "SIMs")),
        rows.first().map(|r| r.period.clone()).unwrap_or_default(),
        human_bytes(sum.usage.upload),
        human_bytes(sum.usage.download),
        human_bytes(sum.usage.total),
        sum.events.to_string(),
    ]);
    Ok(table.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_the_contract_header_and_raw_numbers() {
        let rows = [Row {
            sim_sid: "HS1".into(),
            period: "2024-11".into(),
            data_upload: 1,
            data_download: 2,
            data_total: 3,
            usage_events: 4,
        }];
        assert_eq!(
            csv(&rows),
            "sim_sid,period,data_upload,data_download,data_total,usage_events\nHS1,2024-11,1,2,3,4\n"
        );
        let text = table(&rows).unwrap();
        assert!(text.contains("TOTAL (1 SIM)"), "{text}");
    }
}
