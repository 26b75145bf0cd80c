//! `POST /events`: a batch of CloudEvents stored within the time budget. What is not stored
//! in time goes to the stream when one is configured (answered 200), else the sender is
//! asked to retry (503) and what was stored comes back as duplicates.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlResponse;
use kore_ingest_core::delivery::{Delivery, Outcome, OutcomeCounts};
use kore_ingest_core::event::{ParsedItem, parse_events};
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::port::Ledger;
use kore_ingest_core::quarantine::QuarantineKind;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::answer::{json_response, reject, retry_later};
use crate::config::WebhookConfig;
use crate::request::{Incoming, raw_of};
use crate::spill::{spill, spill_reserve, spill_target};

/// Stores the events of a verified body, answering as the senders need.
pub async fn store_events<L: Ledger>(
    ledger: &L,
    config: &WebhookConfig,
    incoming: &Incoming<'_>,
    delivery: &Delivery,
    deadline: Instant,
    metrics: &mut InvocationMetrics,
) -> LambdaFunctionUrlResponse {
    let items = match parse_events(&incoming.body) {
        Ok(items) => items,
        Err(error) => {
            let reason = error.to_string();
            let kind = QuarantineKind::Event;
            return reject(ledger, kind, &incoming.body, &reason, delivery, metrics).await;
        }
    };
    let inputs: Vec<(ParsedItem, Delivery)> = items
        .into_iter()
        .map(|item| (item, delivery.clone()))
        .collect();
    // With a stream to spill to, storage gets the budget less the time a spill needs.
    let started = deadline - config.time_budget;
    let storage_deadline = match spill_target(config) {
        Some(_) => deadline - spill_reserve(config.time_budget),
        None => deadline,
    };
    // New writes stop at three quarters of storage's time; whatever is still in flight at
    // the end of it is abandoned (safe: a retry finds it stored or not, never half-applied).
    let no_new_writes = started + (storage_deadline - started) * 3 / 4;
    let stored = tokio::time::timeout_at(
        storage_deadline,
        ledger.record_batch(&inputs, Some(no_new_writes)),
    )
    .await;
    let Ok(outcomes) = stored else {
        warn!("time budget ran out with writes in flight");
        metrics.count("WritesRetryable", 1);
        // Which were stored is unknown: all of them go; the stored ones come back as
        // duplicates.
        let all: Vec<&str> = inputs.iter().map(|(item, _)| raw_of(item)).collect();
        let summary = summary(&OutcomeCounts::default());
        let unstored = Unstored {
            raw: &all,
            retry: "not everything was stored in time; retry",
        };
        return answer_unstored(config, unstored, delivery, deadline, metrics, summary).await;
    };
    let counts: OutcomeCounts = outcomes.iter().collect();
    let unstored = count(&outcomes, &inputs, &counts, metrics);
    if let Some(reason) = &counts.first_retry_reason {
        warn!(%reason, "batch not fully stored");
        metrics.count("WritesRetryable", 1);
        let summary = summary(&counts);
        let unstored = Unstored {
            raw: &unstored,
            retry: "not everything was stored; retry",
        };
        return answer_unstored(config, unstored, delivery, deadline, metrics, summary).await;
    }
    info!(
        events = inputs.len(),
        accepted = counts.new,
        duplicates = counts.duplicate,
        conflicts = counts.conflict,
        quarantined = counts.quarantined,
        "batch stored"
    );
    json_response(200, summary(&counts))
}

/// The batch's outcomes as metrics; the raw text of each element not stored.
fn count<'a>(
    outcomes: &[Outcome],
    inputs: &'a [(ParsedItem, Delivery)],
    counts: &OutcomeCounts,
    metrics: &mut InvocationMetrics,
) -> Vec<&'a str> {
    let mut unstored = Vec::new();
    for (outcome, (item, _)) in outcomes.iter().zip(inputs) {
        match (outcome, item) {
            (Outcome::New, Ok(event)) => {
                metrics.bytes("UsageBytes", event.usage.map_or(0, |u| u.total));
            }
            (Outcome::Quarantined { reason, .. }, _) => {
                warn!(%reason, "batch element quarantined");
            }
            (Outcome::Retry { .. }, _) => unstored.push(raw_of(item)),
            _ => {}
        }
    }
    // Retries are counted per request: the sender retries (or the stream takes) the
    // request, not single events.
    for (name, n) in counts.metrics() {
        if name != "WritesRetryable" {
            metrics.count(name, n);
        }
    }
    unstored
}

/// The elements of a batch not stored, and what a 503 tells the sender about them.
struct Unstored<'a> {
    raw: &'a [&'a str],
    retry: &'static str,
}

/// What was not stored goes to the stream (200 with `spilled`); without one, or if that
/// fails, the sender retries the whole batch (503).
async fn answer_unstored(
    config: &WebhookConfig,
    unstored: Unstored<'_>,
    delivery: &Delivery,
    deadline: Instant,
    metrics: &mut InvocationMetrics,
    mut summary: Value,
) -> LambdaFunctionUrlResponse {
    match spill(config, unstored.raw, delivery, deadline, metrics).await {
        Some(spilled) => {
            summary["spilled"] = json!(spilled);
            json_response(200, summary)
        }
        None => retry_later(unstored.retry),
    }
}

/// The body of a stored batch's answer.
fn summary(counts: &OutcomeCounts) -> Value {
    json!({
        "accepted": counts.new,
        "duplicates": counts.duplicate,
        "conflicts": counts.conflict,
        "quarantined": counts.quarantined,
    })
}
