//! `kore-usage sims`: each SIM's status by the time its update callbacks were sent, its
//! history of status changes, and the SIMs active on each UTC day of a range.

use std::process::ExitCode;

use kore_ingest_aws::ledger::{SimActivity, SimStatusEntry, UsageLedger};
use kore_ingest_core::sim_status::changes;
use kore_ingest_core::time::z_time;
use serde::Serialize;

use crate::args::{Format, RangeArgs, ReportFormat};
use crate::failure::{OrFail, Result};
use crate::output::{Align, Table, counted, csv_field, json, one_line, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage sims status
  kore-usage sims status --sim HS11112222333344445555666677778888 --format json
  kore-usage sims history --sim HS11112222333344445555666677778888
  kore-usage sims active --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --format csv

A SIM's status is the one its update callbacks carried with the latest send time (KORE's
Date header; the arrival time when there is none, or none that can be believed, and
SENT FROM says so); of two sent at the same time, the later arrival. A callback that
arrives late, is retried or replayed never rolls a status back.";

/// SIM statuses from the SIM-update callbacks, their history, and active SIM-days.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum Command {
    /// One record per SIM: its current status and when it was sent.
    Status(StatusArgs),
    /// Every status change of a SIM, oldest first.
    History(HistoryArgs),
    /// One record per SIM known in the range: the UTC days it was active on.
    Active(ActiveArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this SIM (HS...).
    #[arg(long, value_name = "HS..")]
    pub sim: Option<String>,
    /// Only the SIMs of this account (AC...).
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The SIM (HS...).
    #[arg(long, value_name = "HS..")]
    pub sim: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

const ACTIVE_HELP: &str = "\
A SIM counts as active on a UTC day of the range when, by its history, its status was
`active` at any moment of that day, or usage was booked to it that day. ACTIVE AT END is the
last status sent before --end (null in JSON, empty in CSV, when none was). The range is whole
UTC days.";

#[derive(Debug, clap::Args)]
#[command(after_help = ACTIVE_HELP)]
pub struct ActiveArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only the SIMs whose current status or booked usage names this account (AC...), and
    /// only the usage booked to it.
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

pub async fn run(ledger: &UsageLedger, command: Command) -> Result<ExitCode> {
    match command {
        Command::Status(args) => status(ledger, args).await,
        Command::History(args) => history(ledger, args).await,
        Command::Active(args) => active(ledger, args).await,
    }
}

#[derive(Debug, Serialize)]
struct StatusRecord<'a> {
    sim_sid: &'a str,
    account_sid: Option<&'a str>,
    status: &'a str,
    as_of: String,
    received_at: String,
    provider: &'a str,
    sent_at_source: &'a str,
}

impl<'a> From<&'a SimStatusEntry> for StatusRecord<'a> {
    fn from(entry: &'a SimStatusEntry) -> Self {
        StatusRecord {
            sim_sid: &entry.sim_sid,
            account_sid: entry.account_sid.as_deref(),
            status: &entry.change.status,
            as_of: z_time(entry.change.sent_at),
            received_at: z_time(entry.change.received_at),
            provider: entry.change.provider.as_str(),
            sent_at_source: entry.change.sent_at_source.as_str(),
        }
    }
}

