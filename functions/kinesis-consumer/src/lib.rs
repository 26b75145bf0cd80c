//! The Kinesis consumer: each record of a batch is parsed with the shared code and written
//! through the ledger, concurrently. The failure semantics are the point of this function:
//!
//! - a record that cannot be parsed is quarantined and counts as processed, so one poison
//!   record never stalls its shard;
//! - a retryable failure is reported as a batch item failure with the lowest failed sequence
//!   number (never an empty one), and Lambda re-sends from there; the ledger makes the
//!   re-sent records that were already stored harmless duplicates;
//! - near the invocation deadline no new write starts: the records not yet written are
//!   reported as failures instead of letting a timeout fail the whole batch;
//! - a record the webhook spilled to the stream (its storage failed) is stored as the webhook
//!   delivery it is: same provider, request id and path, so `deliveries` says `webhook`.

use std::time::Duration;

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use kore_ingest_core::config::{ConfigError, Env, vars};
use kore_ingest_core::deadline::{cutoff, work_deadline};
use kore_ingest_core::delivery::{Delivery, Origin, Outcome, OutcomeCounts};
use kore_ingest_core::event::{ParsedItem, parse_events};
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use kore_ingest_core::port::Ledger;
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind};
use kore_ingest_core::spill;
use lambda_runtime::{Error, LambdaEvent};
use tracing::{info, warn};

/// What one batch produced: the response for Lambda and the invocation's metrics.
#[derive(Debug)]
pub struct BatchReport {
    pub response: KinesisEventResponse,
    pub metrics: InvocationMetrics,
    /// Every input's outcome, by record index (a record may hold several events).
    pub outcomes: Vec<(usize, Outcome)>,
}

/// The consumer: its ledger and its configuration, built once per cold start.
#[derive(Debug, Clone)]
pub struct Consumer<L> {
    pub ledger: L,
    /// No new write starts this close to the invocation deadline (`DEADLINE_MARGIN_MS`).
    pub deadline_margin: Duration,
}

impl<L: Ledger> Consumer<L> {
    /// The consumer of `ledger`, configured from `env`.
    pub fn new(ledger: L, env: &Env) -> Result<Self, ConfigError> {
        Ok(Consumer {
            ledger,
            deadline_margin: env.millis(&vars::DEADLINE_MARGIN_MS)?,
        })
    }

    /// The Lambda entry point: processes the batch with the invocation's deadline, logs and
    /// emits metrics.
    pub async fn handle(
        &self,
        event: LambdaEvent<KinesisEvent>,
    ) -> Result<KinesisEventResponse, Error> {
        let invocation_deadline = event.context.deadline();
        let deadline = work_deadline(invocation_deadline, self.deadline_margin);
        let first = (event.payload.records.first()).map(|r| r.kinesis.sequence_number.clone());
        let records = event.payload.records.len();
        let batch = process_batch(&self.ledger, event.payload, Some(deadline));
        match tokio::time::timeout_at(cutoff(invocation_deadline), batch).await {
            Ok(report) => {
                let report = report?;
                report.metrics.emit();
                Ok(report.response)
            }
            Err(_) => cut_off(first, records),
        }
    }
}

/// Why a whole batch is retried: Lambda cannot restart from a record without a number.
const NO_SEQUENCE_NUMBER: &str = "a failed record has no sequence number; retrying the whole batch";

/// The answer when the batch's writes were cut off at the invocation's deadline: every record
/// from the first comes again (those already stored come back as duplicates).
fn cut_off(first: Option<String>, records: usize) -> Result<KinesisEventResponse, Error> {
    warn!(
        records,
        "writes still running at the invocation's deadline were cut off; the batch is retried"
    );
    let mut metrics = InvocationMetrics::new("kinesis-consumer");
    metrics.count("RecordsReceived", records as u64);
    metrics.count("RecordsFailed", records as u64);
    metrics.emit();
    let mut response = KinesisEventResponse::default();
    match first {
        Some(sequence) if !sequence.is_empty() => response.add_failure(sequence),
        Some(_) => {
            return Err(NO_SEQUENCE_NUMBER.into());
        }
        None => {}
    }
    Ok(response)
}

/// One record that was not even a payload (not UTF-8, not JSON...): quarantined whole.
struct PoisonRecord<'a> {
    record: usize,
    bytes: &'a [u8],
    reason: String,
    delivery: Delivery,
}

/// A batch's records read: every element with its record index, and the poison records.
#[derive(Default)]
struct Parsed<'a> {
    inputs: Vec<(ParsedItem, Delivery)>,
    owners: Vec<usize>,
    poison: Vec<PoisonRecord<'a>>,
}

/// The delivery a record stands for and the payload to parse: a spilled webhook request's,
/// or the record's own.
fn unwrap_record(record: &KinesisEventRecord) -> Result<(Delivery, &[u8]), String> {
    let bytes = record.kinesis.data.0.as_slice();
    spill::delivery_of(bytes, || Delivery::now(origin_of(record))).map_err(|e| e.to_string())
}

