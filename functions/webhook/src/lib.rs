//! The webhook behind a Lambda Function URL.
//!
//! - `POST /events`: Event Streams deliveries from KORE or Twilio (a JSON array of up to 50
//!   CloudEvents, or one object);
//! - `POST` or `GET /callbacks/{sims|sms-commands|ip-commands|esim-profiles}`: callbacks;
//! - `GET /health`.
//!
//! Signatures are checked over the exact raw body before anything is parsed. The answer
//! tells the sender what to do: 2xx when everything is stored (duplicates included), 5xx when
//! a retry is wanted (storage failed or the time budget ran out), 4xx only when a retry
//! cannot help — Twilio discards a delivery on 4xx, so a 4xx never hides unstored data: a
//! body that cannot be parsed is quarantined before the 400.

pub mod config;
mod spill;

use std::time::Instant;

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderValue};
use kore_ingest_shared::callback::{CallbackKind, parse_callback, parse_form};
use kore_ingest_shared::event::{ParsedItem, Provider, parse_events};
use kore_ingest_shared::ledger::callbacks::CallbackOutcome;
use kore_ingest_shared::ledger::port::Ledger;
use kore_ingest_shared::ledger::{
    Delivery, Origin, Outcome, OutcomeCounts, QuarantineEntry, QuarantineKind, UsageLedger,
};
use kore_ingest_shared::metrics::{InvocationMetrics, take_cold_start};
use kore_ingest_shared::signature::{
    KORE_SIGNATURE_HEADER, SignatureError, TWILIO_SIGNATURE_HEADER, Verified,
    verify_kore_signature, verify_twilio_signature,
};
use kore_ingest_shared::spill::SpilledRequest;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};
use tracing::{info, warn};

use config::Secrets;
pub use config::WebhookConfig;

/// The webhook: the ledger and its configuration, built once per cold start.
#[derive(Debug, Clone)]
pub struct Webhook<L = UsageLedger> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Events,
    Callbacks(CallbackKind),
    Health,
}

impl Route {
    /// Routes on the path (a trailing `/` is ignored).
    fn of(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/events" => Some(Route::Events),
            "/health" => Some(Route::Health),
            other => other
                .strip_prefix("/callbacks/")
                .and_then(CallbackKind::from_path_segment)
                .map(Route::Callbacks),
        }
    }

    fn allowed_methods(self) -> &'static [&'static str] {
        match self {
            Route::Events => &["POST"],
            Route::Callbacks(_) => &["POST", "GET"],
            Route::Health => &["GET"],
        }
    }

    /// The path as the sender sees it, appended to `WEBHOOK_PUBLIC_URL` for signing.
    fn public_path(self) -> String {
        match self {
            Route::Events => "/events".into(),
            Route::Health => "/health".into(),
            Route::Callbacks(kind) => format!("/callbacks/{kind}"),
        }
    }
}

/// Why a request was not authenticated (logged, never answered: a 401 says nothing more).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(
        "a KORE-signed GET callback: KORE does not sign the query, which is its payload (ALLOW_KORE_GET_CALLBACKS is off)"
    )]
    KoreGetCallback,
    #[error(
        "an empty kore-signature: unsigned requests are accepted only with ALLOW_UNSIGNED and no KORE secret configured"
    )]
    Unsigned,
}

/// The raw text of a batch element, as received.
fn raw_of(item: &ParsedItem) -> &str {
    match item {
        Ok(event) => &event.raw,
        Err(rejected) => &rejected.raw,
    }
}

/// How much of the time budget a spill to the stream keeps for itself.
fn spill_reserve(budget: std::time::Duration) -> std::time::Duration {
    (budget / 4).min(std::time::Duration::from_millis(1000))
}

/// Why a body is refused before it is looked at.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TooLarge,
    UnsupportedType,
}

