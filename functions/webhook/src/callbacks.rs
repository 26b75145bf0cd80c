//! `POST` or `GET /callbacks/{kind}`: a verified callback stored once per provider and
//! idempotency token; one that cannot be parsed, or that DynamoDB refuses, is quarantined.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlResponse;
use kore_ingest_core::callback::{CallbackKind, header_token, parse_callback};
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::port::{CallbackOutcome, Ledger};
use kore_ingest_core::quarantine::QuarantineKind;
use serde_json::json;
use tracing::warn;

use crate::answer::{json_response, quarantine_payload, reject, retry_later};
use crate::request::Incoming;

pub async fn store_callback<L: Ledger>(
    ledger: &L,
    incoming: &Incoming<'_>,
    kind: CallbackKind,
    delivery: &Delivery,
    metrics: &mut InvocationMetrics,
) -> LambdaFunctionUrlResponse {
    let payload = incoming.callback_payload();
    let callback = match parse_callback(kind, payload, incoming.headers()) {
        Ok(callback) => callback,
        Err(error) => {
            let quarantine_kind = QuarantineKind::Callback {
                kind,
                idempotency_token: header_token(incoming.headers()),
            };
            let reason = error.to_string();
            return reject(ledger, quarantine_kind, payload, &reason, delivery, metrics).await;
        }
    };
    match ledger.record_callback(&callback, payload, delivery).await {
        Ok(outcome) => {
            let duplicate = outcome == CallbackOutcome::Duplicate;
            let metric = match duplicate {
                true => "CallbacksDuplicate",
                false => "CallbacksNew",
            };
            metrics.count(metric, 1);
            json_response(
                200,
                json!({"accepted": u8::from(!duplicate), "duplicates": u8::from(duplicate)}),
            )
        }
        Err(error) if error.is_retryable() => {
            warn!(%error, "callback not stored; asking the sender to retry");
            retry_later("storage unavailable; retry")
        }
        Err(error) => {
            let quarantine_kind = QuarantineKind::Callback {
                kind,
                idempotency_token: Some(callback.idempotency_token.clone()),
            };
            let reason = error.to_string();
            match quarantine_payload(ledger, quarantine_kind, payload, &reason, delivery).await {
                Some(_) => json_response(200, json!({"accepted": 0, "quarantined": 1})),
                None => retry_later("storage unavailable; retry"),
            }
        }
    }
}
