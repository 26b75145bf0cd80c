//! The `webhook` function's handler, called with Lambda Function URL events, against
//! DynamoDB Local.

use integration_tests::faults::{Throttle, WEBHOOK, as_function, throttled_client};
use integration_tests::*;
use kore_ingest_shared::event::Provider;
use kore_ingest_shared::ledger::{LedgerConfig, UsageLedger};
use kore_ingest_shared::metrics::InvocationMetrics;
use kore_ingest_shared::signature::{kore_signature, twilio_signature};
use serde_json::Value;
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const KORE_ACTIVE: &str = "kore-active-secret";
const KORE_PENDING: &str = "kore-pending-secret";
const KORE_RETIRED: &str = "kore-retired-secret";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const SIM: &str = "HS0000000000000000000000000000web";

/// The handler under test. The time budget is generous: these tests are about answers, not
/// timing (DynamoDB Local on a loaded 2-core machine can take seconds for 50 transactions);
/// `stalled_storage_gets_503_within_the_time_budget` sets its own.
fn config() -> WebhookConfig {
    config_with(&[])
}

/// [`config`] with some variables set otherwise (an empty value unsets one).
fn config_with(vars: &[(&str, &str)]) -> WebhookConfig {
    WebhookConfig::from_vars(|name| {
        if let Some((_, value)) = vars.iter().find(|(k, _)| *k == name) {
            return Some((*value).to_owned()).filter(|v| !v.is_empty());
        }
        match name {
            "TIME_BUDGET_MS" => Some("30000".into()),
            "KORE_WEBHOOK_SECRETS" => Some(format!("{KORE_ACTIVE},{KORE_PENDING}")),
            "TWILIO_AUTH_TOKENS" => Some(TWILIO_TOKEN.into()),
            "WEBHOOK_PUBLIC_URL" => Some(PUBLIC_URL.into()),
            _ => None,
        }
    })
    .unwrap()
}

async fn webhook(test: &str) -> Webhook {
    Webhook {
        ledger: fresh_ledger(test).await,
        config: config(),
    }
}

struct Reply {
    status: i64,
    body: Value,
}

async fn send(
    webhook: &Webhook,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let request = function_url_request(method, path, query, headers, body);
    let mut metrics = InvocationMetrics::new("webhook");
    let response = as_function(WEBHOOK, webhook.respond(&request, "req-test", &mut metrics)).await;
    Reply {
        status: response.status_code,
        body: serde_json::from_str(response.body.as_deref().unwrap_or("null")).unwrap(),
    }
}

fn kore_signed(secret: &str, body: &str) -> String {
    kore_signature(
        secret.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/events"),
        body.as_bytes(),
    )
}

async fn post_kore_events(webhook: &Webhook, secret: &str, body: &str) -> Reply {
    let signature = kore_signed(secret, body);
    let headers = [
        ("Content-Type", "application/json"),
        ("Kore-Signature", signature.as_str()),
        ("User-Agent", "KoreProxy/1.1"),
    ];
    send(
        webhook,
        "POST",
        "/events",
        "",
        &headers,
        Some(body.as_bytes()),
    )
    .await
}

