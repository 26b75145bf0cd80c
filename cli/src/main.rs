//! `kore-usage`: the operator's tool for the usage ledger. Usage records as UsageRecords
//! answers them, rollups rebuilt from the events, reports per SIM, a self-contained HTML
//! report of a period, data sessions and their
//! gaps, migration reconciliation between KORE and Twilio, replay of CloudEvent
//! archives, the quarantine (list, show, redrive), SIM statuses and active SIM-days from the
//! callbacks, alert rules and the alerts they raised, customers, zones and plans, invoice
//! lines and their push to Stripe or Lago, and signed test requests to a webhook.
//! Every write goes through the same shared path as the Lambda functions, so replays and
//! redrives are exactly once too.
//!
//! Exit codes: 0 success, 1 failure (one plain sentence on stderr), 2 wrong usage.

mod alerts;
mod archive;
mod args;
mod callbacks;
mod close;
mod compare;
mod customers;
mod evidence;
mod failure;
mod invoice;
mod output;
mod push;
mod quarantine;
mod rebuild;
mod reconcile;
mod replay;
mod report;
mod report_html;
mod send;
mod sessions;
mod sims;
mod source;
mod usage;

use std::process::ExitCode;

use aws_sdk_dynamodb::Client;
use clap::{CommandFactory, Parser, Subcommand};
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};
use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_core::config::Env;

use failure::Failure;

const EXAMPLES: &str = "\
Examples:
  kore-usage usage --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --group sim
  kore-usage usage --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --granularity hour --group network
  kore-usage rebuild --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --check
  kore-usage close --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage usage --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --closed --group sim
  kore-usage evidence --sim HS11112222333344445555666677778888 --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage compare --usage-records november.json
  kore-usage report --period 2024-11 --table kore-usage-ledger
  kore-usage report --period 2024-11-03 --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9 --format csv
  kore-usage report-html --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --out november.html
  kore-usage sessions --sim HS11112222333344445555666677778888 --gaps
  kore-usage reconcile --from 2024-11-01T00:00:00Z --to 2024-11-08T00:00:00Z
  kore-usage replay kinesis-export-2024-11-03.jsonl
  kore-usage sims status --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9
  kore-usage sims active --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --format csv
  kore-usage callbacks redrive --event-bus kore-ingest-callbacks
  kore-usage alerts apply rules.json
  kore-usage alerts list --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage customers apply customers.csv
  kore-usage zones apply zones.json
  kore-usage plans apply plans.json
  kore-usage usage --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --group customer
  kore-usage invoice --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage push --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --to stripe
  kore-usage quarantine list
  kore-usage quarantine redrive
  kore-usage send --secret \"$KORE_SECRET\" --body batch.json https://xyz.lambda-url.eu-west-1.on.aws/events

The table comes from --table or TABLE_NAME. AWS configuration is read the standard way
(AWS_PROFILE, AWS_REGION, credentials), and AWS_ENDPOINT_URL_DYNAMODB points the tool at a
local DynamoDB, e.g. http://127.0.0.1:8000.

Exit codes: 0 success, 1 failure, 2 wrong usage.";

/// Usage reports, reconciliation, replay and quarantine for the KORE/Twilio Super SIM usage
/// ledger on DynamoDB, and signed test requests to its webhook.
#[derive(Debug, Parser)]
#[command(name = "kore-usage", version, after_help = EXAMPLES)]
struct Cli {
    /// The ledger's DynamoDB table.
    #[arg(long, env = "TABLE_NAME", global = true, value_name = "TABLE")]
    table: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Ledger(LedgerCommand),
    Send(send::Args),
}

