//! Handing a verified body's events to the Kinesis stream when storage fails, so that the
//! consumer stores them when DynamoDB is back (the records' form is
//! `kore_ingest_core::spill`).

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::spill::{self, SpillError, SpilledRequest};
use tokio::time::Instant;
use tracing::warn;

use crate::config::WebhookConfig;

/// How much of the time budget a spill to the stream keeps for itself.
pub fn spill_reserve(budget: Duration) -> Duration {
    (budget / 4).min(Duration::from_millis(1000))
}

/// The stream and client to spill to, when both are configured.
pub fn spill_target(config: &WebhookConfig) -> Option<(&Client, &str)> {
    Some((config.kinesis.as_ref()?, config.spill_stream.as_deref()?))
}

/// Hands `events` to the stream before `deadline`; how many events went, or `None` (no
/// stream configured, or it failed: the sender must retry).
pub async fn spill(
    config: &WebhookConfig,
    events: &[&str],
    delivery: &Delivery,
    deadline: Instant,
    metrics: &mut InvocationMetrics,
) -> Option<usize> {
    let (client, stream) = spill_target(config)?;
    let request = SpilledRequest {
        provider: delivery.provider_hint,
        request_id: delivery.origin.locator(),
        received_at: delivery.received_at,
    };
    match tokio::time::timeout_at(deadline, put(client, stream, &request, events)).await {
        Ok(Ok(records)) => {
            warn!(
                events = events.len(),
                records, "storage failed; the events went to the stream for the consumer"
            );
            metrics.count("RequestsSpilled", 1);
            metrics.count("EventsSpilled", events.len() as u64);
            Some(events.len())
        }
        Ok(Err(error)) => {
            warn!(%error, "could not spill to the stream; asking the sender to retry");
            metrics.count("SpillFailed", 1);
            None
        }
        Err(_) => {
            warn!("spilling to the stream ran out of time; asking the sender to retry");
            metrics.count("SpillFailed", 1);
            None
        }
    }
}

/// PutRecords takes at most 500 records and 5 MB per request.
const MAX_RECORDS_PER_REQUEST: usize = 500;
const MAX_BYTES_PER_REQUEST: usize = 5_000_000;
/// Records Kinesis refused (throttled) are sent again this often.
const ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SpillFailed {
    #[error(transparent)]
    Encode(#[from] SpillError),
    #[error("PutRecords failed: {0}")]
    Put(String),
    #[error("Kinesis refused {0} record(s) {ATTEMPTS} times")]
    Refused(usize),
}

/// Puts `events` (raw CloudEvents) on `stream` (a name, or an ARN) as spilled records of
/// `request`, in order; returns how many records it took.
async fn put(
    client: &Client,
    stream: &str,
    request: &SpilledRequest,
    events: &[&str],
) -> Result<usize, SpillFailed> {
    let records = spill::encode(request, events)?;
    let count = records.len();
    // Kinesis caps partition keys at 256 characters; all of a request's records share one
    // shard, so they are read in order.
    let key: String = request.request_id.chars().take(256).collect();
    let key = if key.is_empty() {
        "webhook".to_owned()
    } else {
        key
    };
    let mut pending: Vec<Vec<u8>> = records;
    for _ in 0..ATTEMPTS {
        let mut refused = Vec::new();
        for batch in batches(&pending) {
            let entries = batch
                .iter()
                .map(|data| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new((*data).clone()))
                        .partition_key(key.as_str())
                        .build()
                        .map_err(|e| SpillFailed::Put(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut call = client.put_records().set_records(Some(entries));
            call = if stream.starts_with("arn:") {
                call.stream_arn(stream)
            } else {
                call.stream_name(stream)
            };
            let output = call.send().await.map_err(|e| {
                SpillFailed::Put(aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())
            })?;
            for (data, result) in batch.iter().zip(output.records()) {
                if result.error_code().is_some() {
                    refused.push((*data).clone());
                }
            }
        }
        if refused.is_empty() {
            return Ok(count);
        }
        pending = refused;
    }
    Err(SpillFailed::Refused(pending.len()))
}

/// `records` in PutRecords-sized groups.
fn batches(records: &[Vec<u8>]) -> Vec<Vec<&Vec<u8>>> {
    let mut batches: Vec<Vec<&Vec<u8>>> = Vec::new();
    let mut bytes = 0;
    for record in records {
        let full = batches.last().is_none_or(|b| {
            b.len() >= MAX_RECORDS_PER_REQUEST || bytes + record.len() > MAX_BYTES_PER_REQUEST
        });
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += record.len();
        if let Some(batch) = batches.last_mut() {
            batch.push(record);
        }
    }
    batches
}
