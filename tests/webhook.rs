//! The `webhook` function's handler wired to the ledger on DynamoDB Local, called with
//! Lambda Function URL events: what only the real storage shows (rollups, callbacks with the
//! SIM status, DynamoDB's errors and answers, payloads larger than an item) and the AWS
//! operations the function performs (`tests/iam_grants.rs`). Every status and when it is
//! answered is tested in process in `functions/webhook/tests/respond.rs`.

use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};
use kore_ingest_core::config::Env;
use kore_ingest_core::event::Provider;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::signature::{kore_signature, twilio_signature};
use kore_ingest_core::time::TimeRange;
use kore_test_support::faults::{Throttle, WEBHOOK, as_function, throttled_client};
use kore_test_support::script::{Script, Step, dynamodb_error, scripted_client};
use kore_test_support::*;
use serde_json::Value;
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const KORE_ACTIVE: &str = "kore-active-secret";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const SIM: &str = "HS0000000000000000000000000000web";

/// The handler under test. The time budget is generous: these tests are about what is
/// stored, not timing (DynamoDB Local on a loaded 2-core machine can take seconds for 50
/// transactions).
fn config() -> WebhookConfig {
    WebhookConfig::from_env(&Env::from_fn(move |name| match name {
        "TIME_BUDGET_MS" => Some("30000".into()),
        "KORE_WEBHOOK_SECRETS" => Some(KORE_ACTIVE.into()),
        "TWILIO_AUTH_TOKENS" => Some(TWILIO_TOKEN.into()),
        "WEBHOOK_PUBLIC_URL" => Some(PUBLIC_URL.into()),
        _ => None,
    }))
    .unwrap()
}