async fn status(ledger: &UsageLedger, args: StatusArgs) -> Result<ExitCode> {
    let callbacks = ledger.callbacks();
    let mut statuses = match &args.sim {
        Some(sim) => Vec::from_iter(callbacks.status(sim).await.or_fail(ledger)?),
        None => callbacks.statuses().await.or_fail(ledger)?,
    };
    if let Some(account) = &args.account {
        statuses.retain(|s| s.account_sid.as_ref() == Some(account));
    }
    let records: Vec<StatusRecord> = statuses.iter().map(StatusRecord::from).collect();
    let text = match args.format {
        Format::Json => json(&records)?,
        Format::Table if records.is_empty() => "No SIM status recorded.\n".to_owned(),
        Format::Table => {
            let mut table = Table::new(&[
                ("SIM", Align::Left),
                ("ACCOUNT", Align::Left),
                ("STATUS", Align::Left),
                ("AS OF", Align::Left),
                ("RECEIVED", Align::Left),
                ("PROVIDER", Align::Left),
                ("SENT FROM", Align::Left),
            ]);
            for r in &records {
                table.row(vec![
                    r.sim_sid.to_owned(),
                    r.account_sid.unwrap_or("-").to_owned(),
                    one_line(r.status),
                    r.as_of.clone(),
                    r.received_at.clone(),
                    r.provider.to_owned(),
                    r.sent_at_source.to_owned(),
                ]);
            }
            table.render() + &counted(records.len(), "SIM", "SIMs") + "\n"
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct ChangeRecord<'a> {
    status: &'a str,
    sent_at: String,
    received_at: String,
    provider: &'a str,
    sent_at_source: &'a str,
}

async fn history(ledger: &UsageLedger, args: HistoryArgs) -> Result<ExitCode> {
    let entries = ledger
        .callbacks()
        .history(&args.sim)
        .await
        .or_fail(ledger)?;
    let history = changes(entries.into_iter().map(|e| e.change).collect());
    let records: Vec<ChangeRecord> = history
        .iter()
        .map(|c| ChangeRecord {
            status: &c.status,
            sent_at: z_time(c.sent_at),
            received_at: z_time(c.received_at),
            provider: c.provider.as_str(),
            sent_at_source: c.sent_at_source.as_str(),
        })
        .collect();
    let text = match args.format {
        Format::Json => json(&records)?,
        Format::Table if records.is_empty() => format!("No status recorded for {}.\n", args.sim),
        Format::Table => {
            let mut table = Table::new(&[
                ("STATUS", Align::Left),
                ("SENT", Align::Left),
                ("RECEIVED", Align::Left),
                ("PROVIDER", Align::Left),
                ("SENT FROM", Align::Left),
            ]);
            for r in &records {
                table.row(vec![
                    one_line(r.status),
                    r.sent_at.clone(),
                    r.received_at.clone(),
                    r.provider.to_owned(),
                    r.sent_at_source.to_owned(),
                ]);
            }
            table.render()
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct ActiveRecord<'a> {
    sim_sid: &'a str,
    account_sid: Option<&'a str>,
    active_days: usize,
    active_at_end: Option<bool>,
}

impl<'a> From<&'a SimActivity> for ActiveRecord<'a> {
    fn from(sim: &'a SimActivity) -> Self {
        ActiveRecord {
            sim_sid: &sim.sim_sid,
            account_sid: sim.account_sid.as_deref(),
            active_days: sim.activity.active_days.len(),
            active_at_end: sim.activity.active_at_end,
        }
    }
}

async fn active(ledger: &UsageLedger, args: ActiveArgs) -> Result<ExitCode> {
    let range = args.range.whole_days()?;
    let sims = ledger
        .sims_active(&range, args.account.as_deref())
        .await
        .or_fail(ledger)?;
    let records: Vec<ActiveRecord> = sims.iter().map(ActiveRecord::from).collect();
    let at_end = |value: Option<bool>| value.map(|v| v.to_string()).unwrap_or_default();
    let text = match args.format {
        ReportFormat::Json => json(&records)?,
        ReportFormat::Csv => {
            let mut text = "sim_sid,account_sid,active_days,active_at_end\n".to_owned();
            for r in &records {
                text.push_str(&format!(
                    "{},{},{},{}\n",
                    csv_field(r.sim_sid),
                    csv_field(r.account_sid.unwrap_or_default()),
                    r.active_days,
                    at_end(r.active_at_end)
                ));
            }
            text
        }
        ReportFormat::Table if records.is_empty() => format!("No SIM known in {range}.\n"),
        ReportFormat::Table => {
            let mut table = Table::new(&[
                ("SIM", Align::Left),
                ("ACCOUNT", Align::Left),
                ("ACTIVE DAYS", Align::Right),
                ("ACTIVE AT END", Align::Left),
            ]);
            for r in &records {
                table.row(vec![
                    r.sim_sid.to_owned(),
                    r.account_sid.unwrap_or("-").to_owned(),
                    r.active_days.to_string(),
                    r.active_at_end
                        .map(|v| if v { "yes" } else { "no" })
                        .unwrap_or("unknown")
                        .to_owned(),
                ]);
            }
            let sim_days: usize = records.iter().map(|r| r.active_days).sum();
            table.footer(vec![
                counted(records.len(), "SIM", "SIMs"),
                String::new(),
                sim_days.to_string(),
                String::new(),
            ]);
            table.render()
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}
