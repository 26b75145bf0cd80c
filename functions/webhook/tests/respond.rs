//! `Webhook::respond` in process, on Lambda Function URL events, against a scripted fake of
//! the ledger (no server): every status the webhook answers, and when. The wiring to
//! DynamoDB (and the Kinesis spill, Secrets Manager) is tested in `tests/webhook*.rs`.
//!
//! | status | when |
//! | --- | --- |
//! | 200 | everything stored (duplicates, conflicts and bad elements included); callbacks; health |
//! | 400 | a signed body or callback that cannot be parsed (quarantined first), a body that is not base64 |
//! | 401 | a signature missing, empty, wrong, or not covering the payload |
//! | 404, 405 | another path or method |
//! | 413, 415 | a body too large or of another type (quarantined first when signed) |
//! | 503 | storage failed or ran out of time, or the quarantine write failed |
//!
//! With `SPILL_STREAM`, what storage could not take goes to the Kinesis stream and is
//! answered 200 (`"spilled"`), or 503 when the stream refuses it too: that needs a Kinesis
//! client, so it is tested against kinesalite in `tests/webhook_spill.rs`.

use std::time::{Duration, Instant};

use kore_ingest_core::callback::{CallbackKind, parse_form};
use kore_ingest_core::config::Env;
use kore_ingest_core::delivery::Origin;
use kore_ingest_core::event::Provider;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::quarantine::QuarantineKind;
use kore_ingest_core::signature::{kore_signature, twilio_signature};
use kore_test_support::fake_ledger::{FakeLedger, Quarantined};
use kore_test_support::{function_url_request, kore_batch, twilio_json_signature};
use serde_json::{Value, json};
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const KORE_ACTIVE: &str = "kore-active-secret";
const KORE_PENDING: &str = "kore-pending-secret";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const SIM: &str = "HS0000000000000000000000000000web";
const SIM_FORM: &str = include_str!("../../../tests/fixtures/callback-sim-status.form");
const COMMAND_FORM: &str = include_str!("../../../tests/fixtures/callback-command.form");

/// The configuration under test, with some variables set otherwise (an empty value unsets
/// one).
fn config_with(vars: &[(&str, &str)]) -> WebhookConfig {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    WebhookConfig::from_env(&Env::from_fn(move |name| {
        if let Some((_, value)) = vars.iter().find(|(k, _)| k == name) {
            return Some(value.clone()).filter(|v| !v.is_empty());
        }
        match name {
            "KORE_WEBHOOK_SECRETS" => Some(format!("{KORE_ACTIVE},{KORE_PENDING}")),
            "TWILIO_AUTH_TOKENS" => Some(TWILIO_TOKEN.into()),
            "WEBHOOK_PUBLIC_URL" => Some(PUBLIC_URL.into()),
            _ => None,
        }
    }))
    .unwrap()
}

fn webhook_with(vars: &[(&str, &str)]) -> Webhook<FakeLedger> {
    Webhook {
        ledger: FakeLedger::new(),
        config: config_with(vars),
    }
}

fn webhook() -> Webhook<FakeLedger> {
    webhook_with(&[])
}

#[derive(Debug)]
struct Reply {
    status: i64,
    body: Value,
    allow: Option<String>,
    metrics: InvocationMetrics,
}

async fn send(
    webhook: &Webhook<FakeLedger>,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let request = function_url_request(method, path, query, headers, body);
    let mut metrics = InvocationMetrics::new("webhook");
    let response = webhook.respond(&request, "req-test", &mut metrics).await;
    assert_eq!(
        response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    Reply {
        status: response.status_code,
        body: serde_json::from_str(response.body.as_deref().unwrap_or("null")).unwrap(),
        allow: response
            .headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        metrics,
    }
}

fn kore_signed(secret: &str, path: &str, method: &str, body: &[u8]) -> String {
    kore_signature(
        secret.as_bytes(),
        method,
        &format!("{PUBLIC_URL}{path}"),
        body,
    )
}

async fn post_kore(webhook: &Webhook<FakeLedger>, secret: &str, body: &[u8]) -> Reply {
    let signature = kore_signed(secret, "/events", "POST", body);
    let headers = [
        ("Content-Type", "application/json"),
        ("Kore-Signature", signature.as_str()),
    ];
    send(webhook, "POST", "/events", "", &headers, Some(body)).await
}

async fn post_kore_callback(webhook: &Webhook<FakeLedger>, form: &str, token: &str) -> Reply {
    let signature = kore_signed(KORE_ACTIVE, "/callbacks/sims", "POST", form.as_bytes());
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Kore-Signature", signature.as_str()),
        ("Kore-Idempotency-Token", token),
    ];
    let body = Some(form.as_bytes());
    send(webhook, "POST", "/callbacks/sims", "", &headers, body).await
}

