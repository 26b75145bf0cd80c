//! `kore-usage report`: usage per SIM for a month or a day.

use std::process::ExitCode;

use chrono::NaiveDate;
use clap::ValueEnum;
use kore_ingest_shared::ledger::UsageLedger;
use kore_ingest_shared::ledger::reports::UsageRollup;
use kore_ingest_shared::usage::UsageFilters;
use serde::Serialize;

use crate::failure::{OrFail, Result};
use crate::output::{Align, Table, csv_field, human_bytes, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage report --period 2024-11
  kore-usage report --period 2024-11-03 --sim HS11112222333344445555666677778888
  kore-usage report --period 2024-11 --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9 --format json
  kore-usage report --period 2024-11 --fleet HF99998888777766665555444433332222 --format csv

Without --sim, --account or --fleet every SIM with usage in the period is listed. Given
together, they narrow each other (e.g. --account with --fleet: the fleet's SIMs of that
account). Usage counts for the account and fleet that each event named when it happened.";

/// Usage per SIM for a month or a day (UTC billing days), from the ledger's rollups.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// `YYYY-MM` or `YYYY-MM-DD`, digits exactly, a real month or date.
pub fn parse_period(text: &str) -> std::result::Result<String, String> {
    const HELP: &str =
        "must be a month (YYYY-MM) or a day (YYYY-MM-DD), e.g. 2024-11 or 2024-11-03";
    let bytes = text.as_bytes();
    let shape_ok = match bytes.len() {
        7 | 10 => bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        }),
        _ => false,
    };
    if !shape_ok {
        return Err(HELP.to_owned());
    }
    let date = if bytes.len() == 7 {
        format!("{text}-01")
    } else {
        text.to_owned()
    };
    NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map(|_| text.to_owned())
        .map_err(|_| format!("{HELP}; `{text}` is not a real date"))
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

impl From<&UsageRollup> for Row {
    fn from(rollup: &UsageRollup) -> Self {
        Row {
            sim_sid: rollup.sim_sid.clone(),
            period: rollup.period.clone(),
            data_upload: rollup.usage.upload,
            data_download: rollup.usage.download,
            data_total: rollup.usage.total,
            usage_events: rollup.usage_events,
        }
    }
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
    let rollups = ledger
        .usage_per_sim(period, filters)
        .await
        .or_fail(ledger)?;
    let rows: Vec<Row> = rollups.iter().map(Row::from).collect();

    let text = match args.format {
        ReportFormat::Json => json(&rows)?,
        ReportFormat::Csv => csv(&rows),
        ReportFormat::Table if rows.is_empty() => {
            format!("No usage recorded for {period}.\n")
        }
        ReportFormat::Table => table(&rows),
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

fn table(rows: &[Row]) -> String {
    let mut table = Table::new(&[
        ("SIM", Align::Left),
        ("PERIOD", Align::Left),
        ("UPLOAD", Align::Right),
        ("DOWNLOAD", Align::Right),
        ("TOTAL", Align::Right),
        ("EVENTS", Align::Right),
    ]);
    let (mut up, mut down, mut total, mut events) = (0u64, 0u64, 0u64, 0u64);
    for row in rows {
        up = up.saturating_add(row.data_upload);
        down = down.saturating_add(row.data_download);
        total = total.saturating_add(row.data_total);
        events = events.saturating_add(row.usage_events);
        table.row(vec![
            row.sim_sid.clone(),
            row.period.clone(),
            human_bytes(row.data_upload),
            human_bytes(row.data_download),
            human_bytes(row.data_total),
            row.usage_events.to_string(),
        ]);
    }
    let sims = if rows.len() == 1 { "SIM" } else { "SIMs" };
    table.footer(vec![
        format!("TOTAL ({} {sims})", rows.len()),
        rows.first().map(|r| r.period.clone()).unwrap_or_default(),
        human_bytes(up),
        human_bytes(down),
        human_bytes(total),
        events.to_string(),
    ]);
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_months_or_days_exactly() {
        for good in ["2024-11", "2024-11-03", "2024-02-29"] {
            assert_eq!(parse_period(good).as_deref(), Ok(good));
        }
        for bad in [
            "2024-13",
            "2024-1",
            "2024-11-3",
            "2023-02-29",
            "2024/11",
            "24-11",
            "2024-11-03T00",
            "",
            "２０２４-11",
            "2024-00",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

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
        let text = table(&rows);
        assert!(text.contains("TOTAL (1 SIM)"), "{text}");
    }
}
