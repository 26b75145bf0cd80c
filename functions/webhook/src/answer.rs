//! The answers the webhook gives, and the one way it keeps a signed payload it cannot store
//! before answering: in the quarantine, or, if even that fails, a 503 so nothing is lost.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlResponse;
use http::HeaderValue;
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::excerpt::bounded_reason;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::port::Ledger;
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind};
use serde_json::{Value, json};
use tracing::warn;

/// A JSON response with the given status.
pub fn json_response(status: i64, body: Value) -> LambdaFunctionUrlResponse {
    let mut response = LambdaFunctionUrlResponse::default();
    response.status_code = status;
    response.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.body = Some(body.to_string());
    response
}

pub fn error_response(status: i64, error: &str) -> LambdaFunctionUrlResponse {
    json_response(status, json!({ "error": error }))
}

/// Senders retry a 503.
pub fn retry_later(error: &str) -> LambdaFunctionUrlResponse {
    error_response(503, error)
}

/// Keeps the whole payload in the quarantine; its id, or `None` when that failed too.
pub async fn quarantine_payload<L: Ledger>(
    ledger: &L,
    kind: QuarantineKind,
    payload: &[u8],
    reason: &str,
    delivery: &Delivery,
) -> Option<String> {
    let entry = QuarantineEntry {
        kind,
        payload,
        reason: reason.to_owned(),
        delivery,
        related_event: None,
    };
    match ledger.quarantine(entry).await {
        Ok(id) => {
            warn!(%reason, quarantine_id = %id, "payload quarantined");
            Some(id)
        }
        Err(error) => {
            warn!(%error, %reason, "could not quarantine");
            None
        }
    }
}

/// A signed payload that cannot be parsed: quarantined, then 400 naming the reason (a
/// retry cannot help); 503 if even the quarantine write failed, so nothing is lost.
pub async fn reject<L: Ledger>(
    ledger: &L,
    kind: QuarantineKind,
    payload: &[u8],
    reason: &str,
    delivery: &Delivery,
    metrics: &mut InvocationMetrics,
) -> LambdaFunctionUrlResponse {
    match quarantine_payload(ledger, kind, payload, reason, delivery).await {
        Some(id) => {
            metrics.count("RecordsQuarantined", 1);
            metrics.count("SignedResponses4xx", 1);
            let reason = bounded_reason(reason);
            json_response(400, json!({"error": reason, "quarantine_id": id}))
        }
        None => retry_later("storage unavailable; retry"),
    }
}
