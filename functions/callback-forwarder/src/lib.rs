//! The callback forwarder: fed by the ledger table's DynamoDB stream, it puts every callback
//! and every alert the ledger inserts on the stack's EventBridge event bus, for the
//! customer's application.
//!
//! - only the insert of a callback record or of an alert is forwarded: the ledger inserts
//!   each callback once however often it was delivered (its key is the provider and
//!   idempotency token), and each alert once (its key is its rule, subject, period and
//!   threshold), so each goes on the bus once; every other item is ignored here too, not
//!   only by the event source mapping's filter;
//! - entries that fail (a whole `PutEvents` call, or single entries) are sent again with
//!   back-off, each on its own account, so one never holds back the others;
//! - what still fails, and a record whose image does not decode, is kept in the ledger's
//!   redrive list (`kore-usage callbacks redrive` puts it on the bus later), and the batch
//!   goes on; only when that write fails too is the record handed back to Lambda.

use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::types::AttributeValue;
use kore_ingest_aws::bus::{Bus, EventBus, RetryPolicy, put_all};
use kore_ingest_aws::ledger::{
    Callbacks, Item, UsageLedger, inserted_alert, inserted_callback, is_alert_insert,
    is_callback_insert, keys,
};
use kore_ingest_core::config::{ConfigError, Env, vars};
use kore_ingest_core::deadline::work_deadline;
use kore_ingest_core::forward::{ALERT_ID_PREFIX, BusEntry, alert_entry, bus_entry};
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use lambda_runtime::{Error, LambdaEvent};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "callback-forwarder";

/// The forwarder: where it puts callbacks, where it keeps those it could not, and how hard
/// it tries. Built once per container.
#[derive(Debug, Clone)]
pub struct Forwarder<B = EventBus> {
    pub bus: B,
    pub callbacks: Callbacks,
    pub retry: RetryPolicy,
    pub deadline_margin: Duration,
}

impl Forwarder<EventBus> {
    /// Deployed: `EVENT_BUS_NAME`, `TABLE_NAME`, `EVENTS_MAX_ATTEMPTS`,
    /// `EVENTS_RETRY_BASE_MS`, `DEADLINE_MARGIN_MS`.
    pub fn from_env(aws: &aws_config::SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        let bus_name = env.required("EVENT_BUS_NAME", "name the event bus callbacks go to")?;
        let bus = EventBus::new(aws_sdk_eventbridge::Client::new(aws), bus_name);
        let callbacks = UsageLedger::from_sdk_config(aws, env)?.callbacks();
        Forwarder::new(bus, callbacks, env)
    }
}

impl<B: Bus> Forwarder<B> {
    pub fn new(bus: B, callbacks: Callbacks, env: &Env) -> Result<Self, ConfigError> {
        Ok(Forwarder {
            bus,
            callbacks,
            retry: RetryPolicy {
                max_attempts: u32::try_from(env.number(&vars::EVENTS_MAX_ATTEMPTS)?)
                    .unwrap_or(u32::MAX),
                base: env.millis(&vars::EVENTS_RETRY_BASE_MS)?,
            },
            deadline_margin: env.millis(&vars::DEADLINE_MARGIN_MS)?,
        })
    }
}

/// What became of one stream record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not the insert of a callback record.
    Ignored,
    /// On the bus.
    Forwarded { id: String },
    /// Not on the bus (it failed, or its image does not decode): in the redrive list.
    Kept { id: String, reason: String },
    /// Neither on the bus nor in the redrive list: handed back to Lambda to send again.
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
pub async fn handle<B: Bus>(
    forwarder: &Forwarder<B>,
    event: LambdaEvent<Event>,
) -> Result<DynamoDbEventResponse, Error> {
    let deadline = work_deadline(event.context.deadline(), forwarder.deadline_margin);
    let report = process_batch(forwarder, event.payload, Some(deadline)).await?;
    report.metrics.emit();
    Ok(report.response)
}