async fn webhook(test: &str) -> Webhook<UsageLedger> {
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
    webhook: &Webhook<UsageLedger>,
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

async fn post_kore_events(webhook: &Webhook<UsageLedger>, secret: &str, body: &str) -> Reply {
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

/// A KORE-signed SIM-update callback (POST, form body) with its idempotency token.
async fn post_kore_callback(webhook: &Webhook<UsageLedger>, form: &str, token: &str) -> Reply {
    let signature = kore_signature(
        KORE_ACTIVE.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/callbacks/sims"),
        form.as_bytes(),
    );
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Kore-Signature", signature.as_str()),
        ("Kore-Idempotency-Token", token),
    ];
    send(
        webhook,
        "POST",
        "/callbacks/sims",
        "",
        &headers,
        Some(form.as_bytes()),
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
        .events()
        .delivered_between(TimeRange::new(from, from + chrono::Duration::days(1)).unwrap())
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
async fn callbacks_by_post_and_get_from_both_providers_are_stored_once() {
    let webhook = webhook("wh-callbacks").await;
    let form = include_str!("fixtures/callback-sim-status.form").trim_end();
    for expected_new in [1, 0] {
        let reply = post_kore_callback(&webhook, form, "RQa48ec9b6ef475034c35566c02b654243").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["accepted"], expected_new);
    }
    let status = webhook
        .ledger
        .sim_status("HSab3f06be8f5d32caecb91e8a306c6c08")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.change.status, "active");

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
        kore_ingest_core::callback::parse_form(command.as_bytes()).unwrap();
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
async fn storage_down_gets_503_and_the_retry_after_recovery_is_exact() {
    let table = fresh_ledger("wh-down").await;
    // Half the batch cannot be written: the sender must retry, and nothing double counts.
    // Events of a SIM are committed together, so the half is another SIM's, and the writes
    // of its events carry its SID. (Not a time of day: every event record carries the time
    // it was received, so a time marker throttled everything during that minute of the day.)
    let other_sim = "HS00000000000000000000000000000077";
    let throttle = Throttle::on_marker(other_sim);
    let webhook = Webhook {
        ledger: UsageLedger::new(
            throttled_client(&throttle),
            LedgerConfig::new(table.table_name()),
        ),
        config: config(),
    };
    let (mut samples, _) = kore_batch(10, SIM, "D");
    let (others, _) = kore_batch(20, other_sim, "E");
    samples.extend(others.into_iter().skip(10));
    let body = kore_body(&samples);
    assert!(
        samples[..10]
            .iter()
            .all(|e| !e.kore_json().contains(other_sim))
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
    assert!(
        webhook
            .ledger
            .quarantined()
            .list(10)
            .await
            .unwrap()
            .is_empty()
    );

    let reply = post_kore_events(&webhook, KORE_ACTIVE, &big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let listed = webhook.ledger.quarantined().list(10).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let kept = webhook
        .ledger
        .quarantined()
        .get(&listed[0].id)
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
    let listed = webhook.ledger.quarantined().list(10).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let whole = listed
        .iter()
        .find(|e| e.reason.contains("application/xml"))
        .unwrap_or_else(|| panic!("{listed:?}"));
    let whole = webhook
        .ledger
        .quarantined()
        .get(&whole.id)
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
    let token = "RQ00000000000000000000000000cancel";
    let reply = post_kore_callback(&webhook, form, token).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(throttle.throttled() > 0);
    assert!(table.quarantined().list(10).await.unwrap().is_empty());

    throttle.stop();
    let reply = post_kore_callback(&webhook, form, token).await;
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
    let kept = webhook.ledger.quarantined().get(id).await.unwrap().unwrap();
    assert!(!kept.truncated);
    assert_eq!(kept.payload.len(), body.len());
    assert!(kept.payload == body.as_bytes(), "the exact bytes come back");
}

/// As for the consumer: a copy refused as already stored without the stored item is read
/// (GetItem) and counted as the duplicate it is (the batched lookup before it throttled).
#[tokio::test]
async fn a_duplicate_whose_stored_copy_is_not_returned_is_read_and_counted_once() {
    let webhook = webhook("wh-no-old-item").await;
    let (_, body) = kore_batch(1, SIM, "NOOLD");
    let first = post_kore_events(&webhook, KORE_ACTIVE, &body).await;
    assert_eq!(first.body["accepted"], 1, "{}", first.body);

    // The duplicate check misses it (throttled), and the transaction's cancellation names
    // the condition without the stored item.
    let script = Script::new(|operation, _| {
        match operation {
        "BatchGetItem" => Step::Fail(400, dynamodb_error("ThrottlingException", "slow down")),
        "TransactWriteItems" => Step::Fail(
            400,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled","CancellationReasons":[{"Code":"ConditionalCheckFailed"},{"Code":"None"},{"Code":"None"}]}"#.to_owned(),
        ),
        _ => Step::Pass,
    }
    });
    let without_old = Webhook {
        ledger: UsageLedger::new(
            scripted_client(&script, false),
            LedgerConfig::new(webhook.ledger.table_name()),
        ),
        config: config(),
    };
    let again = post_kore_events(&without_old, KORE_ACTIVE, &body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicates"], 1, "{}", again.body);
    // The fresh ledger reads the closed periods and the archived days once each (a Query
    // each, then cached for CLOSED_PERIODS_TTL_MS) before the write; the stored copy is read
    // back once.
    let log: Vec<String> = script.log().into_iter().map(|(_, op)| op).collect();
    assert_eq!(
        log,
        [
            "BatchGetItem",
            "Query",
            "Query",
            "TransactWriteItems",
            "GetItem"
        ],
        "read back once"
    );
}

/// Issue 21, item 1: a callback with a nameless field of 300 KB and an event whose `time` is
/// 300 KB are quarantined whole, each answered with a reason of about a kilobyte at most.
#[tokio::test]
async fn a_300_kb_bad_field_is_quarantined_whole_with_a_bounded_reason() {
    let webhook = webhook("wh-huge-field").await;
    let huge = "9".repeat(300_000);
    let form = format!("={huge}&SimSid=HS0000000000000000000000000000huge&Status=active");
    let callback = post_kore_callback(&webhook, &form, "RQ0000000000000000000000000000huge").await;

    let mut event: Value = serde_json::from_str(
        &SampleEvent::usage_update("EZhuge", SIM, "2024-11-03T10:00:00Z", (1, 2)).kore_json(),
    )
    .unwrap();
    event["time"] = huge.clone().into();
    let element = event.to_string();
    let events = post_kore_events(&webhook, KORE_ACTIVE, &format!("[{element}]")).await;

    // The callback is refused (400) with its quarantine id; the batch is answered 200 with
    // its element quarantined. Both answers stay small.
    assert_eq!(callback.status, 400, "{}", callback.body);
    assert_eq!(events.status, 200);
    assert_eq!(events.body["quarantined"], 1, "{}", events.body);
    for reply in [&callback, &events] {
        let text = reply.body.to_string();
        assert!(
            text.len() < 2000,
            "a bounded answer, not {} bytes",
            text.len()
        );
    }
    let quarantined = webhook.ledger.quarantined().list(10).await.unwrap();
    assert_eq!(quarantined.len(), 2);
    assert!(
        quarantined
            .iter()
            .any(|q| Some(q.id.as_str()) == callback.body["quarantine_id"].as_str())
    );
    for summary in &quarantined {
        let kept = webhook
            .ledger
            .quarantined()
            .get(&summary.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            kept.payload == form.as_bytes() || kept.payload == element.as_bytes(),
            "kept whole"
        );
        assert!(
            kept.reason.len() <= 1100 && kept.reason.contains("field `"),
            "{}",
            kept.reason
        );
    }
}

/// Issue 21, item 10: a signed callback that cannot be parsed is quarantined with the
/// idempotency token it arrived with, so that a redrive keys it as the original would be.
#[tokio::test]
async fn an_unparseable_callback_is_quarantined_with_its_idempotency_token() {
    let webhook = webhook("wh-bad-callback-token").await;
    let form = "=nameless&SimSid=HS0000000000000000000000000000tokn&Status=active";
    let token = "RQ0000000000000000000000000000tokn";
    let reply = post_kore_callback(&webhook, form, token).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let id = reply.body["quarantine_id"].as_str().unwrap();
    let kept = webhook.ledger.quarantined().get(id).await.unwrap().unwrap();
    assert_eq!(
        kept.kind,
        kore_ingest_core::quarantine::QuarantineKind::Callback {
            kind: kore_ingest_core::callback::CallbackKind::Sims,
            idempotency_token: Some(token.into()),
        }
    );
    assert_eq!(kept.provider, Some(Provider::Kore));
}
