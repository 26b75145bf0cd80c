//! The Segment forwarder: fed by the ledger table's DynamoDB stream, it sends every event
//! record the ledger inserts to Twilio Segment as one `track` call, through the batch
//! endpoint. The failure semantics are the point of this function:
//!
//! - only the insert of an event record is forwarded: a copy from another provider or path
//!   only modifies the record, so an event reaches Segment once however it was delivered;
//!   every other item of the table (rollups, booking lists, callbacks, quarantine) is
//!   ignored here too, not only by the event source mapping's filter;
//! - the `messageId` is the event's dedupe key, and Segment de-duplicates on it: a request
//!   sent again after an unclear answer cannot double an event;
//! - 5xx, 429 and network errors are retried with back-off within the invocation; what still
//!   fails is reported as a batch item failure (the lowest sequence number not delivered), so
//!   Lambda sends it again and, after its retries, to the on-failure destination;
//! - a 400 (a call too large, as Segment measures it) never blocks the shard: the request is
//!   split until the call is alone, which is then trimmed until Segment takes it, and noted.

pub mod calls;
pub mod config;
pub mod segment;

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use kore_ingest_aws::ledger::{inserted_event, is_event_insert};
use kore_ingest_core::config::Env;
use kore_ingest_core::deadline::work_deadline;
use kore_ingest_core::event::EventKind;
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use lambda_runtime::{Error, LambdaEvent};
use tokio::time::Instant;
use tracing::{error, info, warn};

use calls::{CallError, EventFields, MAX_CALL_BYTES, MAX_REQUEST_BYTES, TrackCall};
pub use config::{ConfigError, ForwarderConfig, KindSet};
use segment::REQUEST_TIMEOUT;
pub use segment::{Answer, Segment, Sink};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "segment-forwarder";

/// The forwarder: its configuration and where it sends (Segment), built once per container.
#[derive(Debug, Clone)]
pub struct Forwarder<S = Segment> {
    pub config: ForwarderConfig,
    pub segment: S,
}

impl Forwarder<Segment> {
    pub fn new(config: ForwarderConfig) -> Result<Self, ConfigError> {
        let segment = Segment::new(&config)?;
        Ok(Forwarder { config, segment })
    }

    /// Deployed: the environment and the write key from Secrets Manager.
    pub async fn load(aws: &aws_config::SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        Self::new(ForwarderConfig::load(aws, env).await?)
    }
}

/// What became of one stream record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not the insert of an event record: another item, or a delivery added to an event.
    Ignored,
    /// An event of a kind that is not forwarded.
    Skipped { kind: String },
    /// An event record that does not decode: logged and counted, never retried.
    Undecodable { reason: String },
    /// Segment took it (trimmed to fit when `trimmed`).
    Forwarded { message_id: String, trimmed: bool },
    /// Segment refused it even trimmed to the least: logged and counted, not retried.
    Refused { message_id: String, reason: String },
    /// Not delivered this time: handed back to Lambda to send again.
    Failed { reason: String },
}

/// What one batch produced: the response for Lambda, the metrics, each record's outcome.
#[derive(Debug)]
pub struct BatchReport {
    pub response: DynamoDbEventResponse,
    pub metrics: InvocationMetrics,
    pub outcomes: Vec<RecordOutcome>,
}

/// The Lambda entry point: forwards the batch, logs and emits metrics.
pub async fn handle<S: Sink>(
    forwarder: &Forwarder<S>,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, Error> {
    let deadline = work_deadline(event.context.deadline(), forwarder.config.deadline_margin);
    let report = process_batch(forwarder, event.payload, Some(deadline)).await?;
    report.metrics.emit();
    Ok(report.response)
}

/// An event on its way: its record, what its call is made of, and the call.
struct Pending {
    record: usize,
    message_id: String,
    event_type: String,
    event_time: DateTime<Utc>,
    data: String,
    call: TrackCall,
}

impl Pending {
    fn fields(&self) -> EventFields<'_> {
        EventFields {
            message_id: &self.message_id,
            event_type: &self.event_type,
            event_time: self.event_time,
            data: &self.data,
        }
    }

    /// After Segment refused the call alone: the call trimmed to half its size, if it can
    /// get any smaller.
    fn shrink(&mut self) -> bool {
        let limit = self.call.json.len() / 2;
        match calls::track_call(&self.fields(), limit) {
            Ok(smaller) if smaller.json.len() < self.call.json.len() => {
                let original = self
                    .call
                    .trimmed
                    .as_ref()
                    .map(|t| t.original_bytes)
                    .unwrap_or(self.call.json.len());
                self.call = smaller;
                if let Some(trim) = &mut self.call.trimmed {
                    trim.original_bytes = original;
                }
                true
            }
            _ => false,
        }
    }
}