/// The callback or alert a record inserts: its entry, or its id and why it cannot be
/// forwarded.
fn prepare(record: &EventRecord) -> Option<Result<BusEntry, (String, String)>> {
    // The keys first (two attributes): most records are neither.
    let keys_of: Item = record.change.keys.clone().into();
    let string_key = |name: &str| match keys_of.get(name) {
        Some(AttributeValue::S(value)) => value.as_str(),
        _ => "",
    };
    if is_alert_insert(&record.event_name, &keys_of) {
        let image: Item = record.change.new_image.clone().into();
        return Some(match inserted_alert(&keys_of, &image) {
            Ok(alert) => Ok(alert_entry(&alert)),
            Err(error) => Err((
                format!("{ALERT_ID_PREFIX}{}", string_key("sk")),
                error.to_string(),
            )),
        });
    }
    if !is_callback_insert(&record.event_name, &keys_of) {
        return None;
    }
    let image: Item = record.change.new_image.clone().into();
    Some(match inserted_callback(&keys_of, &image) {
        Ok(callback) => Ok(bus_entry(&callback)),
        Err(error) => {
            let pk = string_key("pk");
            let id = keys::callback_id_of_pk(pk).unwrap_or(pk);
            Err((id.to_owned(), error.to_string()))
        }
    })
}

/// Forwards one batch. Errs only when a failed record has no sequence number to report,
/// which makes Lambda retry the whole batch (consumers de-duplicate on the id).
pub async fn process_batch<B: Bus>(
    forwarder: &Forwarder<B>,
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
    let mut entries = Vec::new();
    let mut entry_records = Vec::new();
    let mut to_keep: Vec<(usize, String, String)> = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match prepare(record) {
            None => {}
            Some(Ok(entry)) => {
                entries.push(entry);
                entry_records.push(index);
            }
            Some(Err((id, reason))) => {
                error!(%id, %reason, "a callback record of the stream does not decode");
                to_keep.push((index, id, reason));
            }
        }
    }

    let delivered = put_all(&forwarder.bus, &entries, forwarder.retry, deadline).await;
    metrics.count("EventBusCalls", delivered.calls);
    metrics.count("EventBusRetries", delivered.retried);
    for ((entry, &index), result) in entries.iter().zip(&entry_records).zip(delivered.results) {
        match result {
            Ok(()) => {
                outcomes[index] = RecordOutcome::Forwarded {
                    id: entry.id.clone(),
                }
            }
            Err(reason) => to_keep.push((index, entry.id.clone(), reason)),
        }
    }
    for (index, id, reason) in to_keep {
        outcomes[index] = match forwarder.callbacks.keep_unforwarded(&id, &reason).await {
            Ok(()) => {
                warn!(%id, %reason, "callback not put on the event bus; kept for redrive");
                RecordOutcome::Kept { id, reason }
            }
            Err(ledger) => RecordOutcome::Failed {
                reason: format!("{reason}; and not kept for redrive: {ledger}"),
            },
        };
    }

    let mut response = DynamoDbEventResponse::default();
    // Records come in stream order: the first failed one is the lowest, and Lambda sends
    // it and everything after it again.
    if let Some(first) = outcomes
        .iter()
        .position(|o| matches!(o, RecordOutcome::Failed { .. }))
    {
        match records[first].change.sequence_number.as_deref() {
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
        let name = match outcome {
            RecordOutcome::Ignored => "RecordsIgnored",
            RecordOutcome::Forwarded { .. } => "CallbacksForwarded",
            RecordOutcome::Kept { .. } => "CallbacksKeptForRedrive",
            RecordOutcome::Failed { reason } => {
                error!(%reason, "callback neither forwarded nor kept; handing it back to Lambda");
                "RecordsFailed"
            }
        };
        metrics.count(name, 1);
    }
    info!(
        records = records.len(),
        forwarded = metrics.get("CallbacksForwarded"),
        kept = metrics.get("CallbacksKeptForRedrive"),
        failed = metrics.get("RecordsFailed"),
        ignored = metrics.get("RecordsIgnored"),
        calls = metrics.get("EventBusCalls"),
        "batch forwarded"
    );
    Ok(BatchReport {
        response,
        metrics,
        outcomes,
    })
}