#[tokio::test]
async fn kore_signed_batch_of_50_then_again_then_from_twilio_counts_once() {
    let webhook = webhook("wh-batch").await;
    let (samples, body) = kore_batch(50, SIM, "B");

    let first = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["accepted"], 50);
    let day = webhook
        .ledger
        .sim_usage(SIM, "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    let expected: u64 = window_bytes(&samples);
    assert_eq!((day.usage.total, day.usage_events), (expected, 50));

    let again = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        (
            again.body["accepted"].clone(),
            again.body["duplicates"].clone()
        ),
        (0.into(), 50.into())
    );

    // The same events from Twilio: JSON body, bodySHA256 in the URL, X-Twilio-Signature.
    let twilio_body = format!(
        "[{}]",
        samples
            .iter()
            .map(SampleEvent::twilio_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    let (query, signature) = twilio_json_signature(
        TWILIO_TOKEN,
        &format!("{PUBLIC_URL}/events"),
        twilio_body.as_bytes(),
    );
    let headers = [
        ("content-type", "application/json"),
        ("x-twilio-signature", signature.as_str()),
        (
            "I-Twilio-Idempotency-Token",
            "0f7e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
        ),
    ];
    let twilio = send(
        &webhook,
        "POST",
        "/events",
        &query,
        &headers,
        Some(twilio_body.as_bytes()),
    )
    .await;
    assert_eq!(twilio.status, 200, "{}", twilio.body);
    assert_eq!(twilio.body["duplicates"], 50);

    let day = webhook
        .ledger
        .sim_usage(SIM, "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage.total, day.usage_events), (expected, 50));
    let from = chrono::DateTime::parse_from_rfc3339("2024-11-03T00:00:00Z")
        .unwrap()
        .to_utc();
    let events = webhook
        .ledger
        .events_between(from, from + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(events.len(), 50);
    assert!(
        events
            .iter()
            .all(|e| e.delivered_by("kore") && e.delivered_by("twilio"))
    );
}

#[tokio::test]
async fn bad_signatures_get_401_and_store_nothing_while_the_pending_secret_works() {
    let webhook = webhook("wh-auth").await;
    let (_, body) = kore_batch(3, SIM, "A");
    let json = ("Content-Type", "application/json");

    let wrong = kore_signed("not-the-secret", &body);
    let retired = kore_signed(KORE_RETIRED, &body);
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("wrong", vec![json, ("Kore-Signature", wrong.as_str())]),
        ("retired", vec![json, ("Kore-Signature", retired.as_str())]),
        ("missing", vec![json]),
        (
            "empty (unsigned account) without ALLOW_UNSIGNED",
            vec![json, ("Kore-Signature", "")],
        ),
        (
            "twilio garbage",
            vec![json, ("X-Twilio-Signature", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
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
        assert_eq!(
            reply.body,
            serde_json::json!({"error": "unauthorized"}),
            "{case}"
        );
    }
    assert_eq!(
        webhook.ledger.sim_usage(SIM, "2024-11-03").await.unwrap(),
        None
    );
    assert!(webhook.ledger.list_quarantine(10).await.unwrap().is_empty());

    // During a rotation KORE switches to the pending secret at once.
    let pending = post_kore_events(&webhook, KORE_PENDING, &body).await;
    assert_eq!(pending.status, 200);
    assert_eq!(pending.body["accepted"], 3);
}

#[tokio::test]
async fn callbacks_by_post_and_get_from_both_providers_are_stored_once() {
    let webhook = webhook("wh-callbacks").await;
    let form = include_str!("fixtures/callback-sim-status.form").trim_end();
    let kore_sig = kore_signature(
        KORE_ACTIVE.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/callbacks/sims"),
        form.as_bytes(),
    );
    let kore_headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Kore-Signature", kore_sig.as_str()),
        (
            "Kore-Idempotency-Token",
            "RQa48ec9b6ef475034c35566c02b654243",
        ),
    ];
    for expected_new in [1, 0] {
        let reply = send(
            &webhook,
            "POST",
            "/callbacks/sims",
            "",
            &kore_headers,
            Some(form.as_bytes()),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["accepted"], expected_new);
    }
    let status = webhook
        .ledger
        .sim_status("HSab3f06be8f5d32caecb91e8a306c6c08")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.status, "active");

    // Twilio, GET with the payload in the query: the signature covers the URL with its query.
    let command = include_str!("fixtures/callback-command.form").trim_end();
    let signed_url = format!("{PUBLIC_URL}/callbacks/sms-commands?{command}");
    let twilio_sig = twilio_signature(TWILIO_TOKEN.as_bytes(), &signed_url, &[]);
    let twilio_headers = [
        ("X-Twilio-Signature", twilio_sig.as_str()),
        (
            "I-Twilio-Idempotency-Token",
            "6f1c2b9e-2d4a-4c8e-9a51-0d7e3b1f2a44",
        ),
    ];
    for expected_new in [1, 0] {
        let reply = send(
            &webhook,
            "GET",
            "/callbacks/sms-commands",
            command,
            &twilio_headers,
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["accepted"], expected_new);
    }
    assert!(
        webhook
            .ledger
            .callback_exists("twilio", "6f1c2b9e-2d4a-4c8e-9a51-0d7e3b1f2a44")
            .await
            .unwrap()
    );
    assert!(
        webhook
            .ledger
            .callback_exists("kore", "RQa48ec9b6ef475034c35566c02b654243")
            .await
            .unwrap()
    );

    // Twilio form POST: the signature covers the URL and the sorted form parameters.
    let params: Vec<(String, String)> =
        kore_ingest_shared::callback::parse_form(command.as_bytes()).unwrap();
    let post_sig = twilio_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/callbacks/ip-commands"),
        &params,
    );
    let headers = [
        (
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("X-Twilio-Signature", post_sig.as_str()),
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
}

#[tokio::test]
async fn signed_malformed_body_gets_400_naming_the_reason_and_is_quarantined() {
    let webhook = webhook("wh-malformed").await;
    let body = r#"{"specversion":"1.0", "type": "com.kore.iot"#;
    let reply = post_kore_events(&webhook, KORE_ACTIVE, body).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{}",
        reply.body
    );
    let id = reply.body["quarantine_id"].as_str().unwrap();
    let stored = webhook.ledger.quarantined(id).await.unwrap().unwrap();
    assert_eq!(stored.payload, body.as_bytes());
    assert_eq!(stored.provider, Some(Provider::Kore));
    assert_eq!(stored.origin, "req-test");
}

#[tokio::test]
async fn storage_down_gets_503_and_the_retry_after_recovery_is_exact() {
    let table = fresh_ledger("wh-down").await;
    // Half the batch cannot be written: the sender must retry, and nothing double counts.
    // Events of a SIM are committed together, so the half is another SIM's: its events are
    // timed 10:10 to 10:19, and their writes carry `T10:1`.
    let throttle = Throttle::on_marker("T10:1");
    let webhook = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&throttle),
            LedgerConfig::new(table.table_name()),
        ),
        config: config(),
    };
    let other_sim = "HS00000000000000000000000000000077";
    let (mut samples, _) = kore_batch(10, SIM, "D");
    let (others, _) = kore_batch(20, other_sim, "E");
    samples.extend(others.into_iter().skip(10));
    let body = kore_body(&samples);
    assert!(
        samples[..10]
            .iter()
            .all(|e| !e.kore_json().contains("T10:1"))
    );
    assert!(
        samples[10..]
            .iter()
            .all(|e| e.kore_json().contains("T10:1"))
    );

    let down = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(throttle.throttled() > 0);

    throttle.stop();
    let retried = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let accepted = retried.body["accepted"].as_u64().unwrap();
    let duplicates = retried.body["duplicates"].as_u64().unwrap();
    assert_eq!((accepted, duplicates), (10, 10), "{}", retried.body);

    for (sim, stored) in [(SIM, &samples[..10]), (other_sim, &samples[10..])] {
        let day = table.sim_usage(sim, "2024-11-03").await.unwrap().unwrap();
        assert_eq!(
            (day.usage.total, day.usage_events),
            (window_bytes(stored), 10)
        );
    }
}