impl<S: Sink> Forwarder<S> {
    /// The call for one record, or why there is none.
    fn prepare(&self, index: usize, record: &EventRecord) -> Result<Pending, RecordOutcome> {
        // The keys first (two attributes): most records are rollups and booking lists, whose
        // images are never converted.
        let keys: HashMap<String, AttributeValue> = record.change.keys.clone().into();
        if !is_event_insert(&record.event_name, &keys) {
            return Err(RecordOutcome::Ignored);
        }
        let image: HashMap<String, AttributeValue> = record.change.new_image.clone().into();
        let stored = inserted_event(&keys, &image).map_err(|e| RecordOutcome::Undecodable {
            reason: e.to_string(),
        })?;
        let kind = EventKind::classify(&stored.event_type);
        if !self.config.kinds.includes(&kind) {
            return Err(RecordOutcome::Skipped {
                kind: kind.name().to_owned(),
            });
        }
        let message_id = stored.key.as_str().to_owned();
        let data = self.config.omit.apply(&stored.data).into_owned();
        let fields = EventFields {
            message_id: &message_id,
            event_type: &stored.event_type,
            event_time: stored.event_time,
            data: &data,
        };
        let call = match calls::track_call(&fields, MAX_CALL_BYTES) {
            Ok(call) => call,
            Err(CallError::DataNotJson(reason)) => {
                return Err(RecordOutcome::Undecodable { reason });
            }
            Err(too_large @ CallError::TooLarge { .. }) => {
                return Err(RecordOutcome::Refused {
                    message_id,
                    reason: too_large.to_string(),
                });
            }
        };
        Ok(Pending {
            record: index,
            message_id,
            event_type: stored.event_type,
            event_time: stored.event_time,
            data,
            call,
        })
    }

    /// One request, sent again on 5xx, 429 and network errors with back-off, as long as
    /// attempts and the deadline allow. `Err` is the last reason it failed.
    async fn post_with_retries(
        &self,
        body: &str,
        deadline: Option<Instant>,
        metrics: &mut InvocationMetrics,
    ) -> Result<Result<(), (u16, String)>, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let timeout = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err("the invocation deadline came before the request".to_owned());
                    }
                    left.min(REQUEST_TIMEOUT)
                }
                None => REQUEST_TIMEOUT,
            };
            metrics.count("SegmentRequests", 1);
            let (reason, retry_after) = match self.segment.post(body.to_owned(), timeout).await {
                Answer::Accepted => return Ok(Ok(())),
                Answer::Refused { status, detail } => return Ok(Err((status, detail))),
                Answer::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            if attempt >= self.config.max_attempts {
                return Err(format!("{reason} ({attempt} attempts)"));
            }
            let wait = kore_ingest_core::retry::backoff(
                attempt,
                self.config.retry_base,
                retry_after,
                0.5 + fastrand::f64() / 2.0,
            );
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Err(format!(
                    "{reason} ({attempt} attempts; no time left to try again)"
                ));
            }
            metrics.count("SegmentRetries", 1);
            warn!(attempt, %reason, wait_ms = wait.as_millis() as u64, "Segment request failed; sending again");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends every pending call, in order, in requests under Segment's limits. Returns the
    /// index (into `pending`) of the first call not delivered, if any, with the reason.
    async fn deliver(
        &self,
        pending: &mut [Pending],
        outcomes: &mut [RecordOutcome],
        deadline: Option<Instant>,
        metrics: &mut InvocationMetrics,
    ) -> Option<(usize, String)> {
        let sizes: Vec<usize> = pending.iter().map(|p| p.call.json.len()).collect();
        let mut queue: VecDeque<Range<usize>> = calls::pack(&sizes, MAX_REQUEST_BYTES).into();
        while let Some(range) = queue.pop_front() {
            let body =
                calls::request_body(pending[range.clone()].iter().map(|p| p.call.json.as_str()));
            match self.post_with_retries(&body, deadline, metrics).await {
                Ok(Ok(())) => {
                    for p in &pending[range] {
                        if let Some(trim) = &p.call.trimmed {
                            warn!(message_id = %p.message_id, original_bytes = trim.original_bytes, sent_bytes = p.call.json.len(), removed = ?trim.removed, "event trimmed to fit a Segment call");
                        }
                        outcomes[p.record] = RecordOutcome::Forwarded {
                            message_id: p.message_id.clone(),
                            trimmed: p.call.trimmed.is_some(),
                        };
                    }
                }
                Ok(Err((status, detail))) if range.len() > 1 => {
                    // One call (or the whole) is too large as Segment measures: halve the
                    // request until the call is alone.
                    warn!(status, %detail, calls = range.len(), "Segment refused a request; splitting it");
                    let middle = range.start + range.len() / 2;
                    queue.push_front(middle..range.end);
                    queue.push_front(range.start..middle);
                }
                Ok(Err((status, detail))) => {
                    let p = &mut pending[range.start];
                    if p.shrink() {
                        warn!(message_id = %p.message_id, status, %detail, bytes = p.call.json.len(), "Segment refused a call; trimming it further");
                        queue.push_front(range);
                    } else {
                        let reason = format!(
                            "Segment answered {status} ({detail}) to the call trimmed to {} bytes",
                            p.call.json.len()
                        );
                        error!(message_id = %p.message_id, %reason, "event not forwarded");
                        outcomes[p.record] = RecordOutcome::Refused {
                            message_id: p.message_id.clone(),
                            reason,
                        };
                    }
                }
                Err(reason) => return Some((range.start, reason)),
            }
        }
        None
    }
}

