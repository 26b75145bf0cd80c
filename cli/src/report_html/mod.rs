//! `kore-usage report-html`: the period as one self-contained HTML page that billing and
//! operations staff can open, print and attach to a ticket. The cells are read once, the way
//! `usage` reads them (or from a closed snapshot, its hash checked); [`model`] turns them
//! into figures with `usage`'s own queries, [`render`] turns the figures into the page.

mod model;
mod render;
mod svg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use clap::ValueEnum;
use kore_ingest_aws::ledger::{CellNames, UsageLedger};
use kore_ingest_core::closes::snapshot_cells;
use kore_ingest_core::time::{TimeRange, z_time};
use kore_ingest_core::usage::{Granularity, UsageFilters, UsageQuery};

use crate::args::RangeArgs;
use crate::close::closed;
use crate::customers::attributes_for;
use crate::failure::{Failure, OrFail, Result};
use crate::output::print;
use model::{Buckets, Dimension, Heading, Scope, Source};

const EXAMPLES: &str = "\
Examples:
  kore-usage report-html --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --out november.html
  kore-usage report-html --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --group network \\
      --home-country DE,AT --out - > day.html
  kore-usage report-html --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --closed \\
      --account AC0a1b2c3d4e5f60718293a4b5c6d7e8f9 --title 'Acme, November' --out acme.html

Usage over time is per hour for ranges of up to two days, else per day (then --start and
--end are at midnight UTC). With --closed the figures are the closed period's snapshot, as
invoiced. The page runs no script and loads nothing; its figures are also embedded as JSON
(<script type=\"application/json\" id=\"kore-usage-report\">). With SOURCE_DATE_EPOCH set,
the same ledger gives the same bytes.";

/// Ranges up to this long are drawn per hour.
const HOURLY_UP_TO: Duration = Duration::hours(48);

/// The period as one self-contained HTML page: totals, usage over time by a dimension, each
/// value's share, the top SIMs, countries and networks, sessions with gaps, alerts.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Where to write the page (written whole, then renamed into place), or `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub out: String,
    /// The dimension usage is split by in the charts and the share table.
    #[arg(long, value_enum, default_value_t = ReportGroup::Fleet)]
    pub group: ReportGroup,
    /// Only usage booked to this account (AC...).
    #[arg(long, value_name = "AC..")]
    pub account: Option<String>,
    /// Only usage booked to this fleet when it happened (HF...).
    #[arg(long, value_name = "HF..")]
    pub fleet: Option<String>,
    /// Only usage in this country (ISO 3166 alpha-2, e.g. DE).
    #[arg(long = "iso-country", value_name = "CC")]
    pub iso_country: Option<String>,
    /// How many SIMs the top list shows.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top: u16,
    /// The home countries (ISO alpha-2, comma-separated): usage elsewhere is roaming.
    #[arg(long = "home-country", value_name = "CC[,CC..]", value_delimiter = ',')]
    pub home_country: Vec<String>,
    /// Report the closed period from --start to --end from its snapshot (see `kore-usage close`).
    #[arg(long)]
    pub closed: bool,
    /// The page's title.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportGroup {
    Fleet,
    Network,
    IsoCountry,
    Customer,
    Zone,
}

impl Args {
    fn scope(&self) -> Result<Scope> {
        let range = self.range.whole_hours()?;
        let buckets = if self.closed {
            None
        } else if range.end() - range.start() <= HOURLY_UP_TO {
            Some(Buckets::Hour)
        } else if range.is_whole_days() {
            Some(Buckets::Day)
        } else {
            return Err(Failure::Usage(
                "a range over two days is drawn per day: --start and --end must be at midnight UTC"
                    .into(),
            ));
        };
        let mut home_countries = Vec::new();
        for code in &self.home_country {
            let code = code.trim().to_ascii_uppercase();
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Failure::Usage(format!(
                    "--home-country: `{code}` is not an ISO 3166 alpha-2 code such as DE"
                )));
            }
            home_countries.push(code);
        }
        Ok(Scope {
            range,
            buckets,
            group: match self.group {
                ReportGroup::Fleet => Dimension::Fleet,
                ReportGroup::Network => Dimension::Network,
                ReportGroup::IsoCountry => Dimension::IsoCountry,
                ReportGroup::Customer => Dimension::Customer,
                ReportGroup::Zone => Dimension::Zone,
            },
            filters: UsageFilters {
                account_sid: self.account.clone(),
                fleet_sid: self.fleet.clone(),
                iso_country: self.iso_country.clone(),
                ..UsageFilters::default()
            },
            top: usize::from(self.top),
            home_countries,
            customers: None,
            zones: None,
        })
    }
}