#[tokio::test]
async fn routes_methods_sizes_and_types() {
    let webhook = Webhook {
        config: WebhookConfig {
            max_body_bytes: 1024,
            ..config()
        },
        ..webhook("wh-routes").await
    };
    let health = send(&webhook, "GET", "/health", "", &[], None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    assert!(!health.body.to_string().contains("secret"));
    assert_eq!(
        send(&webhook, "GET", "/nope", "", &[], None).await.status,
        404
    );
    assert_eq!(
        send(&webhook, "GET", "/callbacks/calls", "", &[], None)
            .await
            .status,
        404
    );
    assert_eq!(
        send(&webhook, "GET", "/events", "", &[], None).await.status,
        405
    );
    assert_eq!(
        send(&webhook, "DELETE", "/callbacks/sims", "", &[], None)
            .await
            .status,
        405
    );
    let big = vec![b' '; 2048];
    assert_eq!(
        send(&webhook, "POST", "/events", "", &[], Some(&big))
            .await
            .status,
        413
    );
    let xml = [("Content-Type", "application/xml")];
    assert_eq!(
        send(&webhook, "POST", "/events", "", &xml, Some(b"<a/>"))
            .await
            .status,
        415
    );
    // A base64-encoded body (as Function URLs deliver binary content) is decoded first.
    let binary = [0xffu8, 0xfe, 0x00];
    let signature = kore_signature(
        KORE_ACTIVE.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/events"),
        &binary,
    );
    let headers = [("Kore-Signature", signature.as_str())];
    let reply = send(&webhook, "POST", "/events", "", &headers, Some(&binary)).await;
    // A KORE-signed body that is not UTF-8 can be a length extension of a captured request:
    // refused at verification, before any parser (issue 13, item 9).
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(webhook.ledger.list_quarantine(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn stalled_storage_gets_503_within_the_time_budget() {
    let table = fresh_ledger("wh-stall").await;
    let throttle = Throttle::stall_on_marker("TransactItems", std::time::Duration::from_secs(8));
    let webhook = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&throttle),
            LedgerConfig::new(table.table_name()),
        ),
        config: WebhookConfig {
            time_budget: std::time::Duration::from_millis(1500),
            ..config()
        },
    };
    let (_, body) = kore_batch(5, SIM, "S");
    let started = std::time::Instant::now();
    let reply = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        took < std::time::Duration::from_millis(2500),
        "answered after {took:?}"
    );
}

