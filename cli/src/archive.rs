//! `kore-usage archive`: seal settled days into the archive, verify the archive against the
//! ledger, show what is sealed. The work is `kore_ingest_aws::archive`'s, as the archiver
//! function's; the archive is where `ARCHIVE_URL` says (a folder by default).

use std::process::ExitCode;

use chrono::{NaiveDate, Utc};

use kore_ingest_aws::archive::{Archiver, mark_settle_time, settled_at};
use kore_ingest_aws::ledger::UsageLedger;

use crate::args::{Format, RangeArgs, parse_duration, parse_z_time};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{json, print};
use crate::source::archive_store;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seal a settled day into the archive.
    Seal(SealArgs),
    /// Check the archive against the ledger; exit 1 on any difference.
    Verify(VerifyArgs),
    /// The sealed days, from their manifests.
    Status(StatusArgs),
    /// Take an archived day in again: its events are stored, not quarantined.
    Reopen(ReopenArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReopenArgs {
    /// The UTC day, e.g. 2024-11-03.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub day: NaiveDate,
    /// Reopen a day whose event records may have expired (LEDGER_RETENTION_DAYS): an event
    /// delivered again is then stored again, and counted twice if its first copy expired.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("days").required(true).args(["day", "start"])))]
pub struct SealArgs {
    /// The UTC day, e.g. 2024-11-03.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub day: Option<NaiveDate>,
    /// The first day of a range to seal (midnight UTC, with --end).
    #[arg(long, value_name = "TIME", value_parser = parse_z_time, requires = "end")]
    pub start: Option<chrono::DateTime<Utc>>,
    /// The end of the range, excluded (midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_z_time, requires = "start")]
    pub end: Option<chrono::DateTime<Utc>>,
    /// A final seal: the day is archived.
    #[arg(long = "final")]
    pub is_final: bool,
    /// Seal a day before it is settled, or again after a final seal.
    #[arg(long)]
    pub force: bool,
    /// With --final: how long to wait after marking the days archived, for the functions to
    /// see it (default: their CLOSED_PERIODS_TTL_MS plus 150 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "is_final")]
    pub settle: Option<std::time::Duration>,
}

pub async fn run(ledger: &UsageLedger, command: Command) -> Result<ExitCode> {
    let store = archive_store().await?;
    let archiver = Archiver {
        ledger,
        store: &store,
    };
    match command {
        Command::Seal(args) => seal(&archiver, args).await,
        Command::Verify(args) => verify(&archiver, args).await,
        Command::Status(args) => status(&archiver, args).await,
        Command::Reopen(args) => reopen(&archiver, args).await,
    }
}

async fn seal(archiver: &Archiver<'_>, args: SealArgs) -> Result<ExitCode> {
    let days = match (args.day, args.start, args.end) {
        (Some(day), _, _) => vec![day],
        (None, Some(start), Some(end)) => RangeArgs { start, end }.whole_days()?.days(),
        _ => return Err(Failure::Usage("give --day, or --start and --end".into())),
    };
    let seal_after_days = archiver.ledger.table().config().retention.seal_after_days;
    for day in &days {
        let settled = settled_at(*day, seal_after_days);
        if Utc::now() < settled && !args.force {
            return Err(Failure::Failed(format!(
                "{day} is settled from {settled}: seal it then, or pass --force"
            )));
        }
        // A final seal is what readers take for the day; sealing it again from a ledger
        // that may have lost records since is the operator's decision.
        let sealed_finally = archiver
            .manifest(*day)
            .await
            .or_fail(archiver.ledger)?
            .is_some_and(|m| m.is_final);
        if sealed_finally && !args.force {
            return Err(Failure::Failed(format!(
                "{day} is sealed finally already: pass --force to seal it again from the ledger"
            )));
        }
    }
    let results = if args.is_final {
        let settle = match args.settle {
            Some(settle) => settle,
            None => mark_settle_time(archiver.ledger.table().config().closed_periods_ttl),
        };
        if !settle.is_zero() {
            eprintln!(
                "Marked archived; waiting {} s for the functions to see it.",
                settle.as_secs()
            );
        }
        archiver
            .seal_finally(&days, settle)
            .await
            .or_fail(archiver.ledger)?
    } else {
        let mut results = Vec::new();
        for day in &days {
            results.push((*day, archiver.seal(*day).await));
        }
        results
    };
    for (day, sealed) in results {
        let sealed = sealed.or_fail(archiver.ledger)?;
        print(&format!(
            "Sealed {day}{}: {} usage events, {} other events, {} rollups; digest {}.\n",
            if sealed.is_final { " finally" } else { "" },
            sealed.usage_events.rows,
            sealed.other_events.rows,
            sealed.usage_rollups.rows,
            sealed.usage_events.digest
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON keys are a contract.
#[derive(Debug, serde::Serialize)]
struct VerifyJson {
    days: usize,
    problems: Vec<String>,
}

async fn verify(archiver: &Archiver<'_>, args: VerifyArgs) -> Result<ExitCode> {
    let days = args.range.whole_days()?.days();
    let mut problems = Vec::new();
    for day in &days {
        problems.extend(archiver.verify(*day).await.or_fail(archiver.ledger)?);
    }
    let text = match args.format {
        Format::Json => json(&VerifyJson {
            days: days.len(),
            problems: problems.clone(),
        })?,
        Format::Table if problems.is_empty() => format!(
            "Verified {} days: the archive holds exactly the ledger's events.\n",
            days.len()
        ),
        Format::Table => problems.iter().map(|p| format!("{p}\n")).collect(),
    };
    print(&text)?;
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::Failed(format!(
            "{} differences between the archive and the ledger",
            problems.len()
        )))
    }
}

/// One sealed day; the JSON keys are a contract.
#[derive(Debug, serde::Serialize)]
struct DayStatus {
    day: String,
    #[serde(rename = "final")]
    is_final: bool,
    usage_events: u64,
    other_events: u64,
    usage_rollups: u64,
    parts: usize,
}

async fn status(archiver: &Archiver<'_>, args: StatusArgs) -> Result<ExitCode> {
    let days: Vec<DayStatus> = archiver
        .manifests()
        .await
        .or_fail(archiver.ledger)?
        .into_iter()
        .map(|m| DayStatus {
            parts: m.usage_events.parts.len()
                + m.other_events.parts.len()
                + m.usage_rollups.parts.len(),
            day: m.day,
            is_final: m.is_final,
            usage_events: m.usage_events.rows,
            other_events: m.other_events.rows,
            usage_rollups: m.usage_rollups.rows,
        })
        .collect();
    let text = match args.format {
        Format::Json => json(&days)?,
        Format::Table => {
            let mut text = format!(
                "{:<10}  {:<5}  {:>12}  {:>12}  {:>8}  {:>5}\n",
                "day", "final", "usage events", "other events", "rollups", "parts"
            );
            for d in &days {
                text += &format!(
                    "{:<10}  {:<5}  {:>12}  {:>12}  {:>8}  {:>5}\n",
                    d.day,
                    if d.is_final { "yes" } else { "no" },
                    d.usage_events,
                    d.other_events,
                    d.usage_rollups,
                    d.parts
                );
            }
            text
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

async fn reopen(archiver: &Archiver<'_>, args: ReopenArgs) -> Result<ExitCode> {
    let ledger = archiver.ledger;
    let retention = ledger.table().config().retention;
    if retention.may_have_expired(args.day, Utc::now()) && !args.force {
        return Err(Failure::Failed(format!(
            "{} may have event records expired from the ledger (LEDGER_RETENTION_DAYS): an event delivered again would be counted twice; pass --force to reopen it anyway",
            args.day
        )));
    }
    ledger
        .archived_days()
        .unmark(args.day)
        .await
        .or_fail(ledger)?;
    print(&format!(
        "Reopened {}: its events are stored again once the functions' copy of the archived days is renewed (CLOSED_PERIODS_TTL_MS); its final seal stays what readers take until the day is sealed again.\n",
        args.day
    ))?;
    Ok(ExitCode::SUCCESS)
}