fn only(quarantined: Vec<Quarantined>) -> Quarantined {
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    quarantined.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_stored_batch_gets_200_with_what_became_of_each_event() {
    let webhook = webhook();
    let (samples, body) = kore_batch(3, SIM, "A");

    let first = post_kore(&webhook, KORE_ACTIVE, body.as_bytes()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body,
        json!({"accepted": 3, "duplicates": 0, "conflicts": 0, "quarantined": 0})
    );
    assert_eq!(first.metrics.get("EventsNew"), 3.0);
    let recorded = webhook.ledger.recorded();
    assert!(recorded.iter().all(|(_, delivery)| {
        delivery.origin
            == Origin::Webhook {
                request_id: "req-test".into(),
            }
            && delivery.provider_hint == Some(Provider::Kore)
    }));

    // A sender retry: duplicates, still 200.
    let again = post_kore(&webhook, KORE_ACTIVE, body.as_bytes()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["duplicates"], 3);

    // The same events from Twilio, a conflicting copy and an element that is not an event:
    // nothing for the sender to retry, so 200 too.
    let mut changed = samples[0].clone();
    changed.window = (1, 1);
    let twilio_body = format!(
        "[{},{},{{\"specversion\":\"1.0\"}}]",
        samples[1].twilio_json(),
        changed.kore_json()
    );
    let (query, signature) = twilio_json_signature(
        TWILIO_TOKEN,
        &format!("{PUBLIC_URL}/events"),
        twilio_body.as_bytes(),
    );
    let headers = [
        ("content-type", "application/json"),
        ("x-twilio-signature", signature.as_str()),
    ];
    let mixed = send(
        &webhook,
        "POST",
        "/events",
        &query,
        &headers,
        Some(twilio_body.as_bytes()),
    )
    .await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    assert_eq!(
        mixed.body,
        json!({"accepted": 0, "duplicates": 1, "conflicts": 1, "quarantined": 1})
    );
    let mut kinds: Vec<QuarantineKind> = webhook
        .ledger
        .quarantined()
        .into_iter()
        .map(|q| q.kind)
        .collect();
    kinds.sort_by_key(QuarantineKind::name);
    assert_eq!(kinds, [QuarantineKind::Conflict, QuarantineKind::Event]);
    assert_eq!(webhook.ledger.stored().len(), 3);
}

#[tokio::test]
async fn health_answers_200_without_storage() {
    let webhook = webhook();
    let health = send(&webhook, "GET", "/health", "", &[], None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    assert!(webhook.ledger.recorded().is_empty());
}

#[tokio::test]
async fn callbacks_by_post_and_get_get_200_and_are_stored_once() {
    let webhook = webhook();
    let form = SIM_FORM.trim_end();
    for expected in [
        json!({"accepted": 1, "duplicates": 0}),
        json!({"accepted": 0, "duplicates": 1}),
    ] {
        let reply = post_kore_callback(&webhook, form, "RQa48ec9b6ef475034c35566c02b654243").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, expected);
    }

    // Twilio, GET: the payload is the query, which the signature covers.
    let command = COMMAND_FORM.trim_end();
    let get_signature = twilio_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/callbacks/sms-commands?{command}"),
        &[],
    );
    let headers = [
        ("X-Twilio-Signature", get_signature.as_str()),
        (
            "I-Twilio-Idempotency-Token",
            "6f1c2b9e-2d4a-4c8e-9a51-0d7e3b1f2a44",
        ),
    ];
    let reply = send(
        &webhook,
        "GET",
        "/callbacks/sms-commands",
        command,
        &headers,
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Twilio form POST: the signature covers the URL and the sorted parameters.
    let params = parse_form(command.as_bytes()).unwrap();
    let post_signature = twilio_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/callbacks/ip-commands"),
        &params,
    );
    let headers = [
        (
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("X-Twilio-Signature", post_signature.as_str()),
        (
            "I-Twilio-Idempotency-Token",
            "7f1c2b9e-2d4a-4c8e-9a51-0d7e3b1f2a44",
        ),
    ];
    let reply = send(
        &webhook,
        "POST",
        "/callbacks/ip-commands",
        "",
        &headers,
        Some(command.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let stored: Vec<(CallbackKind, Provider)> = webhook
        .ledger
        .callbacks()
        .iter()
        .map(|c| (c.callback.kind, c.callback.provider))
        .collect();
    assert_eq!(
        stored,
        [
            (CallbackKind::Sims, Provider::Kore),
            (CallbackKind::SmsCommands, Provider::Twilio),
            (CallbackKind::IpCommands, Provider::Twilio),
        ]
    );
}

/// A callback the ledger refuses for good (not for a passing reason) is kept in the
/// quarantine with its kind and token: nothing is lost, and a retry would not help.
#[tokio::test]
async fn a_callback_refused_for_good_is_quarantined_and_answered_200() {
    let webhook = Webhook {
        ledger: FakeLedger::new().fail_callbacks(LedgerError::Rejected {
            operation: "PutItem",
            code: Some("ValidationException".into()),
            message: "item too large".into(),
        }),
        config: config_with(&[]),
    };
    let reply = post_kore_callback(
        &webhook,
        SIM_FORM.trim_end(),
        "RQ0000000000000000000000000000good",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, json!({"accepted": 0, "quarantined": 1}));
    let kept = only(webhook.ledger.quarantined());
    assert_eq!(
        kept.kind,
        QuarantineKind::Callback {
            kind: CallbackKind::Sims,
            idempotency_token: Some("RQ0000000000000000000000000000good".into()),
        }
    );
    assert_eq!(kept.payload, SIM_FORM.trim_end().as_bytes());

    // Not even the quarantine can take it: the sender must retry.
    let nowhere = Webhook {
        ledger: FakeLedger::new()
            .fail_callbacks(LedgerError::Rejected {
                operation: "PutItem",
                code: Some("ValidationException".into()),
                message: "item too large".into(),
            })
            .fail_quarantine(),
        config: config_with(&[]),
    };
    let reply = post_kore_callback(
        &nowhere,
        SIM_FORM.trim_end(),
        "RQ0000000000000000000000000000good",
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
}

#[tokio::test]
async fn a_signed_payload_that_cannot_be_parsed_is_quarantined_then_answered_400() {
    let webhook = webhook();
    let body = br#"{"specversion":"1.0", "type": "com.kore.iot"#;
    let reply = post_kore(&webhook, KORE_ACTIVE, body).await;
    assert_eq!(reply.status, 400);
    let reason = reply.body["error"].as_str().unwrap();
    assert!(reason.contains("not valid JSON"), "{}", reply.body);
    let kept = only(webhook.ledger.quarantined());
    assert_eq!(reply.body["quarantine_id"], kept.id.as_str());
    assert_eq!(kept.payload, body);
    assert_eq!(kept.provider, Some(Provider::Kore));
    assert_eq!(
        kept.origin,
        Origin::Webhook {
            request_id: "req-test".into()
        }
    );
    assert_eq!(reply.metrics.get("SignedResponses4xx"), 1.0);

    // An empty callback form.
    let empty = post_kore_callback(&webhook, "", "RQ00000000000000000000000000empty").await;
    assert_eq!(empty.status, 400, "{}", empty.body);
    assert_eq!(empty.body["error"], "callback payload is empty");
    assert_eq!(webhook.ledger.quarantined().len(), 2);

    // A body flagged base64 that is not: nothing to verify, nothing kept.
    let mut request = function_url_request("POST", "/events", "", &[], Some(b"[]"));
    request.is_base64_encoded = true;
    request.body = Some("not base64!".into());
    let mut metrics = InvocationMetrics::new("webhook");
    let response = webhook.respond(&request, "req-b64", &mut metrics).await;
    assert_eq!(response.status_code, 400);
    assert_eq!(webhook.ledger.quarantined().len(), 2);
}

#[tokio::test]
async fn signatures_that_are_missing_wrong_or_not_covering_the_payload_get_401() {
    let webhook = webhook();
    let (_, body) = kore_batch(2, SIM, "U");
    let json = ("Content-Type", "application/json");
    let wrong = kore_signed("not-the-secret", "/events", "POST", body.as_bytes());
    let other_path = kore_signed(KORE_ACTIVE, "/callbacks/sims", "POST", body.as_bytes());
    let url_only = twilio_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/events"),
        &[],
    );
    let cases: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "wrong secret",
            vec![json, ("Kore-Signature", wrong.as_str())],
        ),
        (
            "signed for another route",
            vec![json, ("Kore-Signature", other_path.as_str())],
        ),
        ("missing", vec![json]),
        (
            "empty without ALLOW_UNSIGNED",
            vec![json, ("Kore-Signature", "")],
        ),
        (
            "twilio garbage",
            vec![json, ("X-Twilio-Signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
        ),
        // Twilio over the URL alone: no form, no bodySHA256, so the body is not covered.
        (
            "twilio URL only",
            vec![json, ("X-Twilio-Signature", url_only.as_str())],
        ),
    ];
    for (case, headers) in cases {
        let reply = send(
            &webhook,
            "POST",
            "/events",
            "",
            &headers,
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(reply.status, 401, "{case}");
        assert_eq!(reply.body, json!({"error": "unauthorized"}), "{case}");
        assert_eq!(reply.metrics.get("SignatureRejected"), 1.0, "{case}");
    }

    // A KORE-signed body that is not UTF-8 (a length extension carries SHA-256 padding).
    let binary = [0xffu8, 0xfe, 0x00];
    let signature = kore_signed(KORE_ACTIVE, "/events", "POST", &binary);
    let reply = send(
        &webhook,
        "POST",
        "/events",
        "",
        &[("Kore-Signature", signature.as_str())],
        Some(&binary),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    // A Twilio callback body without a form type: the signature covers the URL only.
    let form = "SimSid=HS000000000000000000000000000forged&SimStatus=inactive";
    let signature = twilio_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/callbacks/sims"),
        &[],
    );
    let headers = [
        ("X-Twilio-Signature", signature.as_str()),
        (
            "I-Twilio-Idempotency-Token",
            "1f7e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
        ),
    ];
    let reply = send(
        &webhook,
        "POST",
        "/callbacks/sims",
        "",
        &headers,
        Some(form.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    assert!(webhook.ledger.recorded().is_empty());
    assert!(webhook.ledger.callbacks().is_empty());
    assert!(webhook.ledger.quarantined().is_empty());

    // During a rotation KORE switches to the pending secret at once.
    let pending = post_kore(&webhook, KORE_PENDING, body.as_bytes()).await;
    assert_eq!(pending.status, 200, "{}", pending.body);
}

/// KORE drops the query before signing, and a GET callback's payload is its query: refused
/// unless ALLOW_KORE_GET_CALLBACKS.
#[tokio::test]
async fn kore_signed_get_callbacks_get_401_unless_allowed() {
    let query =
        "ApiVersion=v1&SimSid=HS000000000000000000000000kore0get&SimStatus=active&AccountSid=AC1";
    let signature = kore_signed(KORE_ACTIVE, "/callbacks/sims", "GET", b"");
    let headers = [
        ("Kore-Signature", signature.as_str()),
        (
            "Kore-Idempotency-Token",
            "RQ0000000000000000000000000000kget",
        ),
    ];
    let refusing = webhook();
    let reply = send(&refusing, "GET", "/callbacks/sims", query, &headers, None).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(refusing.ledger.callbacks().is_empty());

    let allowing = webhook_with(&[("ALLOW_KORE_GET_CALLBACKS", "true")]);
    let reply = send(&allowing, "GET", "/callbacks/sims", query, &headers, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(allowing.ledger.callbacks().len(), 1);
}

/// ALLOW_UNSIGNED is for a provider without a secret; it never lets an unsigned request
/// past a secret that is configured.
#[tokio::test]
async fn allow_unsigned_never_bypasses_a_configured_secret() {
    let (_, body) = kore_batch(2, SIM, "N");
    let json = ("Content-Type", "application/json");
    let empty = ("Kore-Signature", "");
    let with_secrets = webhook_with(&[("ALLOW_UNSIGNED", "true")]);
    for headers in [vec![json, empty], vec![json]] {
        let reply = send(
            &with_secrets,
            "POST",
            "/events",
            "",
            &headers,
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(reply.status, 401, "{headers:?}: {}", reply.body);
    }
    assert!(with_secrets.ledger.recorded().is_empty());

    // No KORE secret: an empty Kore-Signature (a KORE account without one) is accepted...
    let no_kore_secret = webhook_with(&[("ALLOW_UNSIGNED", "true"), ("KORE_WEBHOOK_SECRETS", "")]);
    let reply = send(
        &no_kore_secret,
        "POST",
        "/events",
        "",
        &[json, empty],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // ... but no header at all is not, while Twilio still has a token configured.
    let reply = send(
        &no_kore_secret,
        "POST",
        "/events",
        "",
        &[json],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn other_paths_get_404_and_other_methods_405_with_allow() {
    let webhook = webhook();
    for path in [
        "/nope",
        "/callbacks/calls",
        "/",
        "/eventsx",
        "/lambda-url/webhook/events",
    ] {
        assert_eq!(
            send(&webhook, "GET", path, "", &[], None).await.status,
            404,
            "{path}"
        );
    }
    let reply = send(&webhook, "GET", "/events", "", &[], None).await;
    assert_eq!((reply.status, reply.allow.as_deref()), (405, Some("POST")));
    let reply = send(&webhook, "DELETE", "/callbacks/sims", "", &[], None).await;
    assert_eq!(
        (reply.status, reply.allow.as_deref()),
        (405, Some("POST, GET"))
    );
    let reply = send(&webhook, "POST", "/health", "", &[], None).await;
    assert_eq!((reply.status, reply.allow.as_deref()), (405, Some("GET")));
    // A trailing slash is the same route.
    assert_eq!(
        send(&webhook, "GET", "/health/", "", &[], None)
            .await
            .status,
        200
    );
}

/// Twilio discards a delivery answered with 4xx: an authenticated body refused for its size
/// or type is quarantined first (a too large one only its start, with its size); an
/// unauthenticated one is not.
#[tokio::test]
async fn bodies_too_large_or_of_another_type_get_413_and_415_and_are_kept_when_signed() {
    let webhook = webhook_with(&[("MAX_BODY_BYTES", "1024")]);
    let (_, big) = kore_batch(10, SIM, "L");
    assert!(big.len() > 2048);
    let unsigned = send(
        &webhook,
        "POST",
        "/events",
        "",
        &[("Content-Type", "application/json")],
        Some(big.as_bytes()),
    )
    .await;
    assert_eq!(unsigned.status, 413);
    assert_eq!(unsigned.body, json!({"error": "body too large"}));
    let xml = b"<events><event id=\"EZ1\"/></events>";
    let unsigned = send(
        &webhook,
        "POST",
        "/events",
        "",
        &[("Content-Type", "application/xml")],
        Some(xml),
    )
    .await;
    assert_eq!(unsigned.status, 415);
    assert!(webhook.ledger.quarantined().is_empty());

    let too_large = post_kore(&webhook, KORE_ACTIVE, big.as_bytes()).await;
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    let kept = only(webhook.ledger.quarantined());
    assert_eq!(too_large.body["quarantine_id"], kept.id.as_str());
    assert_eq!(kept.payload, big.as_bytes()[..1024]);
    assert_eq!(kept.size, big.len());
    assert!(
        kept.reason.contains(&big.len().to_string()),
        "{}",
        kept.reason
    );
    assert_eq!(too_large.metrics.get("SignedResponses4xx"), 1.0);

    let signature = kore_signed(KORE_ACTIVE, "/events", "POST", xml);
    let headers = [
        ("Content-Type", "application/xml"),
        ("Kore-Signature", signature.as_str()),
    ];
    let wrong_type = send(&webhook, "POST", "/events", "", &headers, Some(xml)).await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.body);
    let kept = webhook.ledger.quarantined();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[1].payload, xml);
    assert!(
        kept[1].reason.contains("application/xml"),
        "{}",
        kept[1].reason
    );
    assert!(webhook.ledger.recorded().is_empty());

    // JSON to a callback route is another type too.
    let signature = kore_signed(KORE_ACTIVE, "/callbacks/sims", "POST", b"{}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Kore-Signature", signature.as_str()),
    ];
    let json_callback = send(
        &webhook,
        "POST",
        "/callbacks/sims",
        "",
        &headers,
        Some(b"{}"),
    )
    .await;
    assert_eq!(json_callback.status, 415, "{}", json_callback.body);
    assert!(matches!(
        webhook.ledger.quarantined()[2].kind,
        QuarantineKind::Callback {
            kind: CallbackKind::Sims,
            ..
        }
    ));
}

/// What a retry can fix gets 503, so that KORE and Twilio deliver it again: storage failing,
/// storage too slow for the sender's 5 s, and a quarantine write failing (a 4xx would make
/// Twilio discard a payload that was never kept).
#[tokio::test]
async fn storage_failures_get_503_and_the_retry_is_exact() {
    let (samples, body) = kore_batch(4, SIM, "D");
    let failing = samples[2].event_sid.clone();
    let webhook = Webhook {
        ledger: FakeLedger::new().fail_event(&failing),
        config: config_with(&[]),
    };
    let down = post_kore(&webhook, KORE_ACTIVE, body.as_bytes()).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body["error"], "not everything was stored; retry");
    assert_eq!(down.metrics.get("WritesRetryable"), 1.0);
    assert_eq!(webhook.ledger.stored().len(), 3);

    webhook.ledger.heal();
    let retried = post_kore(&webhook, KORE_ACTIVE, body.as_bytes()).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(
        (
            retried.body["accepted"].as_u64(),
            retried.body["duplicates"].as_u64()
        ),
        (Some(1), Some(3))
    );

    // The quarantine cannot be written: neither a 400 nor a 413 may be answered.
    let no_quarantine = Webhook {
        ledger: FakeLedger::new().fail_quarantine(),
        config: config_with(&[("MAX_BODY_BYTES", "64")]),
    };
    let unparseable = post_kore(&no_quarantine, KORE_ACTIVE, b"not json").await;
    assert_eq!(unparseable.status, 503, "{}", unparseable.body);
    let too_large = post_kore(&no_quarantine, KORE_ACTIVE, body.as_bytes()).await;
    assert_eq!(too_large.status, 503, "{}", too_large.body);

    // A callback the ledger could not store for a passing reason.
    let throttled = Webhook {
        ledger: FakeLedger::new().fail_callbacks(LedgerError::Retryable {
            operation: "TransactWriteItems",
            code: Some("TransactionCanceledException".into()),
            message: "throttled".into(),
        }),
        config: config_with(&[]),
    };
    let reply = post_kore_callback(
        &throttled,
        SIM_FORM.trim_end(),
        "RQ00000000000000000000000000cancel",
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(throttled.ledger.quarantined().is_empty());
}

#[tokio::test]
async fn storage_slower_than_the_time_budget_gets_503_within_it() {
    let webhook = Webhook {
        ledger: FakeLedger::new().delay_batches(Duration::from_secs(10)),
        config: config_with(&[("TIME_BUDGET_MS", "300")]),
    };
    let (_, body) = kore_batch(5, SIM, "S");
    let started = Instant::now();
    let reply = post_kore(&webhook, KORE_ACTIVE, body.as_bytes()).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        reply.body["error"],
        "not everything was stored in time; retry"
    );
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
}