/// Issue 13, item 6: KORE drops the query before signing, and a GET callback's payload is its
/// query: one captured request would let anyone forge any GET callback on that route.
#[tokio::test]
async fn kore_signed_get_callbacks_are_refused_unless_explicitly_allowed() {
    let webhook = webhook("wh-kore-get").await;
    let query =
        "ApiVersion=v1&SimSid=HS000000000000000000000000kore0get&SimStatus=active&AccountSid=AC1";
    let signature = kore_signature(
        KORE_ACTIVE.as_bytes(),
        "GET",
        &format!("{PUBLIC_URL}/callbacks/sims"),
        b"",
    );
    let token = "RQ0000000000000000000000000000kget";
    let headers = [
        ("Kore-Signature", signature.as_str()),
        ("Kore-Idempotency-Token", token),
    ];
    let reply = send(&webhook, "GET", "/callbacks/sims", query, &headers, None).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(!webhook.ledger.callback_exists("kore", token).await.unwrap());

    let allowing = Webhook {
        config: config_with(&[("ALLOW_KORE_GET_CALLBACKS", "true")]),
        ..webhook
    };
    let reply = send(&allowing, "GET", "/callbacks/sims", query, &headers, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        allowing
            .ledger
            .callback_exists("kore", token)
            .await
            .unwrap()
    );
}

/// Issue 13, item 7: a Twilio signature over the URL alone (no form, no bodySHA256) does not
/// cover a body; the body must not be stored.
#[tokio::test]
async fn twilio_signature_that_does_not_cover_the_body_gets_401() {
    let webhook = webhook("wh-twilio-url-only").await;
    let (_, body) = kore_batch(2, SIM, "T");
    let signature = twilio_signature(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/events"),
        &[],
    );
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Twilio-Signature", signature.as_str()),
    ];
    let reply = send(
        &webhook,
        "POST",
        "/events",
        "",
        &headers,
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        webhook.ledger.sim_usage(SIM, "2024-11-03").await.unwrap(),
        None
    );

    // A callback body without a form content type: the signature covers the URL only.
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
    assert!(
        !webhook
            .ledger
            .callback_exists("twilio", "1f7e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b")
            .await
            .unwrap()
    );
}

