//! `kore-usage callbacks`: the callbacks the forwarder could not put on the event bus, kept
//! in the ledger, listed and put on the bus again.

use std::process::ExitCode;
use std::time::Duration;

use kore_ingest_aws::bus::{EventBus, RetryPolicy, put_all};
use kore_ingest_aws::ledger::{Unforwarded, UsageLedger};
use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_core::forward::{ALERT_ID_PREFIX, alert_entry, bus_entry};
use kore_ingest_core::port::LedgerError;
use serde::Serialize;

use crate::args::Format;
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, counted, json, one_line, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage callbacks unforwarded
  kore-usage callbacks redrive --event-bus kore-ingest-callbacks

The forwarder puts every callback and alert the ledger stores on the stack's event bus; one
it could not put there after its retries stays in the ledger's redrive list (alerts by
`alert#<key>`). `redrive` puts each on
the bus with the same `id` (consumers de-duplicate on it) and takes it off the list; it exits
1 if any is still refused. The bus is the stack's EventBusName output; AWS_ENDPOINT_URL_EVENTBRIDGE
points the tool at a local emulator.";

/// Callbacks not yet on the event bus: list them, put them there.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum Command {
    /// The callbacks kept for redrive, with why they are not on the bus.
    Unforwarded(UnforwardedArgs),
    /// Put the callbacks kept for redrive on the event bus.
    Redrive(RedriveArgs),
}

#[derive(Debug, clap::Args)]
pub struct UnforwardedArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// The stack's event bus (its EventBusName output).
    #[arg(long, env = "EVENT_BUS_NAME", value_name = "NAME")]
    pub event_bus: String,
}

pub async fn run(ledger: &UsageLedger, command: Command) -> Result<ExitCode> {
    match command {
        Command::Unforwarded(args) => unforwarded(ledger, args).await,
        Command::Redrive(args) => redrive(ledger, args).await,
    }
}

#[derive(Debug, Serialize)]
struct Kept<'a> {
    id: &'a str,
    kept_at: &'a str,
    reason: &'a str,
}

async fn unforwarded(ledger: &UsageLedger, args: UnforwardedArgs) -> Result<ExitCode> {
    let kept = ledger.callbacks().unforwarded().await.or_fail(ledger)?;
    let records: Vec<Kept> = kept
        .iter()
        .map(|k: &Unforwarded| Kept {
            id: &k.id,
            kept_at: &k.kept_at,
            reason: &k.reason,
        })
        .collect();
    let text = match args.format {
        Format::Json => json(&records)?,
        Format::Table if records.is_empty() => "Every stored callback is on the bus.\n".into(),
        Format::Table => {
            let mut table = Table::new(&[
                ("CALLBACK", Align::Left),
                ("KEPT AT", Align::Left),
                ("REASON", Align::Left),
            ]);
            for r in &records {
                table.row(vec![
                    r.id.to_owned(),
                    r.kept_at.to_owned(),
                    one_line(r.reason),
                ]);
            }
            table.render()
                + &counted(records.len(), "callback", "callbacks")
                + " kept for redrive\n"
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

async fn redrive(ledger: &UsageLedger, args: RedriveArgs) -> Result<ExitCode> {
    let callbacks = ledger.callbacks();
    let kept = callbacks.unforwarded().await.or_fail(ledger)?;
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    let alerts = ledger.alerts();
    for k in &kept {
        let stored = match k.id.strip_prefix(ALERT_ID_PREFIX) {
            Some(alert_key) => alerts
                .by_key(alert_key)
                .await
                .map(|a| a.map(|a| alert_entry(&a))),
            None => callbacks
                .stored(&k.id)
                .await
                .map(|c| c.map(|c| bus_entry(&c))),
        };
        match stored {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => missing.push(format!("{}: not in the ledger", k.id)),
            // A record that does not decode stays kept; the others still go.
            Err(LedgerError::CorruptItem { reason, .. }) => {
                missing.push(format!("{}: its record does not decode ({reason})", k.id))
            }
            Err(error) => return Err(error).or_fail(ledger),
        }
    }
    let aws = sdk_config(Caller::Tool).await;
    let bus = EventBus::new(aws_sdk_eventbridge::Client::new(&aws), &args.event_bus);
    let policy = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(200),
    };
    let delivered = put_all(&bus, &entries, policy, None).await;
    let mut refused = Vec::new();
    for (entry, result) in entries.iter().zip(delivered.results) {
        match result {
            Ok(()) => callbacks.forwarded(&entry.id).await.or_fail(ledger)?,
            Err(reason) => refused.push(format!("{}: {reason}", entry.id)),
        }
    }
    let put = entries.len() - refused.len();
    print(&format!(
        "{} put on event bus {}; {} still kept\n",
        counted(put, "callback", "callbacks"),
        args.event_bus,
        refused.len() + missing.len()
    ))?;
    if refused.is_empty() && missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut reasons = refused;
    reasons.extend(
        missing
            .iter()
            .map(|id| format!("{id}: no such callback in the ledger")),
    );
    Err(Failure::Failed(format!(
        "not every kept callback is on the bus: {}",
        reasons.join("; ")
    )))
}