/// The commands that read or write the ledger (they need its table).
#[derive(Debug, Subcommand)]
enum LedgerCommand {
    Usage(usage::Args),
    Rebuild(rebuild::Args),
    Close(close::CloseArgs),
    Adjustments(close::AdjustmentsArgs),
    VerifyClose(close::VerifyArgs),
    Evidence(evidence::EvidenceArgs),
    Export(evidence::ExportArgs),
    Compare(compare::Args),
    Report(report::Args),
    ReportHtml(report_html::Args),
    Sessions(sessions::Args),
    Reconcile(reconcile::Args),
    Replay(replay::Args),
    #[command(subcommand)]
    Quarantine(quarantine::Command),
    #[command(subcommand)]
    Sims(sims::Command),
    #[command(subcommand)]
    Callbacks(callbacks::Command),
    #[command(subcommand)]
    Alerts(alerts::Command),
    #[command(subcommand)]
    Customers(customers::CustomersCommand),
    #[command(subcommand)]
    Zones(customers::ZonesCommand),
    #[command(subcommand)]
    Plans(customers::PlansCommand),
    Invoice(invoice::Args),
    Push(push::Args),
    #[command(subcommand)]
    Archive(archive::Command),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => send::run(args).await,
        Command::Ledger(command) => {
            let Some(table) = cli.table.as_deref().filter(|t| !t.trim().is_empty()) else {
                usage_error("no table given: pass --table TABLE or set TABLE_NAME");
            };
            run(&ledger(table).await, command).await
        }
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(message)) => usage_error(&message),
        Err(Failure::Failed(message)) => {
            eprintln!("error: {}", failure::sentence(&message));
            ExitCode::from(1)
        }
    }
}

async fn run(ledger: &UsageLedger, command: LedgerCommand) -> failure::Result<ExitCode> {
    match command {
        LedgerCommand::Usage(args) => usage::run(ledger, args).await,
        LedgerCommand::Rebuild(args) => rebuild::run(ledger, args).await,
        LedgerCommand::Close(args) => close::close(ledger, args).await,
        LedgerCommand::Adjustments(args) => close::adjustments(ledger, args).await,
        LedgerCommand::VerifyClose(args) => close::verify(ledger, args).await,
        LedgerCommand::Evidence(args) => evidence::evidence(ledger, args).await,
        LedgerCommand::Export(args) => evidence::export(ledger, args).await,
        LedgerCommand::Compare(args) => compare::run(ledger, args).await,
        LedgerCommand::Report(args) => report::run(ledger, args).await,
        LedgerCommand::ReportHtml(args) => report_html::run(ledger, args).await,
        LedgerCommand::Sessions(args) => sessions::run(ledger, args).await,
        LedgerCommand::Reconcile(args) => reconcile::run(ledger, args).await,
        LedgerCommand::Replay(args) => replay::run(ledger, args).await,
        LedgerCommand::Quarantine(command) => quarantine::run(ledger, command).await,
        LedgerCommand::Sims(command) => sims::run(ledger, command).await,
        LedgerCommand::Callbacks(command) => callbacks::run(ledger, command).await,
        LedgerCommand::Customers(command) => customers::customers(ledger, command).await,
        LedgerCommand::Zones(command) => customers::zones(ledger, command).await,
        LedgerCommand::Plans(command) => customers::plans(ledger, command).await,
        LedgerCommand::Alerts(command) => alerts::run(ledger, command).await,
        LedgerCommand::Invoice(args) => invoice::run(ledger, args).await,
        LedgerCommand::Push(args) => push::run(ledger, args).await,
        LedgerCommand::Archive(command) => archive::run(ledger, command).await,
    }
}

/// Wrong usage found after parsing: clap's format and exit code 2.
fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, message)
        .exit()
}

/// The ledger with a tool's AWS configuration (profiles, region, the
/// `AWS_ENDPOINT_URL_DYNAMODB` of a local stack; see [`sdk_config`]). What `replay` and
/// `quarantine redrive` store expires as the functions' writes do (`LEDGER_RETENTION_DAYS`).
async fn ledger(table: &str) -> UsageLedger {
    let config = sdk_config(Caller::Tool).await;
    let ledger = LedgerConfig::for_tool(table, &Env::process())
        .unwrap_or_else(|error| usage_error(&error.to_string()));
    UsageLedger::new(Client::new(&config), ledger)
}
