//! Issue 13, item 12, as deployed: the webhook reads its signing secrets from Secrets Manager
//! (`WEBHOOK_SECRETS_ARN`). A rotation must need no redeploy: a failed signature reads the
//! secret again when the cached copy is old enough, rate-limited; and a secret document that
//! is not the expected JSON must not have its value echoed into the error (and so the logs).
//! Secrets Manager is a small stand-in on loopback. Its own test binary: it sets the
//! process environment that `WebhookConfig::load` reads.

use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::config::Env;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::signature::kore_signature;
use kore_test_support::faults::{WEBHOOK, as_function};
use kore_test_support::secrets_manager::FakeSecretsManager;
use kore_test_support::*;
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kore-ingest-AbCdEf";

async fn post_signed(webhook: &Webhook<UsageLedger>, secret: &str, body: &str) -> i64 {
    let signature = kore_signature(
        secret.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}/events"),
        body.as_bytes(),
    );
    let request = function_url_request(
        "POST",
        "/events",
        "",
        &[
            ("Content-Type", "application/json"),
            ("Kore-Signature", &signature),
        ],
        Some(body.as_bytes()),
    );
    let mut metrics = InvocationMetrics::new("webhook");
    as_function(
        WEBHOOK,
        webhook.respond(&request, "req-secrets", &mut metrics),
    )
    .await
    .status_code
}

#[tokio::test]
async fn a_rotation_is_picked_up_without_a_redeploy_and_a_bad_document_is_not_echoed() {
    let manager = FakeSecretsManager::start(
        ARN,
        r#"{"KORE_WEBHOOK_SECRETS": "old-secret", "TWILIO_AUTH_TOKENS": ""}"#,
    );
    // SAFETY: the only test of this binary sets the variables before anything reads them.
    unsafe {
        std::env::set_var("WEBHOOK_SECRETS_ARN", ARN);
        std::env::set_var("WEBHOOK_PUBLIC_URL", PUBLIC_URL);
        std::env::set_var("TIME_BUDGET_MS", "30000");
        std::env::set_var("SECRETS_REFRESH_MIN_MS", "1000");
        std::env::set_var("SECRETS_MAX_AGE_MS", "4000");
    }
    let aws = manager.sdk_config().await;
    let webhook = Webhook {
        ledger: fresh_ledger("wh-secrets").await,
        config: as_function(WEBHOOK, WebhookConfig::load(&aws, &Env::process()))
            .await
            .expect("the secret is read"),
    };
    assert_eq!(manager.reads(), 1);
    let (_, first) = kore_batch(2, "HS0000000000000000000000000secrets", "R1");
    assert_eq!(post_signed(&webhook, "old-secret", &first).await, 200);

    // KORE switches to the new secret at once; the operator changed the secret just before.
    manager.set(r#"{"KORE_WEBHOOK_SECRETS": "new-secret", "TWILIO_AUTH_TOKENS": ""}"#);
    let (_, second) = kore_batch(2, "HS0000000000000000000000000secrets", "R2");
    // A copy younger than SECRETS_REFRESH_MIN_MS is not read again, however many fail.
    for _ in 0..5 {
        assert_eq!(post_signed(&webhook, "new-secret", &second).await, 401);
    }
    assert_eq!(manager.reads(), 1, "rate-limited");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        post_signed(&webhook, "new-secret", &second).await,
        200,
        "the rotated secret is read again and accepted"
    );
    assert_eq!(manager.reads(), 2);
    // Wrong signatures right after a read do not read it again.
    for _ in 0..5 {
        assert_eq!(post_signed(&webhook, "wrong", &second).await, 401);
    }
    assert_eq!(manager.reads(), 2, "rate-limited");
    assert_eq!(post_signed(&webhook, "old-secret", &first).await, 401);

    // Issue 21, item 8: the operator removes a secret (it leaked). No signature fails, yet
    // within SECRETS_MAX_AGE_MS the warm container reads the secret again and refuses it.
    manager.set(r#"{"KORE_WEBHOOK_SECRETS": "newer-secret", "TWILIO_AUTH_TOKENS": ""}"#);
    let (_, third) = kore_batch(2, "HS0000000000000000000000000secrets", "R3");
    assert_eq!(
        post_signed(&webhook, "new-secret", &third).await,
        200,
        "the copy is young"
    );
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    assert_eq!(
        post_signed(&webhook, "new-secret", &third).await,
        401,
        "a removed secret is refused once the copy is SECRETS_MAX_AGE_MS old"
    );
    assert_eq!(manager.reads(), 3);
    assert_eq!(post_signed(&webhook, "newer-secret", &third).await, 200);
    assert_eq!(manager.reads(), 3, "one read per SECRETS_MAX_AGE_MS");

    // A document that is not the expected JSON: the error says so without the value.
    for document in [
        r#""s3cr3t-plain-value""#,
        r#"{"KORE_WEBHOOK_SECRETS": ["s3cr3t-plain-value"]}"#,
        "s3cr3t-plain-value",
    ] {
        manager.set(document);
        let error = WebhookConfig::load(&aws, &Env::process())
            .await
            .unwrap_err();
        let error = error.to_string();
        assert!(!error.contains("s3cr3t"), "the secret leaks into: {error}");
        assert!(error.contains("WEBHOOK_SECRETS_ARN"), "{error}");
    }
}