/// Forwards one batch. Errs only when a failed record has no sequence number to report,
/// which makes Lambda retry the whole batch (harmless: Segment de-duplicates).
pub async fn process_batch<S: Sink>(
    forwarder: &Forwarder<S>,
    event: Event,
    deadline: Option<Instant>,
) -> Result<BatchReport, Error> {
    let mut metrics = InvocationMetrics::new(FUNCTION);
    if take_cold_start() {
        metrics.count("ColdStart", 1);
    }
    let records = &event.records;
    metrics.count("RecordsReceived", records.len() as u64);

    let mut outcomes = vec![RecordOutcome::Ignored; records.len()];
    let mut pending = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match forwarder.prepare(index, record) {
            Ok(call) => pending.push(call),
            Err(outcome) => outcomes[index] = outcome,
        }
    }
    let failed = forwarder
        .deliver(&mut pending, &mut outcomes, deadline, &mut metrics)
        .await;
    let mut response = DynamoDbEventResponse::default();
    if let Some((first, reason)) = failed {
        warn!(%reason, "events not delivered; handing them back to Lambda");
        for p in &pending[first..] {
            outcomes[p.record] = RecordOutcome::Failed {
                reason: reason.clone(),
            };
        }
        // Records come in stream order, so the first undelivered one is the lowest: Lambda
        // sends it and everything after it again.
        let record = &records[pending[first].record];
        match record.change.sequence_number.as_deref() {
            Some(sequence) if !sequence.is_empty() => {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(sequence.to_owned());
                response.batch_item_failures.push(failure);
            }
            _ => {
                return Err(
                    "a failed record has no sequence number; retrying the whole batch".into(),
                );
            }
        }
    }

    for outcome in &outcomes {
        let (name, log) = match outcome {
            RecordOutcome::Ignored => ("RecordsIgnored", None),
            RecordOutcome::Skipped { .. } => ("EventsSkipped", None),
            RecordOutcome::Undecodable { reason } => ("RecordsUndecodable", Some(reason)),
            RecordOutcome::Forwarded { trimmed, .. } => {
                if *trimmed {
                    metrics.count("CallsTrimmed", 1);
                }
                ("EventsForwarded", None)
            }
            RecordOutcome::Refused { .. } => ("CallsRefused", None),
            RecordOutcome::Failed { .. } => ("RecordsFailed", None),
        };
        metrics.count(name, 1);
        if let Some(reason) = log {
            error!(%reason, "an event record of the stream does not decode; not forwarded");
        }
    }
    info!(
        records = records.len(),
        forwarded = metrics.get("EventsForwarded"),
        trimmed = metrics.get("CallsTrimmed"),
        refused = metrics.get("CallsRefused"),
        skipped = metrics.get("EventsSkipped"),
        ignored = metrics.get("RecordsIgnored"),
        failed = metrics.get("RecordsFailed"),
        requests = metrics.get("SegmentRequests"),
        "batch forwarded"
    );
    Ok(BatchReport {
        response,
        metrics,
        outcomes,
    })
}
