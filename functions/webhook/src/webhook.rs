//! [`Webhook`]: one Function URL request answered. The answer tells the sender what to do:
//! 2xx when everything is stored (duplicates included), 5xx when a retry is wanted (storage
//! failed or the time budget ran out), 4xx only when a retry cannot help. Twilio discards a
//! delivery on 4xx, so a 4xx never hides unstored data: a signed body that is refused or
//! cannot be parsed is quarantined first.

use std::time::Instant;

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use kore_ingest_core::port::Ledger;
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::json;
use tracing::warn;

use crate::answer::{error_response, json_response, retry_later};
use crate::auth::authenticate;
use crate::callbacks::store_callback;
use crate::config::WebhookConfig;
use crate::events::store_events;
use crate::request::{
    Incoming, Refusal, Route, content_type, unsupported_media_type, webhook_delivery,
};

/// The webhook: the ledger and its configuration, built once per cold start.
#[derive(Debug, Clone)]
pub struct Webhook<L> {
    pub ledger: L,
    pub config: WebhookConfig,
}

/// The Lambda entry point: answers the request, logs and emits metrics.
///
/// The Function URL event is taken as `aws_lambda_events` defines it, not through
/// `lambda_http`: routing is four paths matched in `Route::of` and the body one base64
/// decode. `lambda_http` would turn the event into an `http::Request` whose URI it composes
/// again from the event's headers, path and query (the signatures need the raw path and query
/// exactly as received), and add a crate, with the API Gateway and ALB event types, to a
/// binary measured for cold starts, while the routing would still be ours to write.
pub async fn handle<L: Ledger>(
    webhook: &Webhook<L>,
    event: LambdaEvent<LambdaFunctionUrlRequest>,
) -> Result<LambdaFunctionUrlResponse, Error> {
    let started = Instant::now();
    let mut metrics = InvocationMetrics::new("webhook");
    if take_cold_start() {
        metrics.count("ColdStart", 1);
    }
    let response = webhook
        .respond(&event.payload, &event.context.request_id, &mut metrics)
        .await;
    metrics.count(
        match response.status_code {
            200..=299 => "Responses2xx",
            400..=499 => "Responses4xx",
            _ => "Responses5xx",
        },
        1,
    );
    metrics.milliseconds("ResponseTime", started.elapsed().as_secs_f64() * 1000.0);
    metrics.emit();
    Ok(response)
}

impl<L: Ledger> Webhook<L> {
    /// Answers one Function URL request.
    pub async fn respond(
        &self,
        request: &LambdaFunctionUrlRequest,
        request_id: &str,
        metrics: &mut InvocationMetrics,
    ) -> LambdaFunctionUrlResponse {
        let deadline = tokio::time::Instant::now() + self.config.time_budget;
        let incoming = match read(request) {
            Ok(incoming) => incoming,
            Err(response) => return *response,
        };
        if incoming.route == Route::Health {
            return json_response(
                200,
                json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
            );
        }
        let refusal = if incoming.body.len() > self.config.max_body_bytes {
            Some(Refusal::TooLarge)
        } else if unsupported_media_type(&incoming) {
            Some(Refusal::UnsupportedType)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return self.refuse(&incoming, request_id, refusal, metrics).await;
        }
        let provider = match authenticate(&self.config, &incoming).await {
            Ok(provider) => provider,
            Err(reason) => {
                metrics.count("SignatureRejected", 1);
                warn!(%reason, route = ?incoming.route, "signature rejected");
                // No detail that helps an attacker.
                return error_response(401, "unauthorized");
            }
        };
        let delivery = webhook_delivery(request_id, provider);
        match incoming.route {
            Route::Events => {
                store_events(
                    &self.ledger,
                    &self.config,
                    &incoming,
                    &delivery,
                    deadline,
                    metrics,
                )
                .await
            }
            Route::Callbacks(kind) => {
                store_callback(&self.ledger, &incoming, kind, &delivery, metrics).await
            }
            Route::Health => error_response(404, "not found"),
        }
    }

    /// A body refused for its size or type. Twilio discards a delivery answered with 4xx, so
    /// an authenticated one is kept in the quarantine first (the start of it, with its full
    /// size, when it is too large); 503 if even that fails, so that nothing is lost silently.
    /// An unauthenticated one is answered and forgotten.
    async fn refuse(
        &self,
        incoming: &Incoming<'_>,
        request_id: &str,
        refusal: Refusal,
        metrics: &mut InvocationMetrics,
    ) -> LambdaFunctionUrlResponse {
        let (status, error) = match refusal {
            Refusal::TooLarge => (413, "body too large"),
            Refusal::UnsupportedType => (415, "unsupported content type"),
        };
        let Ok(provider) = authenticate(&self.config, incoming).await else {
            return error_response(status, error);
        };
        let max = self.config.max_body_bytes;
        let reason = match refusal {
            Refusal::TooLarge => format!(
                "the body of {} bytes is larger than MAX_BODY_BYTES ({max}): answered 413, only its first {max} bytes are kept",
                incoming.body.len(),
            ),
            Refusal::UnsupportedType => format!(
                "content type `{}` is not accepted on this route: answered 415",
                content_type(incoming.headers())
            ),
        };
        let kind = match incoming.route {
            Route::Callbacks(kind) => QuarantineKind::Callback {
                kind,
                idempotency_token: None,
            },
            _ => QuarantineKind::Event,
        };
        let delivery = webhook_delivery(request_id, provider);
        let entry = QuarantineEntry {
            kind,
            payload: &incoming.body,
            reason: reason.clone(),
            delivery: &delivery,
            related_event: None,
        };
        match self.ledger.quarantine_truncated(entry, max).await {
            Ok(id) => {
                warn!(%reason, quarantine_id = %id, "signed body refused; quarantined");
                metrics.count("RecordsQuarantined", 1);
                metrics.count("SignedResponses4xx", 1);
                json_response(status, json!({"error": error, "quarantine_id": id}))
            }
            Err(e) => {
                warn!(error = %e, %reason, "signed body refused and could not be quarantined");
                retry_later("storage unavailable; retry")
            }
        }
    }
}

/// The request decoded: its route, method and body, or the answer when there is none to
/// take (404, 405, a body that is not base64).
fn read(
    request: &LambdaFunctionUrlRequest,
) -> Result<Incoming<'_>, Box<LambdaFunctionUrlResponse>> {
    let Some(route) = Route::of(request.raw_path.as_deref().unwrap_or("/")) else {
        return Err(Box::new(error_response(404, "not found")));
    };
    let method = request
        .request_context
        .http
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    if !route.allowed_methods().contains(&method.as_str()) {
        let mut response = error_response(405, "method not allowed");
        if let Ok(allow) = HeaderValue::from_str(&route.allowed_methods().join(", ")) {
            response.headers.insert(http::header::ALLOW, allow);
        }
        return Err(Box::new(response));
    }
    let raw_body = request.body.as_deref().unwrap_or_default();
    let body = match request.is_base64_encoded {
        true => BASE64
            .decode(raw_body)
            .map_err(|_| Box::new(error_response(400, "body is not valid base64")))?,
        false => raw_body.as_bytes().to_vec(),
    };
    Ok(Incoming {
        method,
        route,
        body,
        request,
    })
}
