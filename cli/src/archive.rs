//! `kore-usage archive seal`: a settled day's usage events, read back from the ledger as
//! `export` reads them, written to the archive as Parquet parts and a manifest written last
//! (`kore_ingest_archive`). The archive is a folder (`ARCHIVE_URL`, `file://...`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{Duration, NaiveDate, Utc};
use std::collections::BTreeMap;

use kore_ingest_archive::{ArchiveRow, BookingKey, Manifest, manifest, write_parts};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::time::midnight;

use crate::args::{Format, RangeArgs, parse_z_time};
use crate::failure::{Failure, OrFail, Result};
use crate::output::{json, print};

/// Rows per part: about 25 MB of Parquet at the bench's shape, few objects per day.
const ROWS_PER_PART: usize = 100_000;
/// Days after a day before it is settled enough to seal (`ArchiveSealAfterDays`).
const SEAL_AFTER_DAYS: i64 = 3;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seal a settled day into the archive.
    Seal(SealArgs),
    /// Check the archive against the ledger; exit 1 on any difference.
    Verify(VerifyArgs),
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
    /// Seal before the day is settled.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(ledger: &UsageLedger, command: Command) -> Result<ExitCode> {
    match command {
        Command::Seal(args) => seal(ledger, args).await,
        Command::Verify(args) => verify(ledger, args).await,
    }
}

/// The archive's folder, from `ARCHIVE_URL` (`file://` only here).
fn archive_root() -> Result<PathBuf> {
    let url = std::env::var("ARCHIVE_URL").unwrap_or_else(|_| "file://.local/archive".into());
    url.strip_prefix("file://")
        .map(PathBuf::from)
        .ok_or_else(|| Failure::Usage(format!("ARCHIVE_URL {url}: only file:// is read here")))
}

/// Writes `bytes` to `path` through a sibling file renamed over it: a reader sees the old
/// object or the new one, never half of one.
fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| Failure::Failed(format!("cannot write {}: {e}", path.display()));
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(fail)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)
}

async fn seal(ledger: &UsageLedger, args: SealArgs) -> Result<ExitCode> {
    let days = match (args.day, args.start, args.end) {
        (Some(day), _, _) => vec![day],
        (None, Some(start), Some(end)) => RangeArgs { start, end }.whole_days()?.days(),
        _ => return Err(Failure::Usage("give --day, or --start and --end".into())),
    };
    for day in days {
        seal_day(ledger, day, args.is_final, args.force).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Seals one day: its parts, then its manifest.
async fn seal_day(ledger: &UsageLedger, day: NaiveDate, is_final: bool, force: bool) -> Result<()> {
    let settled = midnight(day) + Duration::days(1 + SEAL_AFTER_DAYS);
    if Utc::now() < settled && !force {
        return Err(Failure::Failed(format!(
            "{day} is settled from {settled}: seal it then, or pass --force"
        )));
    }
    let rows = day_rows(ledger, day).await?;
    let parts = write_parts(&rows, ROWS_PER_PART).map_err(|e| Failure::Failed(e.to_string()))?;
    let root = archive_root()?;
    let folder = root.join(format!("usage_events/day={day}"));
    for part in &parts {
        put(&folder.join(&part.name), &part.bytes)?;
    }
    let sealed = manifest(day, is_final, &rows, &parts);
    put(
        &root.join(format!("manifests/day={day}.json")),
        sealed.to_json().as_bytes(),
    )?;
    print(&format!(
        "Sealed {day}: {} usage events in {} parts, digest {}.\n",
        sealed.rows,
        parts.len(),
        sealed.digest
    ))
}

/// A day's usage events as the archive holds them, in export order: SIM by SIM, each SIM's by
/// the end of their window, then sid.
async fn day_rows(ledger: &UsageLedger, day: NaiveDate) -> Result<Vec<ArchiveRow>> {
    let mut rows = Vec::new();
    for sim in ledger
        .rollups()
        .sims_with_usage(&[day])
        .await
        .or_fail(ledger)?
    {
        let mut of_sim = ledger
            .events()
            .of_sim(&sim, Some((day, day)))
            .await
            .or_fail(ledger)?;
        of_sim.retain(|(_, e)| e.booking_hour().date_naive() == day);
        of_sim.sort_by(|a, b| (a.1.booked_at, &a.1.key).cmp(&(b.1.booked_at, &b.1.key)));
        rows.extend(of_sim.iter().map(|(s, e)| ArchiveRow::of(s, e)));
    }
    Ok(rows)
}

/// The JSON keys are a contract.
#[derive(Debug, serde::Serialize)]
struct VerifyJson {
    days: usize,
    problems: Vec<String>,
}

async fn verify(ledger: &UsageLedger, args: VerifyArgs) -> Result<ExitCode> {
    let range = args.range.whole_days()?;
    let root = archive_root()?;
    let mut problems = Vec::new();
    let days = range.days();
    for day in &days {
        let path = root.join(format!("manifests/day={day}.json"));
        let Ok(stored) = std::fs::read_to_string(&path) else {
            problems.push(format!("{day}: not sealed ({} is missing)", path.display()));
            continue;
        };
        let Ok(sealed) = serde_json::from_str::<Manifest>(&stored) else {
            problems.push(format!("{day}: {} is not a manifest", path.display()));
            continue;
        };
        let is_final = sealed.is_final;
        let rows = day_rows(ledger, *day).await?;
        let parts =
            write_parts(&rows, ROWS_PER_PART).map_err(|e| Failure::Failed(e.to_string()))?;
        let expected = manifest(*day, is_final, &rows, &parts);
        if expected.to_json() != stored {
            problems.push(format!(
                "{day}: the manifest is not the ledger's events ({} rows in the ledger, digest {})",
                expected.rows, expected.digest
            ));
        }
        for part in &parts {
            let file = root.join(format!("usage_events/day={day}/{}", part.name));
            if std::fs::read(&file).ok().as_deref() != Some(part.bytes.as_slice()) {
                problems.push(format!(
                    "{day}: {} is not what the ledger's events give",
                    part.name
                ));
            }
        }
        let mut rollups: BTreeMap<BookingKey, (u64, u64)> = BTreeMap::new();
        for rollup in ledger
            .rollups()
            .of_days(&[*day], None, true, None)
            .await
            .or_fail(ledger)?
        {
            let b = rollup.booking;
            let key = [
                b.account_sid,
                Some(b.sim_sid),
                b.fleet_sid,
                b.network_sid,
                b.iso_country,
            ];
            let total = rollup.day_total.unwrap_or_default();
            let sum = rollups.entry(key).or_default();
            *sum = (sum.0 + total.usage.total, sum.1 + total.events);
        }
        problems.extend(sealed.against_rollups(&rollups));
    }
    let text = match args.format {
        Format::Json => json(&VerifyJson {
            days: days.len(),
            problems: problems.clone(),
        })?,
        Format::Table if problems.is_empty() => {
            format!(
                "Verified {} days: the archive holds exactly the ledger's usage events.\n",
                days.len()
            )
        }
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
