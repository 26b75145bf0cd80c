//! `kore-usage reconcile`: during the migration overlap, which events both providers
//! delivered and which only one did.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::time::TimeRange;
use serde::Serialize;

use crate::args::Format;
use crate::failure::{Failure, Result};
use crate::output::{json, print};
use crate::source::{DaySource, Source};

const EXAMPLES: &str = "\
Examples:
  kore-usage reconcile --from 2024-11-01T00:00:00Z --to 2024-11-08T00:00:00Z
  kore-usage reconcile --from 2024-11-03T10:00:00+01:00 --to 2024-11-03T12:00:00+01:00 --format json

Events are selected by their event time, from --from (included) to --to (excluded). An event
counts for a provider whatever the path (Kinesis, webhook, replay) it came through. With
--source archive, every day a usage event of the range can be booked on (from the day before
--from to the day after --to) must be sealed finally.";

/// Which events of a time range both KORE and Twilio delivered, and which only one did.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Start of the range, included (RFC 3339, e.g. 2024-11-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub from: DateTime<Utc>,
    /// End of the range, excluded (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub to: DateTime<Utc>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Where each day's events are read: auto (the archive for a day sealed finally),
    /// ledger or archive.
    #[arg(long, value_enum, default_value_t)]
    pub source: Source,
}

fn parse_time(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 time such as 2024-11-01T00:00:00Z ({e})"))
}

/// The JSON keys are a contract.
#[derive(Debug, Default, Serialize)]
struct Reconciliation {
    both: u64,
    only_twilio: Vec<String>,
    only_kore: Vec<String>,
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let range = TimeRange::new(args.from, args.to)
        .map_err(|_| Failure::Usage("--from must be earlier than --to".to_owned()))?;
    let days = DaySource::new(ledger, args.source, &range.booking_days()).await?;
    let events = days.delivered_between(range).await?;
    let mut result = Reconciliation::default();
    for event in &events {
        match (event.delivered_by("kore"), event.delivered_by("twilio")) {
            (true, true) => result.both += 1,
            (false, true) => result.only_twilio.push(event.event_sid.clone()),
            (true, false) => result.only_kore.push(event.event_sid.clone()),
            (false, false) => {}
        }
    }
    result.only_twilio.sort();
    result.only_kore.sort();

    let text = match args.format {
        Format::Json => json(&result)?,
        Format::Table => {
            let mut out = format!(
                "Events from {} to {}: {}\nDelivered by both KORE and Twilio: {}\n",
                args.from.to_rfc3339(),
                args.to.to_rfc3339(),
                events.len(),
                result.both
            );
            for (name, sids) in [
                ("Only Twilio", &result.only_twilio),
                ("Only KORE", &result.only_kore),
            ] {
                out.push_str(&format!("{name}: {}\n", sids.len()));
                for sid in sids {
                    out.push_str(&format!("  {sid}\n"));
                }
            }
            out
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}