/// Parses every record of the batch; a record that is no payload at all is poison.
fn parse_records<'a>(
    records: &'a [KinesisEventRecord],
    metrics: &mut InvocationMetrics,
) -> Parsed<'a> {
    let mut parsed = Parsed::default();
    for (index, record) in records.iter().enumerate() {
        let (delivery, bytes) = match unwrap_record(record) {
            Ok(unwrapped) => unwrapped,
            Err(reason) => {
                parsed.poison.push(PoisonRecord {
                    record: index,
                    bytes: record.kinesis.data.0.as_slice(),
                    reason,
                    delivery: Delivery::now(origin_of(record)),
                });
                continue;
            }
        };
        if matches!(delivery.origin, Origin::Webhook { .. }) {
            metrics.count("RecordsSpilledIn", 1);
        }
        match parse_events(bytes) {
            Ok(items) => {
                if items.is_empty() {
                    info!(sequence_number = %record.kinesis.sequence_number, "record holds an empty array: nothing to store");
                }
                for item in items {
                    parsed.inputs.push((item, delivery.clone()));
                    parsed.owners.push(index);
                }
            }
            Err(error) => parsed.poison.push(PoisonRecord {
                record: index,
                bytes,
                reason: error.to_string(),
                delivery,
            }),
        }
    }
    parsed
}

/// Processes one batch. Errs only when a failed record has no sequence number to report,
/// which makes Lambda retry the whole batch (safe: everything is idempotent).
pub async fn process_batch<L: Ledger>(
    ledger: &L,
    event: KinesisEvent,
    deadline: Option<tokio::time::Instant>,
) -> Result<BatchReport, Error> {
    let mut metrics = InvocationMetrics::new("kinesis-consumer");
    if take_cold_start() {
        metrics.count("ColdStart", 1);
    }
    let records = &event.records;
    metrics.count("RecordsReceived", records.len() as u64);
    let parsed = parse_records(records, &mut metrics);
    let quarantines = parsed.poison.iter().map(|p| async move {
        let entry = QuarantineEntry {
            kind: QuarantineKind::Event,
            payload: p.bytes,
            reason: p.reason.clone(),
            delivery: &p.delivery,
            related_event: None,
        };
        (p.record, ledger.quarantine_or_retry(entry, deadline).await)
    });
    let (event_outcomes, poison_outcomes) = tokio::join!(
        ledger.record_batch(&parsed.inputs, deadline),
        futures::future::join_all(quarantines)
    );
    let mut outcomes: Vec<(usize, Outcome)> =
        parsed.owners.into_iter().zip(event_outcomes).collect();
    outcomes.extend(poison_outcomes);
    count_and_log(&outcomes, &parsed.inputs, &mut metrics);
    let response = response(records, &outcomes, &mut metrics)?;
    info!(
        records = records.len(),
        new = metrics.get("EventsNew"),
        duplicate = metrics.get("EventsDuplicate"),
        conflict = metrics.get("EventsConflict"),
        quarantined = metrics.get("RecordsQuarantined"),
        failed = metrics.get("RecordsFailed"),
        "batch processed"
    );
    Ok(BatchReport {
        response,
        metrics,
        outcomes,
    })
}

/// The outcomes as metrics and warnings.
fn count_and_log(
    outcomes: &[(usize, Outcome)],
    inputs: &[(ParsedItem, Delivery)],
    metrics: &mut InvocationMetrics,
) {
    let counts: OutcomeCounts = outcomes.iter().map(|(_, outcome)| outcome).collect();
    for (name, n) in counts.metrics() {
        metrics.count(name, n);
    }
    for (i, (record, outcome)) in outcomes.iter().enumerate() {
        if let (Outcome::New, Some((Ok(event), _))) = (outcome, inputs.get(i)) {
            metrics.bytes("UsageBytes", event.usage.map_or(0, |u| u.total));
        }
        match outcome {
            Outcome::Quarantined {
                quarantine_id,
                reason,
            } => warn!(record, %quarantine_id, %reason, "quarantined"),
            Outcome::Conflict { quarantine_id } => {
                warn!(record, %quarantine_id, "conflicting copy quarantined")
            }
            Outcome::Retry { reason } => warn!(record, %reason, "write failed; will be retried"),
            _ => {}
        }
    }
}

/// The answer for Lambda: the lowest sequence number that must come again, if any.
fn response(
    records: &[KinesisEventRecord],
    outcomes: &[(usize, Outcome)],
    metrics: &mut InvocationMetrics,
) -> Result<KinesisEventResponse, Error> {
    let mut failed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_retry())
        .map(|(record, _)| records[*record].kinesis.sequence_number.as_str())
        .collect();
    failed.sort_by(|a, b| sequence_order(a, b));
    failed.dedup();
    metrics.count("RecordsFailed", failed.len() as u64);
    let mut response = KinesisEventResponse::default();
    if let Some(&lowest) = failed.first() {
        if lowest.is_empty() {
            // An empty identifier would fail the batch anyway; say so plainly.
            return Err(NO_SEQUENCE_NUMBER.into());
        }
        // Lambda restarts from the lowest reported sequence number; reporting it alone is
        // exact, and everything after it comes again.
        response.add_failure(lowest.to_owned());
    }
    Ok(response)
}

/// Where a record came from: its shard (the part of `eventID` before `:`) and sequence number.
fn origin_of(record: &KinesisEventRecord) -> Origin {
    let shard_id = record
        .event_id
        .as_deref()
        .and_then(|id| id.split(':').next())
        .filter(|shard| !shard.is_empty())
        .unwrap_or("unknown-shard");
    Origin::Kinesis {
        shard_id: shard_id.to_owned(),
        sequence_number: record.kinesis.sequence_number.clone(),
    }
}

/// Sequence numbers are decimal strings of up to 128 digits: compare them as numbers. The
/// order in which Lambda (and the local poller, `scripts/pollers`) restarts a shard.
pub fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(sequence_order("9", "10"), Less);
        assert_eq!(
            sequence_order(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Less
        );
        assert_eq!(sequence_order("007", "7"), Equal);
        assert_eq!(sequence_order("", "1"), Less);
    }
}
