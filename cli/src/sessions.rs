//! `kore-usage sessions`: a SIM's data sessions, and the ones whose windows do not add up.

use std::process::ExitCode;

use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::event::DataVolume;
use kore_ingest_core::usage::{SessionSummary, sessions_of};
use serde::Serialize;

use crate::args::Format;
use crate::failure::Result;
use crate::output::{Align, Table, human_bytes, json, print};
use crate::source::{DaySource, Source};

const EXAMPLES: &str = "\
Examples:
  kore-usage sessions --sim HS11112222333344445555666677778888
  kore-usage sessions --sim HS11112222333344445555666677778888 --gaps --format json

RECEIVED is the sum of the usage windows stored (updated and ended events), CUMULATIVE the
highest running total the provider reported. A session whose windows do not add up to its
cumulative total has a gap: a usage event was lost or has not arrived yet.";

/// A SIM's data sessions: the windows received and the provider's cumulative totals.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The SIM (HS...).
    #[arg(long, value_name = "HS..")]
    pub sim: String,
    /// Only sessions whose windows do not add up to the cumulative total.
    #[arg(long)]
    pub gaps: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Where each day's events are read: auto (the archive for a day sealed finally),
    /// ledger or archive.
    #[arg(long, value_enum, default_value_t)]
    pub source: Source,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Volume {
    upload: u64,
    download: u64,
    total: u64,
}

impl From<DataVolume> for Volume {
    fn from(v: DataVolume) -> Self {
        Volume {
            upload: v.upload,
            download: v.download,
            total: v.total,
        }
    }
}

#[derive(Debug, Serialize)]
struct SessionJson<'a> {
    sim_sid: &'a str,
    session_sid: &'a str,
    start_time: Option<&'a str>,
    end_time: Option<&'a str>,
    windows_received: u64,
    received: Volume,
    cumulative: Option<Volume>,
    /// Cumulative total minus the windows received (negative if the windows exceed it).
    missing_bytes: Option<i128>,
    has_gap: bool,
}

fn missing(session: &SessionSummary) -> Option<i128> {
    session
        .cumulative
        .map(|c| i128::from(c.total) - i128::from(session.windows.total))
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    let days = DaySource::of_sim(ledger, args.source, &args.sim).await?;
    let events = days.usage_of_sim(&args.sim, None).await?;
    let mut sessions = sessions_of(&args.sim, events.iter().map(|(_, e)| e))?;
    if args.gaps {
        sessions.retain(SessionSummary::has_gap);
    }
    sessions.sort_by(|a, b| {
        (a.start_time.is_none(), &a.start_time, &a.session_sid).cmp(&(
            b.start_time.is_none(),
            &b.start_time,
            &b.session_sid,
        ))
    });
    let text = match args.format {
        Format::Json => json(
            &sessions
                .iter()
                .map(|s| SessionJson {
                    sim_sid: &s.sim_sid,
                    session_sid: &s.session_sid,
                    start_time: s.start_time.as_deref(),
                    end_time: s.end_time.as_deref(),
                    windows_received: s.windows_received,
                    received: s.windows.into(),
                    cumulative: s.cumulative.map(Volume::from),
                    missing_bytes: missing(s),
                    has_gap: s.has_gap(),
                })
                .collect::<Vec<_>>(),
        )?,
        Format::Table if sessions.is_empty() => {
            if args.gaps {
                format!("No data session of {} has a gap.\n", args.sim)
            } else {
                format!("No data sessions recorded for {}.\n", args.sim)
            }
        }
        Format::Table => table(&sessions),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn table(sessions: &[SessionSummary]) -> String {
    let mut table = Table::new(&[
        ("SESSION", Align::Left),
        ("STARTED", Align::Left),
        ("ENDED", Align::Left),
        ("WINDOWS", Align::Right),
        ("RECEIVED", Align::Right),
        ("CUMULATIVE", Align::Right),
        ("GAP", Align::Left),
    ]);
    for session in sessions {
        let gap = match missing(session) {
            None => "-".to_owned(),
            Some(_) if !session.has_gap() => "no".to_owned(),
            Some(bytes) if bytes >= 0 => {
                format!(
                    "yes ({} missing)",
                    human_bytes(u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX))
                )
            }
            Some(bytes) => format!(
                "yes ({} extra)",
                human_bytes(u64::try_from(bytes.unsigned_abs()).unwrap_or(u64::MAX))
            ),
        };
        table.row(vec![
            session.session_sid.clone(),
            session.start_time.clone().unwrap_or_else(|| "-".into()),
            session.end_time.clone().unwrap_or_else(|| "-".into()),
            session.windows_received.to_string(),
            human_bytes(session.windows.total),
            session
                .cumulative
                .map_or_else(|| "-".into(), |c| human_bytes(c.total)),
            gap,
        ]);
    }
    table.render()
}
