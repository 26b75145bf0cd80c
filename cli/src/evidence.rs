//! `kore-usage evidence` (every usage event behind a SIM's usage, for a dispute) and
//! `kore-usage export` (every event of a range with its normalized fields, streamed, for a
//! billing system or Athena).

use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::event::{ConnectionEvent, ConnectionKind, DataVolume, KindName};
use kore_ingest_core::stored::StoredEvent;
use kore_ingest_core::time::{TimeRange, z_time};
use kore_ingest_core::usage::{Booking, HourUsage};
use serde::Serialize;

use crate::args::RangeArgs;
use crate::failure::{Failure, OrFail, Result};
use crate::output::{csv_field, json, print};
use crate::source::{DaySource, Source};

const EVIDENCE_EXAMPLES: &str = "\
Examples:
  kore-usage evidence --sim HS11112222333344445555666677778888 \\
      --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z
  kore-usage evidence --sim HS11112222333344445555666677778888 \\
      --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --format csv

Every usage event counted for the SIM in the range (booked by the hour its window ended), with
its window, bytes, booking, session, who delivered it and the hash of its stored data. The
total equals `kore-usage usage --sim` over the same range.";

/// Every usage event counted for a SIM in a range: the evidence behind an invoice line.
#[derive(Debug, clap::Args)]
#[command(after_help = EVIDENCE_EXAMPLES)]
pub struct EvidenceArgs {
    #[arg(long, value_name = "HS..")]
    pub sim: String,
    #[command(flatten)]
    pub range: RangeArgs,
    #[arg(long, value_enum, default_value_t = EvidenceFormat::Json)]
    pub format: EvidenceFormat,
    /// Where each day's events are read: auto (the archive for a day sealed finally),
    /// ledger or archive.
    #[arg(long, value_enum, default_value_t)]
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvidenceFormat {
    Json,
    Csv,
}

/// One counted event. The JSON keys are a contract.
#[derive(Debug, Serialize)]
struct EvidenceRow {
    event_sid: String,
    window_start: Option<String>,
    window_end: String,
    data_upload: u64,
    data_download: u64,
    data_total: u64,
    account_sid: Option<String>,
    fleet_sid: Option<String>,
    network_sid: Option<String>,
    iso_country: Option<String>,
    data_session_sid: Option<String>,
    deliveries: Vec<String>,
    data_sha256: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Total {
    data_upload: u64,
    data_download: u64,
    data_total: u64,
    usage_events: u64,
}

#[derive(Debug, Serialize)]
struct Evidence {
    sim_sid: String,
    start_time: String,
    end_time: String,
    events: Vec<EvidenceRow>,
    total: Total,
}

pub async fn evidence(ledger: &UsageLedger, args: EvidenceArgs) -> Result<ExitCode> {
    let range = args.range.whole_hours()?;
    let days = range.days();
    let source = DaySource::of_sim_on(ledger, args.source, &args.sim, &days).await?;
    let span = days.first().zip(days.last()).map(|(f, l)| (*f, *l));
    let mut counted = match span {
        Some(span) => source.usage_of_sim(&args.sim, Some(span)).await?,
        None => Vec::new(),
    };
    counted.retain(|(_, e)| e.usage.is_some() && range.contains(e.booking_hour()));
    let mut sum = HourUsage::default();
    let mut events = Vec::with_capacity(counted.len());
    for (stored, event) in counted {
        let usage = event.usage.unwrap_or_default();
        sum = sum.plus(HourUsage::window(usage), || {
            (format!("SIM {}", args.sim), range.to_string())
        })?;
        events.push(row(&stored, &event, usage));
    }
    let evidence = Evidence {
        sim_sid: args.sim.clone(),
        start_time: z_time(range.start()),
        end_time: z_time(range.end()),
        events,
        total: Total {
            data_upload: sum.usage.upload,
            data_download: sum.usage.download,
            data_total: sum.usage.total,
            usage_events: sum.events,
        },
    };
    let text = match args.format {
        EvidenceFormat::Json => json(&evidence)?,
        EvidenceFormat::Csv => {
            let mut out = String::from(CSV_HEADER);
            for r in &evidence.events {
                out.push_str(&csv_row(r));
            }
            let t = &evidence.total;
            out.push_str(&format!(
                "TOTAL,,,{},{},{},,,,,,{} events,\n",
                t.data_upload, t.data_download, t.data_total, t.usage_events
            ));
            out
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

const CSV_HEADER: &str = "event_sid,window_start,window_end,data_upload,data_download,data_total,account_sid,fleet_sid,network_sid,iso_country,data_session_sid,deliveries,data_sha256\n";

fn row(stored: &StoredEvent, event: &ConnectionEvent, usage: DataVolume) -> EvidenceRow {
    let booking = Booking::of(event);
    let session = event.session.as_ref();
    EvidenceRow {
        event_sid: event.key.as_str().to_owned(),
        window_start: session.and_then(|s| s.update_start_time).map(z_time),
        window_end: z_time(event.booked_at),
        data_upload: usage.upload,
        data_download: usage.download,
        data_total: usage.total,
        account_sid: event.account_sid.clone(),
        fleet_sid: event.fleet_sid.clone(),
        network_sid: booking.as_ref().and_then(|b| b.network_sid.clone()),
        iso_country: booking.and_then(|b| b.iso_country),
        data_session_sid: session.map(|s| s.sid.clone()),
        deliveries: stored.deliveries.clone(),
        data_sha256: stored.data_hash.map(|h| h.to_hex()),
    }
}

fn csv_row(r: &EvidenceRow) -> String {
    let text = |v: &Option<String>| csv_field(v.as_deref().unwrap_or_default());
    let mut deliveries = r.deliveries.clone();
    deliveries.sort();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        csv_field(&r.event_sid),
        text(&r.window_start),
        csv_field(&r.window_end),
        r.data_upload,
        r.data_download,
        r.data_total,
        text(&r.account_sid),
        text(&r.fleet_sid),
        text(&r.network_sid),
        text(&r.iso_country),
        text(&r.data_session_sid),
        csv_field(&deliveries.join(" ")),
        text(&r.data_sha256),
    )
}

const EXPORT_EXAMPLES: &str = "\
Examples:
  kore-usage export --start 2024-11-01T00:00:00Z --end 2024-12-01T00:00:00Z --format jsonl > november.jsonl
  kore-usage export --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --format csv
  kore-usage export --start 2024-11-03T00:00:00Z --end 2024-11-04T00:00:00Z --format jsonl --kind test

Every event of the range, one line each, written as it is read (memory does not grow with
the range): usage events booked in the range, SIM by SIM and day by day, then the events
without usage whose time is in the range. JSON lines carry the stored `data` too. --kind
keeps one kind: `test` for Event Streams test events (the one a portal's test sends),
`other` for types the parser does not know, else a Connection Event's suffix after
`supersim.connection.`, e.g. `data-session.updated`.";

/// Every event of a range with its normalized fields, streamed, for loading elsewhere.
#[derive(Debug, clap::Args)]
#[command(after_help = EXPORT_EXAMPLES)]
pub struct ExportArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Only events of this kind: test, other, or a Connection Event suffix such as
    /// data-session.updated.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<KindName>,
    /// Where each day's events are read: auto (the archive for a day sealed finally),
    /// ledger or archive.
    #[arg(long, value_enum, default_value_t)]
    pub source: Source,
}

/// A kind as the export's `kind` field names it.
fn parse_kind(text: &str) -> std::result::Result<KindName, String> {
    KindName::parse(text).ok_or_else(|| {
        let suffixes: Vec<&str> = ConnectionKind::ALL.iter().map(|k| k.suffix()).collect();
        format!("must be test, other or one of {}", suffixes.join(", "))
    })
}

/// Whether the export keeps `event`: any kind, or the one asked for.
fn kept(kind: Option<KindName>, event: &ConnectionEvent) -> bool {
    kind.is_none_or(|kind| KindName::of(&event.kind) == kind)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// One exported event. The JSON keys are a contract.
#[derive(Debug, Serialize)]
struct ExportRow<'a> {
    event_sid: &'a str,
    event_type: &'a str,
    kind: &'a str,
    event_time: String,
    booked_hour: Option<String>,
    account_sid: Option<&'a str>,
    sim_sid: Option<&'a str>,
    fleet_sid: Option<&'a str>,
    network_sid: Option<&'a str>,
    network_name: Option<&'a str>,
    iso_country: Option<&'a str>,
    data_session_sid: Option<&'a str>,
    window_start: Option<String>,
    window_end: Option<String>,
    data_upload: Option<u64>,
    data_download: Option<u64>,
    data_total: Option<u64>,
    deliveries: &'a [String],
    received_at: Option<&'a str>,
    data_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

const EXPORT_CSV_HEADER: &str = "event_sid,event_type,kind,event_time,booked_hour,account_sid,sim_sid,fleet_sid,network_sid,network_name,iso_country,data_session_sid,window_start,window_end,data_upload,data_download,data_total,deliveries,received_at,data_sha256\n";

fn export_line(
    stored: &StoredEvent,
    event: &ConnectionEvent,
    format: ExportFormat,
) -> Result<String> {
    let network = event.network.as_ref();
    let session = event.session.as_ref();
    // The stored data as one JSON value on the line (it may have arrived pretty-printed;
    // `data_sha256` is over its canonical form, whatever the spacing).
    let data = match format {
        ExportFormat::Jsonl => serde_json::from_str(&stored.data).ok(),
        ExportFormat::Csv => None,
    };
    let row = ExportRow {
        event_sid: event.key.as_str(),
        event_type: &event.event_type,
        kind: event.kind.name(),
        event_time: z_time(event.event_time),
        booked_hour: event.usage.map(|_| z_time(event.booking_hour())),
        account_sid: event.account_sid.as_deref(),
        sim_sid: event.sim_sid.as_deref(),
        fleet_sid: event.fleet_sid.as_deref(),
        network_sid: network.and_then(|n| n.sid.as_deref()),
        network_name: network.and_then(|n| n.friendly_name.as_deref()),
        iso_country: network.and_then(|n| n.iso_country.as_deref()),
        data_session_sid: session.map(|s| s.sid.as_str()),
        window_start: session.and_then(|s| s.update_start_time).map(z_time),
        window_end: event.usage.map(|_| z_time(event.booked_at)),
        data_upload: event.usage.map(|u| u.upload),
        data_download: event.usage.map(|u| u.download),
        data_total: event.usage.map(|u| u.total),
        deliveries: &stored.deliveries,
        received_at: stored.received_at.as_deref(),
        data_sha256: stored.data_hash.map(|h| h.to_hex()),
        data,
    };
    Ok(match format {
        ExportFormat::Jsonl => {
            serde_json::to_string(&row)
                .map_err(|e| Failure::Failed(format!("cannot write JSON: {e}")))?
                + "\n"
        }
        ExportFormat::Csv => {
            let text = |v: Option<&str>| csv_field(v.unwrap_or_default());
            let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
            [
                text(Some(row.event_sid)),
                text(Some(row.event_type)),
                text(Some(row.kind)),
                text(Some(&row.event_time)),
                text(row.booked_hour.as_deref()),
                text(row.account_sid),
                text(row.sim_sid),
                text(row.fleet_sid),
                text(row.network_sid),
                text(row.network_name),
                text(row.iso_country),
                text(row.data_session_sid),
                text(row.window_start.as_deref()),
                text(row.window_end.as_deref()),
                number(row.data_upload),
                number(row.data_download),
                number(row.data_total),
                csv_field(&row.deliveries.join(" ")),
                text(row.received_at),
                text(row.data_sha256.as_deref()),
            ]
            .join(",")
                + "\n"
        }
    })
}

/// Standard output, buffered; a closed pipe (`| head`) ends the export quietly.
struct Output<'a> {
    out: std::io::BufWriter<std::io::StdoutLock<'a>>,
}

impl Output<'_> {
    /// `false` when the reader went away.
    fn write(&mut self, text: &str) -> Result<bool> {
        match self.out.write_all(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Failure::Failed(format!(
                "cannot write to standard output: {e}"
            ))),
            Ok(()) => Ok(true),
        }
    }

    fn finish(mut self) -> Result<ExitCode> {
        match self.out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Failed(format!(
                "cannot write to standard output: {e}"
            ))),
            _ => Ok(ExitCode::SUCCESS),
        }
    }
}

