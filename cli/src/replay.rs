//! `kore-usage replay`: ingests archives of CloudEvents through the same shared path as the
//! Lambda functions (`parse_events`, then the ledger port's `record_batch`), streaming the file in
//! batches so that an archive of any size needs little memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::delivery::{Delivery, Origin, Outcome, OutcomeCounts};
use kore_ingest_core::event::{ParsedItem, parse_events};
use kore_ingest_core::port::Ledger;
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind};
use kore_ingest_core::spill;
use serde::Serialize;

use crate::args::Format;
use crate::failure::{self, Failure, Result};
use crate::output::{Align, Table, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage replay kinesis-export-2024-11-03.jsonl
  kore-usage replay day1.jsonl day2.json --format json

An archive is JSON lines (one CloudEvent, or a JSON array of them, per line) or one JSON
array of CloudEvents (e.g. exported from a Twilio Kinesis sink), read as a stream. A line
holding a record the webhook spilled to the stream (it starts with {\"kore_ingest_spill\":1,)
is stored as that webhook delivery, as the consumer stores it. Every event is stored exactly
once: replaying an archive again reports only duplicates. Elements
that cannot be parsed are quarantined with the reason, as the functions do. The exit code
is 1 if any write was still failing for a passing reason (throttling, timeouts) after the
ledger's own retries; those inputs are named on stderr: replay the archive again.";

/// Ingest archives of CloudEvents, exactly once, through the ledger's shared write path.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Archive files: JSON lines or a JSON array of CloudEvents.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Inputs written per batch.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// What one archive (or all of them) produced. The JSON keys are stable.
#[derive(Debug, Default, Clone, Serialize)]
struct Summary {
    file: String,
    inputs: u64,
    #[serde(flatten)]
    counts: OutcomeCounts,
    /// Inputs not stored for a passing reason: where they are in the archive, and why.
    retries: Vec<RetryInput>,
}

#[derive(Debug, Clone, Serialize)]
struct RetryInput {
    source: String,
    reason: String,
}

impl Summary {
    fn count(&mut self, outcome: &Outcome, source: &str, table: &str) {
        self.counts.add(outcome);
        if let Outcome::Retry { reason } = outcome {
            self.retries.push(RetryInput {
                source: source.to_owned(),
                reason: failure::clean_reason(reason, table),
            });
        }
    }

    fn add(&mut self, other: &Summary) {
        self.inputs += other.inputs;
        self.counts.merge(&other.counts);
        self.retries.extend(other.retries.iter().cloned());
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    files: &'a [Summary],
    total: &'a Summary,
}

pub async fn run(ledger: &UsageLedger, args: Args) -> Result<ExitCode> {
    // Every archive must be readable before anything is written.
    for path in &args.files {
        File::open(path).map_err(|e| {
            Failure::Failed(format!("cannot read {}: {}", path.display(), io_reason(&e)))
        })?;
    }
    let batch = usize::try_from(args.batch_size).unwrap_or(500);
    let mut summaries = Vec::with_capacity(args.files.len());
    for path in &args.files {
        summaries.push(replay_file(ledger, path, batch).await?);
    }
    let mut total = Summary {
        file: "TOTAL".into(),
        ..Summary::default()
    };
    for summary in &summaries {
        total.add(summary);
    }

    let text = match args.format {
        Format::Json => json(&Report {
            files: &summaries,
            total: &total,
        })?,
        Format::Table => table(&summaries, &total),
    };
    print(&text)?;
    if total.counts.retry == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    const NAMED: usize = 20;
    let mut which: Vec<&str> = total
        .retries
        .iter()
        .take(NAMED)
        .map(|r| r.source.as_str())
        .collect();
    let more = total.retries.len().saturating_sub(NAMED);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    which.dedup();
    let first_reason = total
        .retries
        .first()
        .map(|r| r.reason.as_str())
        .unwrap_or("unknown");
    let (inputs, were, need) = if total.counts.retry == 1 {
        ("input", "was", "needs")
    } else {
        ("inputs", "were", "need")
    };
    eprintln!(
        "error: {}",
        failure::sentence(&format!(
            "{} {inputs} {were} not stored for a passing reason ({first_reason}) and {need} replaying again: {}{more}",
            total.counts.retry,
            which.join(", ")
        ))
    );
    Ok(ExitCode::from(1))
}

fn table(summaries: &[Summary], total: &Summary) -> String {
    let mut table = Table::new(&[
        ("FILE", Align::Left),
        ("INPUTS", Align::Right),
        ("NEW", Align::Right),
        ("DUPLICATE", Align::Right),
        ("CONFLICT", Align::Right),
        ("QUARANTINED", Align::Right),
        ("RETRY", Align::Right),
    ]);
    let cells = |s: &Summary| {
        vec![
            s.file.clone(),
            s.inputs.to_string(),
            s.counts.new.to_string(),
            s.counts.duplicate.to_string(),
            s.counts.conflict.to_string(),
            s.counts.quarantined.to_string(),
            s.counts.retry.to_string(),
        ]
    };
    for summary in summaries {
        table.row(cells(summary));
    }
    if summaries.len() > 1 {
        table.footer(cells(total));
    }
    table.render()
}

/// An unparseable line or element, quarantined as the functions quarantine poison records.
struct Poison {
    bytes: Vec<u8>,
    reason: String,
    delivery: Delivery,
    source: String,
}

#[derive(Default)]
struct Batch {
    inputs: Vec<(ParsedItem, Delivery)>,
    sources: Vec<String>,
    poison: Vec<Poison>,
}

impl Batch {
    fn len(&self) -> usize {
        self.inputs.len() + self.poison.len()
    }

    async fn flush(&mut self, ledger: &UsageLedger, summary: &mut Summary) {
        if !self.inputs.is_empty() {
            let outcomes = ledger.record_batch(&self.inputs, None).await;
            for (outcome, source) in outcomes.iter().zip(&self.sources) {
                summary.count(outcome, source, ledger.table_name());
            }
        }
        for poison in &self.poison {
            let entry = QuarantineEntry {
                kind: QuarantineKind::Event,
                payload: &poison.bytes,
                reason: poison.reason.clone(),
                delivery: &poison.delivery,
                related_event: None,
            };
            let outcome = ledger.quarantine_or_retry(entry, None).await;
            summary.count(&outcome, &poison.source, ledger.table_name());
        }
        self.inputs.clear();
        self.sources.clear();
        self.poison.clear();
    }
}

async fn replay_file(ledger: &UsageLedger, path: &Path, batch_size: usize) -> Result<Summary> {
    let display = path.display().to_string();
    let read_error =
        |e: io::Error| Failure::Failed(format!("cannot read {display}: {}", io_reason(&e)));
    let mut archive = Archive::open(path).map_err(read_error)?;
    let progress = progress_bar(archive.size, &display);
    let mut summary = Summary {
        file: display.clone(),
        ..Summary::default()
    };
    let mut batch = Batch::default();
    let result = loop {
        let unit = match archive.next_unit() {
            Ok(Some(unit)) => unit,
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        };
        let source = format!("{display}:{}", unit.line);
        let replayed = || {
            Delivery::now(Origin::Replay {
                source: source.clone(),
            })
        };
        // A record the webhook spilled to the stream holds its request's events, stored as
        // that webhook delivery, as the consumer stores them.
        let parsed = spill::delivery_of(&unit.bytes, replayed)
            .map_err(|e| e.to_string())
            .and_then(|(delivery, payload)| {
                let items = parse_events(payload).map_err(|e| e.to_string())?;
                Ok((delivery, items))
            });
        match parsed {
            Ok((delivery, items)) => {
                for item in items {
                    summary.inputs += 1;
                    batch.inputs.push((item, delivery.clone()));
                    batch.sources.push(source.clone());
                }
            }
            Err(reason) => {
                summary.inputs += 1;
                batch.poison.push(Poison {
                    bytes: unit.bytes,
                    reason,
                    delivery: replayed(),
                    source,
                });
            }
        }
        if batch.len() >= batch_size {
            batch.flush(ledger, &mut summary).await;
            progress.set_position(archive.consumed);
        }
    };
    // What was read before an error is stored all the same; replaying again is harmless.
    batch.flush(ledger, &mut summary).await;
    progress.finish_and_clear();
    match result {
        Ok(()) => Ok(summary),
        Err(error) => Err(Failure::Failed(format!(
            "{display} could not be read to the end ({}); what came before was stored, and replaying the file again is safe",
            io_reason(&error)
        ))),
    }
}

fn progress_bar(size: u64, name: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_owned());
    bar
}

fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// A JSON value is allowed this large before the archive is declared malformed (real
/// CloudEvents are about 1.5 KB); it bounds memory for any input.
const MAX_UNIT_BYTES: usize = 32 * 1024 * 1024;

/// How much of the first line is read to tell JSON lines from one JSON document.
const DETECT_BYTES: u64 = 1024 * 1024;

/// One unit of an archive: a line of JSON lines, or a value of a JSON document (an element
/// of a top-level array), with the line it starts on.
#[derive(Debug, PartialEq, Eq)]
struct Unit {
    line: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One CloudEvent or array per line. A bad line fails alone.
    Lines,
    /// JSON values spread over lines, e.g. one (pretty-printed) JSON array: its elements
    /// are the units, streamed one by one.
    Document,
}

struct Archive<R> {
    reader: R,
    layout: Layout,
    /// The line the reader is on (1-based).
    line: u64,
    /// Bytes read so far, for the progress bar.
    consumed: u64,
    size: u64,
    in_array: bool,
}

impl Archive<BufReader<File>> {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let layout = detect(&mut reader)?;
        reader.seek(SeekFrom::Start(0))?;
        Archive::new(reader, layout, size)
    }
}

impl<R: BufRead> Archive<R> {
    fn new(mut reader: R, layout: Layout, size: u64) -> io::Result<Self> {
        let mut consumed = 0;
        if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
            reader.consume(3);
            consumed = 3;
        }
        Ok(Archive {
            reader,
            layout,
            line: 1,
            consumed,
            size,
            in_array: false,
        })
    }

    fn next_unit(&mut self) -> io::Result<Option<Unit>> {
        match self.layout {
            Layout::Lines => self.next_line(),
            Layout::Document => self.next_value(),
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Unit>> {
        loop {
            let mut bytes = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_UNIT_BYTES as u64 + 1)
                .read_until(b'\n', &mut bytes)?;
            if read == 0 {
                return Ok(None);
            }
            let line = self.line;
            self.line += 1;
            self.consumed += read as u64;
            if read > MAX_UNIT_BYTES {
                return Err(invalid(format!(
                    "line {line} is longer than {} MiB",
                    MAX_UNIT_BYTES / (1024 * 1024)
                )));
            }
            let trimmed = bytes.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            let bytes = if trimmed.len() == bytes.len() {
                bytes
            } else {
                trimmed.to_vec()
            };
            return Ok(Some(Unit { line, bytes }));
        }
    }

    fn next_value(&mut self) -> io::Result<Option<Unit>> {
        loop {
            let Some(&byte) = self.reader.fill_buf()?.first() else {
                if self.in_array {
                    return Err(invalid("the file ends inside its JSON array".into()));
                }
                return Ok(None);
            };
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'[' if !self.in_array => self.in_array = true,
                b']' if self.in_array => self.in_array = false,
                b',' if self.in_array => {}
                _ => return self.read_value().map(Some),
            }
            self.advance(byte);
        }
    }

    fn advance(&mut self, byte: u8) {
        self.reader.consume(1);
        self.consumed += 1;
        if byte == b'\n' {
            self.line += 1;
        }
    }

    /// One JSON value, found by tracking strings and nesting only: parsing it is
    /// `parse_events`'s job, which reports what is wrong with it.
    fn read_value(&mut self) -> io::Result<Unit> {
        let line = self.line;
        let mut bytes = Vec::new();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                if depth == 0 && !in_string && !bytes.is_empty() {
                    return Ok(Unit { line, bytes });
                }
                return Err(invalid(format!(
                    "the file ends inside the JSON value that starts at line {line}"
                )));
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    used += 1;
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth == 0 => {
                        // A stray closing bracket is a (bad) value of its own.
                        if bytes.is_empty() && used == 0 {
                            used += 1;
                        }
                        done = true;
                        break;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            used += 1;
                            done = true;
                            break;
                        }
                    }
                    b',' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => {
                        done = true;
                        break;
                    }
                    _ => {}
                }
                used += 1;
            }
            bytes.extend_from_slice(&buf[..used]);
            let newlines = buf[..used].iter().filter(|&&b| b == b'\n').count() as u64;
            self.reader.consume(used);
            self.consumed += used as u64;
            self.line += newlines;
            if bytes.len() > MAX_UNIT_BYTES {
                return Err(invalid(format!(
                    "the JSON value that starts at line {line} is larger than {} MiB",
                    MAX_UNIT_BYTES / (1024 * 1024)
                )));
            }
            if done {
                return Ok(Unit { line, bytes });
            }
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// JSON lines if the first non-blank line is a whole JSON value (or looks like one object
/// per line); otherwise a JSON document spread over lines, such as a pretty-printed array,
/// or one array too long to be taken for a line.
fn detect<R: BufRead>(reader: &mut R) -> io::Result<Layout> {
    let mut first = true;
    loop {
        let mut line = Vec::new();
        let read = (&mut *reader)
            .take(DETECT_BYTES)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(Layout::Lines);
        }
        let complete = line.ends_with(b"\n") || (read as u64) < DETECT_BYTES;
        let mut text = line.as_slice();
        if first {
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            first = false;
        }
        let text = text.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let whole_value = serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok();
        let object_line = text.starts_with(b"{") && text.ends_with(b"}");
        return Ok(if complete && (whole_value || object_line) {
            Layout::Lines
        } else {
            Layout::Document
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(text: &str) -> (Layout, Vec<(u64, String)>) {
        let layout = detect(&mut text.as_bytes()).unwrap();
        let mut archive = Archive::new(text.as_bytes(), layout, text.len() as u64).unwrap();
        let mut out = Vec::new();
        while let Some(unit) = archive.next_unit().unwrap() {
            out.push((unit.line, String::from_utf8(unit.bytes).unwrap()));
        }
        assert_eq!(archive.consumed, text.len() as u64);
        (layout, out)
    }

    #[test]
    fn json_lines_are_read_line_by_line_and_bad_lines_fail_alone() {
        let (layout, found) =
            units("{\"a\":1}\n\n[{\"b\":2},{\"c\":3}]\r\n{\"broken\": \n{\"d\":4}");
        assert_eq!(layout, Layout::Lines);
        assert_eq!(
            found,
            [
                (1, "{\"a\":1}".into()),
                (3, "[{\"b\":2},{\"c\":3}]".into()),
                (4, "{\"broken\":".into()),
                (5, "{\"d\":4}".into()),
            ]
        );
    }

    #[test]
    fn a_pretty_printed_array_is_streamed_element_by_element() {
        let text = "\u{feff}[\n  {\n    \"a\": \"x]}\\\"\"\n  },\n  {\"b\": [1, {\"c\": 2}]}\n,7, \"s\"\n]\n";
        let (layout, found) = units(text);
        assert_eq!(layout, Layout::Document);
        assert_eq!(
            found,
            [
                (2, "{\n    \"a\": \"x]}\\\"\"\n  }".into()),
                (5, "{\"b\": [1, {\"c\": 2}]}".into()),
                (6, "7".into()),
                (6, "\"s\"".into()),
            ]
        );
    }

    #[test]
    fn pretty_printed_objects_one_after_another_are_values() {
        let (layout, found) = units("{\n \"a\": 1\n}\n{\n \"b\": 2\n}{\"c\":3}");
        assert_eq!(layout, Layout::Document);
        let lines: Vec<u64> = found.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 4, 6]);
    }

    #[test]
    fn a_truncated_document_is_an_error_not_a_hang() {
        let text = "[\n{\"a\": 1},\n{\"b\": ";
        let layout = detect(&mut text.as_bytes()).unwrap();
        let mut archive = Archive::new(text.as_bytes(), layout, 0).unwrap();
        assert!(archive.next_unit().unwrap().is_some());
        let error = archive.next_unit().unwrap_err();
        assert!(error.to_string().contains("line 3"), "{error}");
        let stray = "[\n}\n]";
        let mut archive = Archive::new(stray.as_bytes(), Layout::Document, 0).unwrap();
        assert_eq!(archive.next_unit().unwrap().unwrap().bytes, b"}");
        assert!(archive.next_unit().unwrap().is_none());
    }

    #[test]
    fn empty_archives_have_no_units() {
        assert!(units("").1.is_empty());
        assert!(units("\n\n  \n").1.is_empty());
        assert!(units("[\n]\n").1.is_empty());
        // A line holding an empty array is a unit with no events in it.
        assert_eq!(units("[]").1, [(1, "[]".to_owned())]);
    }
}
