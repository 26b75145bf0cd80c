//! End to end: the `webhook` function under `cargo lambda watch`, over HTTP at
//! `http://127.0.0.1:<port>/lambda-url/webhook/...`, against the run's DynamoDB Local. The
//! stack is started with the secrets below (see `scripts/test`).

use std::time::Instant;

use kore_ingest_core::signature::{kore_signature, twilio_signature};
use kore_test_support::stack::{LocalStack, http, signed_url, stack_list as secrets};
use kore_test_support::*;
use serde_json::Value;

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

async fn post_kore(stack: &LocalStack, secret: &str, body: &str) -> (u16, Value) {
    let signature = kore_signature(
        secret.as_bytes(),
        "POST",
        &signed_url("/events"),
        body.as_bytes(),
    );
    let headers = vec![
        header("Content-Type", "application/json"),
        header("Kore-Signature", &signature),
        header("User-Agent", "KoreProxy/1.1"),
    ];
    let (status, text) = http(
        "POST",
        stack.webhook_url("/events"),
        headers,
        Some(body.as_bytes().to_vec()),
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn signed_batches_from_kore_then_twilio_are_stored_once() {
    let stack = LocalStack::from_env();
    let kore = secrets("KORE_WEBHOOK_SECRETS");
    let sim = format!("HSe2ewebhook{:020}", fastrand::u64(..));
    let (samples, body) = kore_batch(50, &sim, &sim[12..20]);

    let (status, reply) = post_kore(&stack, &kore[0], &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 50);
    let expected: u64 = window_bytes(&samples);
    let day = stack
        .ledger
        .sim_usage(&sim, "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage.total, day.usage_events), (expected, 50));

    let (status, reply) = post_kore(&stack, &kore[0], &body).await;
    assert_eq!(
        (status, reply["duplicates"].clone()),
        (200, 50.into()),
        "{reply}"
    );

    let twilio_body = format!(
        "[{}]",
        samples
            .iter()
            .map(SampleEvent::twilio_json)
            .collect::<Vec<_>>()
            .join(",")
    );
    let (query, signature) = twilio_json_signature(
        &secrets("TWILIO_AUTH_TOKENS")[0],
        &signed_url("/events"),
        twilio_body.as_bytes(),
    );
    let headers = vec![
        header("Content-Type", "application/json"),
        header("X-Twilio-Signature", &signature),
    ];
    let (status, text) = http(
        "POST",
        format!("{}?{query}", stack.webhook_url("/events")),
        headers,
        Some(twilio_body.into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let day = stack
        .ledger
        .sim_usage(&sim, "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage.total, day.usage_events), (expected, 50));
}

#[tokio::test]
async fn wrong_missing_and_retired_signatures_get_401_and_the_pending_secret_works() {
    let stack = LocalStack::from_env();
    let sim = format!("HSe2eauth{:023}", fastrand::u64(..));
    let (_, body) = kore_batch(2, &sim, &sim[9..17]);
    for (case, signature) in [
        (
            "wrong",
            Some(kore_signature(
                b"wrong",
                "POST",
                &signed_url("/events"),
                body.as_bytes(),
            )),
        ),
        (
            "retired",
            Some(kore_signature(
                b"e2e-kore-retired",
                "POST",
                &signed_url("/events"),
                body.as_bytes(),
            )),
        ),
        ("missing", None),
    ] {
        let mut headers = vec![header("Content-Type", "application/json")];
        if let Some(signature) = signature {
            headers.push(header("Kore-Signature", &signature));
        }
        let (status, _) = http(
            "POST",
            stack.webhook_url("/events"),
            headers,
            Some(body.clone().into_bytes()),
        )
        .await;
        assert_eq!(status, 401, "{case}");
    }
    assert_eq!(
        stack.ledger.sim_usage(&sim, "2024-11-03").await.unwrap(),
        None
    );

    let pending = secrets("KORE_WEBHOOK_SECRETS")[1].clone();
    let (status, reply) = post_kore(&stack, &pending, &body).await;
    assert_eq!(
        (status, reply["accepted"].clone()),
        (200, 2.into()),
        "{reply}"
    );
}

#[tokio::test]
async fn callbacks_by_post_and_get_are_stored_once_per_token() {
    let stack = LocalStack::from_env();
    let token = format!("RQe2e{:030}", fastrand::u64(..));
    let form =
        "ApiVersion=v1&SimUniqueName=e2e&SimSid=HSe2ecallback&SimStatus=active&AccountSid=ACe2e";
    let signature = kore_signature(
        secrets("KORE_WEBHOOK_SECRETS")[0].as_bytes(),
        "POST",
        &signed_url("/callbacks/sims"),
        form.as_bytes(),
    );
    let headers = vec![
        header("Content-Type", "application/x-www-form-urlencoded"),
        header("Kore-Signature", &signature),
        header("Kore-Idempotency-Token", &token),
    ];
    for expected in [1, 0] {
        let (status, text) = http(
            "POST",
            stack.webhook_url("/callbacks/sims"),
            headers.clone(),
            Some(form.as_bytes().to_vec()),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["accepted"],
            expected
        );
    }
    assert!(stack.ledger.callback_exists("kore", &token).await.unwrap());

    let twilio_token = format!("{:032x}", fastrand::u128(..));
    let query =
        format!("Status=received&CommandSid=HCe2e&SimSid=HSe2ecallback&Command={twilio_token}");
    let url = format!("{}?{query}", signed_url("/callbacks/sms-commands"));
    let signature = twilio_signature(secrets("TWILIO_AUTH_TOKENS")[0].as_bytes(), &url, &[]);
    let headers = vec![
        header("X-Twilio-Signature", &signature),
        header("I-Twilio-Idempotency-Token", &twilio_token),
    ];
    for expected in [1, 0] {
        let (status, text) = http(
            "GET",
            format!("{}?{query}", stack.webhook_url("/callbacks/sms-commands")),
            headers.clone(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["accepted"],
            expected
        );
    }
    assert!(
        stack
            .ledger
            .callback_exists("twilio", &twilio_token)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_signed_malformed_body_gets_400_and_is_quarantined() {
    let stack = LocalStack::from_env();
    let body = format!("[{{\"broken\": {}", fastrand::u64(..));
    let (status, reply) = post_kore(&stack, &secrets("KORE_WEBHOOK_SECRETS")[0], &body).await;
    assert_eq!(status, 400, "{reply}");
    let id = reply["quarantine_id"].as_str().unwrap();
    let stored = stack.ledger.quarantined().get(id).await.unwrap().unwrap();
    assert_eq!(stored.payload, body.as_bytes());
    assert_eq!(stored.path, "webhook");
}

/// p50 and p99 latency of signed 50-event batches (run with `--nocapture` to read them).
#[tokio::test]
async fn latency_of_signed_50_event_batches() {
    let stack = LocalStack::from_env();
    let secret = secrets("KORE_WEBHOOK_SECRETS")[0].clone();
    let mut latencies = Vec::new();
    for batch in 0..20 {
        let sim = format!("HSe2elatency{batch:04}{:016}", fastrand::u64(..));
        let (_, body) = kore_batch(50, &sim, &sim[16..24]);
        let started = Instant::now();
        let (status, reply) = post_kore(&stack, &secret, &body).await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{reply}");
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "webhook under cargo lambda watch, signed 50-event batches (n={}): p50 {:.0} ms, p99 {:.0} ms",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
}