/// When the page says it was made: `SOURCE_DATE_EPOCH` (reproducible builds' convention)
/// when set, else now.
fn generated_at() -> Result<String> {
    let Ok(text) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(z_time(Utc::now()));
    };
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, 0))
        .map(z_time)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "SOURCE_DATE_EPOCH: `{text}` is not a number of seconds since 1970"
            ))
        })
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let mut scope = args.scope()?;
    let generated_at = generated_at()?;
    let (by_customer, by_zone) = (
        scope.group == Dimension::Customer,
        scope.group == Dimension::Zone,
    );
    if args.closed && (by_customer || by_zone) {
        return Err(Failure::Usage(
            "--closed reports the snapshot's bookings: group customers and zones live".into(),
        ));
    }
    let (cells, source) = if args.closed {
        let close = closed(ledger, args.account.as_deref(), scope.range).await?;
        let lines = ledger.closes().snapshot(&close).await.or_fail(ledger)?;
        // `snapshot` checked the lines against this hash: a close without one has no lines.
        let snapshot_sha256 = close.snapshot_sha256.clone().ok_or_else(|| {
            Failure::Failed(format!("the close {} has no snapshot hash", close.id()))
        })?;
        let source = Source::Closed {
            snapshot_sha256,
            closed_at: close.closed_at.clone(),
        };
        (snapshot_cells(&close, &lines), source)
    } else {
        let granularity = scope.buckets.map_or(Granularity::All, Buckets::granularity);
        let mut query = UsageQuery::new(
            scope.range.start(),
            scope.range.end(),
            granularity,
            None,
            scope.filters.clone(),
        )
        .map_err(|e| Failure::Usage(e.to_string()))?;
        let attributes = attributes_for(ledger, &mut query, by_customer, by_zone).await?;
        (scope.customers, scope.zones) = (attributes.customers, attributes.zones);
        let cells = ledger
            .rollups()
            .cells(&query, CellNames::All)
            .await
            .or_fail(ledger)?;
        (cells, Source::Ledger)
    };
    let alerts = ledger
        .alerts()
        .list(&scope.range, None)
        .await
        .or_fail(ledger)?;
    let heading = Heading {
        title: args
            .title
            .clone()
            .unwrap_or_else(|| default_title(&scope.range)),
        generated_at,
        source,
    };
    let mut figures = model::figures(&scope, heading, &cells, &alerts)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let mut sessions = Vec::new();
    for sim in &figures.top_sims {
        sessions.extend(
            ledger
                .events()
                .sessions(&sim.sim_sid)
                .await
                .or_fail(ledger)?,
        );
    }
    figures.sessions_with_gaps = model::gap_sessions(&scope, &sessions);
    let page = render::page(&figures)
        .map_err(|e| Failure::Failed(format!("cannot write the report's JSON: {e}")))?;
    if args.out == "-" {
        print(&page)?;
    } else {
        let path = PathBuf::from(&args.out);
        write_atomically(&path, page.as_bytes())
            .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))?;
        print(&format!(
            "Wrote {} ({} bytes).\n",
            path.display(),
            page.len()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn default_title(range: &TimeRange) -> String {
    format!(
        "Super SIM usage, {} to {}",
        z_time(range.start()),
        z_time(range.end())
    )
}

/// Writes a sibling file, then renames it over `path`: a reader sees the old page or the
/// new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut temporary = name.to_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    // A new file only: never through a link someone left at the temporary name (and what
    // is there already is not ours to remove).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests;