fn webhook_delivery(request_id: &str, provider: Option<Provider>) -> Delivery {
    Delivery {
        provider_hint: provider,
        ..Delivery::now(Origin::Webhook {
            request_id: request_id.to_owned(),
        })
    }
}

/// A JSON response with the given status.
fn json_response(status: i64, body: Value) -> LambdaFunctionUrlResponse {
    let mut response = LambdaFunctionUrlResponse::default();
    response.status_code = status;
    response.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.body = Some(body.to_string());
    response
}

fn error_response(status: i64, error: &str) -> LambdaFunctionUrlResponse {
    json_response(status, json!({ "error": error }))
}

/// What the request is, decoded once.
struct Incoming<'a> {
    method: String,
    route: Route,
    headers: &'a HeaderMap,
    body: Vec<u8>,
    query: &'a str,
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
        let Some(route) = Route::of(request.raw_path.as_deref().unwrap_or("/")) else {
            return error_response(404, "not found");
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
            return response;
        }
        if route == Route::Health {
            return json_response(
                200,
                json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
            );
        }

        let raw_body = request.body.as_deref().unwrap_or_default();
        let body = if request.is_base64_encoded {
            match BASE64.decode(raw_body) {
                Ok(bytes) => bytes,
                Err(_) => return error_response(400, "body is not valid base64"),
            }
        } else {
            raw_body.as_bytes().to_vec()
        };
        let incoming = Incoming {
            method,
            route,
            headers: &request.headers,
            body,
            query: request.raw_query_string.as_deref().unwrap_or_default(),
        };
        let refusal = if incoming.body.len() > self.config.max_body_bytes {
            Some(Refusal::TooLarge)
        } else if unsupported_media_type(&incoming) {
            Some(Refusal::UnsupportedType)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return self
                .refuse(&incoming, request, request_id, refusal, metrics)
                .await;
        }

        let provider = match self.authenticate(&incoming, request).await {
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
            Route::Events => self.events(&incoming, &delivery, deadline, metrics).await,
            Route::Callbacks(kind) => self.callback(&incoming, kind, &delivery, metrics).await,
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
        request: &LambdaFunctionUrlRequest,
        request_id: &str,
        refusal: Refusal,
        metrics: &mut InvocationMetrics,
    ) -> LambdaFunctionUrlResponse {
        let (status, error) = match refusal {
            Refusal::TooLarge => (413, "body too large"),
            Refusal::UnsupportedType => (415, "unsupported content type"),
        };
        let Ok(provider) = self.authenticate(incoming, request).await else {
            return error_response(status, error);
        };
        let reason = match refusal {
            Refusal::TooLarge => format!(
                "the body of {} bytes is larger than MAX_BODY_BYTES ({}): answered 413, only its first {} bytes are kept",
                incoming.body.len(),
                self.config.max_body_bytes,
                self.config.max_body_bytes
            ),
            Refusal::UnsupportedType => format!(
                "content type `{}` is not accepted on this route: answered 415",
                content_type(incoming.headers)
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
        match self
            .ledger
            .quarantine_truncated(entry, self.config.max_body_bytes)
            .await
        {
            Ok(id) => {
                warn!(%reason, quarantine_id = %id, "signed body refused; quarantined");
                metrics.count("RecordsQuarantined", 1);
                metrics.count("SignedResponses4xx", 1);
                json_response(status, json!({"error": error, "quarantine_id": id}))
            }
            Err(e) => {
                warn!(error = %e, %reason, "signed body refused and could not be quarantined");
                error_response(503, "storage unavailable; retry")
            }
        }
    }

    /// The URL the sender signed: `WEBHOOK_PUBLIC_URL` (or the Function URL's own domain)
    /// plus the route's path and, for Twilio, the raw query string.
    fn signed_url(&self, incoming: &Incoming<'_>, request: &LambdaFunctionUrlRequest) -> String {
        let base = match &self.config.public_url {
            Some(base) => format!("{base}{}", incoming.route.public_path()),
            None => format!(
                "https://{}{}",
                request
                    .request_context
                    .domain_name
                    .as_deref()
                    .unwrap_or_default(),
                request.raw_path.as_deref().unwrap_or_default()
            ),
        };
        if incoming.query.is_empty() {
            base
        } else {
            format!("{base}?{}", incoming.query)
        }
    }

    /// Which provider signed the request, if the signature is valid. When it does not
    /// match, the secrets may have been rotated: they are read again (rate-limited, see
    /// [`config::SecretsSource`]) and, if they changed, the request is checked once more.
    async fn authenticate(
        &self,
        incoming: &Incoming<'_>,
        request: &LambdaFunctionUrlRequest,
    ) -> Result<Option<Provider>, Refused> {
        let secrets = self.config.secrets();
        let result = self.verify(incoming, request, &secrets);
        let rotated = matches!(
            result,
            Err(Refused::Signature(
                SignatureError::Mismatch { .. } | SignatureError::NoSecrets { .. }
            ))
        );
        if let (true, Some(source)) = (rotated, &self.config.secrets_source)
            && let Some(newer) = source.newer_than(&secrets).await
        {
            return self.verify(incoming, request, &newer);
        }
        result
    }

    /// [`Self::authenticate`] with one set of secrets. A request with both signature headers
    /// must satisfy the one it claims first (KORE's).
    fn verify(
        &self,
        incoming: &Incoming<'_>,
        request: &LambdaFunctionUrlRequest,
        secrets: &Secrets,
    ) -> Result<Option<Provider>, Refused> {
        let url = self.signed_url(incoming, request);
        let header = |name: &str| {
            incoming
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        };
        if let Some(signature) = header(KORE_SIGNATURE_HEADER) {
            // KORE signs the URL without its query, and a GET callback's payload is the query:
            // the signature would cover none of it.
            if incoming.method == "GET" && !self.config.allow_kore_get_callbacks {
                return Err(Refused::KoreGetCallback);
            }
            let verified = verify_kore_signature(
                &secrets.kore,
                &incoming.method,
                &url,
                &incoming.body,
                Some(signature),
            )?;
            // An empty header is an account without a secret: acceptable only when allowed
            // and no KORE secret is configured (a configured secret is always required).
            if verified == Verified::Unsigned
                && !(self.config.allow_unsigned && secrets.kore.is_empty())
            {
                return Err(Refused::Unsigned);
            }
            return Ok(Some(Provider::Kore));
        }
        if let Some(signature) = header(TWILIO_SIGNATURE_HEADER) {
            let params = if incoming.method == "POST" && is_form(incoming.headers) {
                parse_form(&incoming.body).unwrap_or_default()
            } else {
                Vec::new()
            };
            verify_twilio_signature(
                &secrets.twilio,
                &url,
                &params,
                &incoming.body,
                Some(signature),
            )?;
            return Ok(Some(Provider::Twilio));
        }
        // No signature header at all: the provider is unknown, so this bypasses no secret
        // only when none is configured for either.
        if self.config.allow_unsigned && secrets.kore.is_empty() && secrets.twilio.is_empty() {
            Ok(None)
        } else {
            Err(SignatureError::Missing {
                header: "kore-signature or x-twilio-signature",
            }
            .into())
        }
    }

    async fn events(
        &self,
        incoming: &Incoming<'_>,
        delivery: &Delivery,
        deadline: tokio::time::Instant,
        metrics: &mut InvocationMetrics,
    ) -> LambdaFunctionUrlResponse {
        let items = match parse_events(&incoming.body) {
            Ok(items) => items,
            Err(error) => {
                return self
                    .reject(
                        QuarantineKind::Event,
                        &incoming.body,
                        &error.to_string(),
                        delivery,
                        metrics,
                    )
                    .await;
            }
        };
        let inputs: Vec<_> = items
            .into_iter()
            .map(|item| (item, delivery.clone()))
            .collect();
        // With a stream to spill to, storage gets the budget less the time a spill needs.
        let started = deadline - self.config.time_budget;
        let storage_deadline = match self.spill_target() {
            Some(_) => deadline - spill_reserve(self.config.time_budget),
            None => deadline,
        };
        // New writes stop at three quarters of storage's time; whatever is still in flight at
        // the end of it is abandoned (safe: a retry finds it stored or not, never half-applied).
        let no_new_writes = started + (storage_deadline - started) * 3 / 4;
        let Ok(outcomes) = tokio::time::timeout_at(
            storage_deadline,
            self.ledger.record_batch(&inputs, Some(no_new_writes)),
        )
        .await
        else {
            warn!("time budget ran out with writes in flight");
            metrics.count("WritesRetryable", 1);
            // Which were stored is unknown: all of them go; the stored ones come back as
            // duplicates.
            let all: Vec<&str> = inputs.iter().map(|(item, _)| raw_of(item)).collect();
            return match self.spill(&all, delivery, deadline, metrics).await {
                Some(spilled) => json_response(
                    200,
                    json!({"accepted": 0, "duplicates": 0, "conflicts": 0, "quarantined": 0, "spilled": spilled}),
                ),
                None => error_response(503, "not everything was stored in time; retry"),
            };
        };

        let counts: OutcomeCounts = outcomes.iter().collect();
        let mut unstored: Vec<&str> = Vec::new();
        for (outcome, (item, _)) in outcomes.iter().zip(&inputs) {
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
        // Retries are counted per request here: the sender retries (or the stream takes) the
        // request, not single events.
        for (name, n) in counts.metrics() {
            if name != "WritesRetryable" {
                metrics.count(name, n);
            }
        }
        let summary = |spilled: Option<usize>| {
            let mut body = json!({
                "accepted": counts.new,
                "duplicates": counts.duplicate,
                "conflicts": counts.conflict,
                "quarantined": counts.quarantined,
            });
            if let Some(spilled) = spilled {
                body["spilled"] = json!(spilled);
            }
            body
        };
        if let Some(reason) = &counts.first_retry_reason {
            warn!(%reason, "batch not fully stored");
            metrics.count("WritesRetryable", 1);
            // What was not stored goes to the stream; without one, the sender retries the
            // whole batch and what was stored becomes duplicates.
            return match self.spill(&unstored, delivery, deadline, metrics).await {
                Some(spilled) => json_response(200, summary(Some(spilled))),
                None => error_response(503, "not everything was stored; retry"),
            };
        }
        info!(
            events = inputs.len(),
            accepted = counts.new,
            duplicates = counts.duplicate,
            conflicts = counts.conflict,
            quarantined = counts.quarantined,
            "batch stored"
        );
        json_response(200, summary(None))
    }

    /// The stream and client to spill to, when both are configured.
    fn spill_target(&self) -> Option<(&aws_sdk_kinesis::Client, &str)> {
        Some((
            self.config.kinesis.as_ref()?,
            self.config.spill_stream.as_deref()?,
        ))
    }

    /// Hands `events` to the stream before `deadline`; how many events went, or `None` (no
    /// stream configured, or it failed: the sender must retry).
    async fn spill(
        &self,
        events: &[&str],
        delivery: &Delivery,
        deadline: tokio::time::Instant,
        metrics: &mut InvocationMetrics,
    ) -> Option<usize> {
        let (client, stream) = self.spill_target()?;
        let request = SpilledRequest {
            provider: delivery.provider_hint,
            request_id: delivery.origin.locator(),
            received_at: delivery.received_at,
        };
        let put = spill::put(client, stream, &request, events);
        match tokio::time::timeout_at(deadline, put).await {
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

    async fn callback(
        &self,
        incoming: &Incoming<'_>,
        kind: CallbackKind,
        delivery: &Delivery,
        metrics: &mut InvocationMetrics,
    ) -> LambdaFunctionUrlResponse {
        // GET callbacks carry their payload in the query string.
        let payload: &[u8] = if incoming.method == "GET" {
            incoming.query.as_bytes()
        } else {
            &incoming.body
        };
        let callback = match parse_callback(kind, payload, incoming.headers) {
            Ok(callback) => callback,
            Err(error) => {
                let quarantine_kind = QuarantineKind::Callback {
                    kind,
                    idempotency_token: None,
                };
                return self
                    .reject(
                        quarantine_kind,
                        payload,
                        &error.to_string(),
                        delivery,
                        metrics,
                    )
                    .await;
            }
        };
        match self
            .ledger
            .record_callback(&callback, payload, delivery)
            .await
        {
            Ok(outcome) => {
                let duplicate = outcome == CallbackOutcome::Duplicate;
                metrics.count(
                    if duplicate {
                        "CallbacksDuplicate"
                    } else {
                        "CallbacksNew"
                    },
                    1,
                );
                json_response(
                    200,
                    json!({"accepted": u8::from(!duplicate), "duplicates": u8::from(duplicate)}),
                )
            }
            Err(error) if error.is_retryable() => {
                warn!(%error, "callback not stored; asking the sender to retry");
                error_response(503, "storage unavailable; retry")
            }
            Err(error) => {
                let reason = error.to_string();
                let quarantine_kind = QuarantineKind::Callback {
                    kind,
                    idempotency_token: Some(callback.idempotency_token.clone()),
                };
                match self
                    .quarantine_payload(quarantine_kind, payload, &reason, delivery)
                    .await
                {
                    Some(_) => json_response(200, json!({"accepted": 0, "quarantined": 1})),
                    None => error_response(503, "storage unavailable; retry"),
                }
            }
        }
    }

    /// A signed payload that cannot be parsed: quarantined, then 400 naming the reason (a
    /// retry cannot help); 503 if even the quarantine write failed, so nothing is lost.
    async fn reject(
        &self,
        kind: QuarantineKind,
        payload: &[u8],
        reason: &str,
        delivery: &Delivery,
        metrics: &mut InvocationMetrics,
    ) -> LambdaFunctionUrlResponse {
        match self
            .quarantine_payload(kind, payload, reason, delivery)
            .await
        {
            Some(id) => {
                metrics.count("RecordsQuarantined", 1);
                metrics.count("SignedResponses4xx", 1);
                json_response(400, json!({"error": reason, "quarantine_id": id}))
            }
            None => error_response(503, "storage unavailable; retry"),
        }
    }

    async fn quarantine_payload(
        &self,
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
        match self.ledger.quarantine(entry).await {
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
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers) == "application/x-www-form-urlencoded"
}

/// True (answered 415) when a body arrives in a type the route does not take. A missing type
/// is accepted (the body is parsed as the route expects).
fn unsupported_media_type(incoming: &Incoming<'_>) -> bool {
    let kind = content_type(incoming.headers);
    let accepted = match incoming.route {
        _ if kind.is_empty() => true,
        Route::Events => matches!(
            kind.as_str(),
            "application/json"
                | "application/cloudevents+json"
                | "application/cloudevents-batch+json"
        ),
        Route::Callbacks(_) => {
            incoming.method == "GET" || kind == "application/x-www-form-urlencoded"
        }
        Route::Health => true,
    };
    !accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/events"), Some(Route::Events));
        assert_eq!(Route::of("/events/"), Some(Route::Events));
        assert_eq!(Route::of("/health"), Some(Route::Health));
        assert_eq!(
            Route::of("/callbacks/esim-profiles"),
            Some(Route::Callbacks(CallbackKind::EsimProfiles))
        );
        assert_eq!(Route::of("/callbacks/calls"), None);
        assert_eq!(Route::of("/"), None);
        assert_eq!(Route::of("/eventsx"), None);
        assert_eq!(Route::of("/lambda-url/webhook/events"), None);
    }
}