pub async fn export(ledger: &UsageLedger, args: ExportArgs) -> Result<ExitCode> {
    let range = args.range.whole_hours()?;
    let kind = args.kind;
    // Where each day is read is settled before anything is printed.
    let days = DaySource::new(ledger, args.source, &range.days()).await?;
    let stdout = std::io::stdout();
    let mut out = Output {
        out: std::io::BufWriter::new(stdout.lock()),
    };
    if args.format == ExportFormat::Csv && !out.write(EXPORT_CSV_HEADER)? {
        return Ok(ExitCode::SUCCESS);
    }
    // Usage events are found through booking lists; the rest through the time index.
    if kind.is_none_or(KindName::carries_usage)
        && !export_usage(ledger, &days, range, kind, args.format, &mut out).await?
    {
        return Ok(ExitCode::SUCCESS);
    }
    for day in range.days() {
        let events = match days.other_events(day).await? {
            Some(mut archived) => {
                archived.retain(|(_, e)| range.contains(e.event_time));
                archived
            }
            None => ledger
                .events()
                .without_usage(day, range)
                .await
                .or_fail(ledger)?,
        };
        for (stored, event) in events.iter().filter(|(_, e)| kept(kind, e)) {
            if !out.write(&export_line(stored, event, args.format)?)? {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    out.finish()
}

/// The usage events booked in the range, day by day and SIM by SIM: from the ledger only one
/// SIM's day of events is held at a time, from the archive one day's. `false` when the reader
/// went away.
async fn export_usage(
    ledger: &UsageLedger,
    days: &DaySource<'_>,
    range: TimeRange,
    kind: Option<KindName>,
    format: ExportFormat,
    out: &mut Output<'_>,
) -> Result<bool> {
    // A day's usage events as one list from the archive, SIM by SIM from the ledger.
    let write = |events: &[(StoredEvent, ConnectionEvent)], out: &mut Output<'_>| -> Result<bool> {
        let in_range = events
            .iter()
            .filter(|(_, e)| range.contains(e.booking_hour()) && kept(kind, e));
        for (stored, event) in in_range {
            if !out.write(&export_line(stored, event, format)?)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    for day in range.days() {
        if let Some(archived) = days.usage_events(day).await? {
            if !write(&archived, out)? {
                return Ok(false);
            }
            continue;
        }
        let sims = ledger
            .rollups()
            .sims_with_usage(&[day])
            .await
            .or_fail(ledger)?;
        for sim in sims {
            let events = ledger
                .events()
                .of_sim_booked_on(&sim, day)
                .await
                .or_fail(ledger)?;
            if !write(&events, out)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