/// Issue 13, item 8: ALLOW_UNSIGNED is for a provider without a secret; it must not let an
/// unsigned request through when that provider's secret is configured.
#[tokio::test]
async fn allow_unsigned_does_not_bypass_configured_secrets() {
    let webhook = Webhook {
        config: config_with(&[("ALLOW_UNSIGNED", "true")]),
        ..webhook("wh-unsigned").await
    };
    let (_, body) = kore_batch(2, SIM, "U");
    let json = ("Content-Type", "application/json");
    for (case, headers) in [
        ("empty Kore-Signature", vec![json, ("Kore-Signature", "")]),
        ("no signature header", vec![json]),
    ] {
        let reply = send(
            &webhook,
            "POST",
            "/events",
            "",
            &headers,
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
    }
    assert_eq!(
        webhook.ledger.sim_usage(SIM, "2024-11-03").await.unwrap(),
        None
    );

    // A KORE account without a secret (none configured) sends an empty header: allowed.
    let no_kore_secret = Webhook {
        config: config_with(&[("ALLOW_UNSIGNED", "true"), ("KORE_WEBHOOK_SECRETS", "")]),
        ..webhook
    };
    let headers = [json, ("Kore-Signature", "")];
    let reply = send(
        &no_kore_secret,
        "POST",
        "/events",
        "",
        &headers,
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Twilio still has a token configured: a request without any signature is refused.
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

/// Issue 13, item 3: Twilio discards a delivery answered with 4xx, so an authenticated body
/// refused for its size or type is kept in the quarantine (the start of it, with the full
/// size, when it is too large); an unauthenticated one is not.
#[tokio::test]
async fn signed_bodies_refused_with_413_or_415_are_quarantined() {
    let webhook = Webhook {
        config: WebhookConfig {
            max_body_bytes: 1024,
            ..config()
        },
        ..webhook("wh-413").await
    };
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
    assert!(webhook.ledger.list_quarantine(10).await.unwrap().is_empty());

    let reply = post_kore_events(&webhook, KORE_ACTIVE, &big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let listed = webhook.ledger.list_quarantine(10).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let kept = webhook
        .ledger
        .quarantined(&listed[0].id)
        .await
        .unwrap()
        .unwrap();
    assert!(kept.truncated);
    assert_eq!(kept.payload, big.as_bytes()[..1024]);
    assert!(
        kept.reason.contains(&big.len().to_string()),
        "{}",
        kept.reason
    );
    assert_eq!(kept.provider, Some(Provider::Kore));

    let xml = b"<events><event id=\"EZ1\"/></events>";
    let signature = kore_signature(
        KORE_ACTIVE.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/events"),
        xml,
    );
    let headers = [
        ("Content-Type", "application/xml"),
        ("Kore-Signature", signature.as_str()),
    ];
    let reply = send(&webhook, "POST", "/events", "", &headers, Some(xml)).await;
    assert_eq!(reply.status, 415, "{}", reply.body);
    let listed = webhook.ledger.list_quarantine(10).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let whole = listed
        .iter()
        .find(|e| e.reason.contains("application/xml"))
        .unwrap_or_else(|| panic!("{listed:?}"));
    let whole = webhook
        .ledger
        .quarantined(&whole.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!whole.truncated);
    assert_eq!(whole.payload, xml);
}

/// Issue 13, item 4: a callback transaction cancelled for a passing reason (throttling, a
/// conflicting transaction) is retried and, if that does not help, answered 503 so that the
/// sender retries, never quarantined as if the payload were bad.
#[tokio::test]
async fn a_throttled_callback_transaction_gets_503_and_the_retry_stores_it() {
    let table = fresh_ledger("wh-callback-cancel").await;
    let throttle =
        Throttle::cancel_transactions_on_marker("TransactItems", &["None", "ThrottlingError"]);
    let webhook = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&throttle),
            LedgerConfig::new(table.table_name()),
        ),
        config: config(),
    };
    let form = include_str!("fixtures/callback-sim-status.form").trim_end();
    let signature = kore_signature(
        KORE_ACTIVE.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/callbacks/sims"),
        form.as_bytes(),
    );
    let token = "RQ00000000000000000000000000cancel";
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Kore-Signature", signature.as_str()),
        ("Kore-Idempotency-Token", token),
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
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(throttle.throttled() > 0);
    assert!(table.list_quarantine(10).await.unwrap().is_empty());

    throttle.stop();
    let reply = send(
        &webhook,
        "POST",
        "/callbacks/sims",
        "",
        &headers,
        Some(form.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["accepted"], 1);
    assert!(table.callback_exists("kore", token).await.unwrap());
}

/// Issue 13, item 1: a 900 KB signed body of multi-byte text that cannot be parsed is
/// quarantined whole (it used to be cut inside a character, base64-encoded past DynamoDB's
/// item limit, and answered 503 forever).
#[tokio::test]
async fn a_900_kb_multibyte_body_is_quarantined_whole() {
    let webhook = webhook("wh-900kb").await;
    let mut body = String::from("[{\"note\": \"");
    while body.len() < 900 * 1024 {
        body.push_str("Grüße aus Zürich — 東京 🚀 ");
    }
    let reply = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let id = reply.body["quarantine_id"].as_str().unwrap();
    let kept = webhook.ledger.quarantined(id).await.unwrap().unwrap();
    assert!(!kept.truncated);
    assert_eq!(kept.payload.len(), body.len());
    assert!(kept.payload == body.as_bytes(), "the exact bytes come back");
}

/// As for the consumer: a copy refused as already stored without the stored item is read
/// (GetItem) and counted as the duplicate it is.
#[tokio::test]
async fn a_duplicate_whose_stored_copy_is_not_returned_is_read_and_counted_once() {
    let webhook = webhook("wh-no-old-item").await;
    let (_, body) = kore_batch(1, SIM, "NOOLD");
    let first = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(first.body["accepted"], 1, "{}", first.body);

    let no_item = Throttle::cancel_transactions_on_marker(
        "EZNOOLD",
        &["ConditionalCheckFailed", "None", "None", "None"],
    );
    let without_old = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&no_item),
            LedgerConfig::new(webhook.ledger.table_name()),
        ),
        config: config(),
    };
    let again = post_kore_events(&without_old, KORE_ACTIVE, &body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicates"], 1, "{}", again.body);
    assert!(no_item.throttled() > 0);
}
