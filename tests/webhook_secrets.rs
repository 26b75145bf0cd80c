//! Issue 13, item 12, as deployed: the webhook reads its signing secrets from Secrets Manager
//! (`WEBHOOK_SECRETS_ARN`). A rotation must need no redeploy: a failed signature reads the
//! secret again when the cached copy is old enough, rate-limited; and a secret document that
//! is not the expected JSON must not have its value echoed into the error (and so the logs).
//! Secrets Manager is a small stand-in on loopback. Its own test binary: it sets the
//! process environment that `WebhookConfig::load` reads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::{Credentials, Region};
use integration_tests::faults::{self, WEBHOOK, as_function};
use integration_tests::*;
use kore_ingest_shared::metrics::InvocationMetrics;
use kore_ingest_shared::signature::kore_signature;
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kore-ingest-AbCdEf";

/// A Secrets Manager that answers `GetSecretValue` with `document`, counting the reads.
struct FakeSecretsManager {
    url: String,
    document: Arc<Mutex<String>>,
    reads: Arc<AtomicUsize>,
}

impl FakeSecretsManager {
    fn start(document: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let document = Arc::new(Mutex::new(document.to_owned()));
        let reads = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), reads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0;
                let mut target = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if let Some(value) = lower.strip_prefix("x-amz-target:") {
                        target = value.trim().to_owned();
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                assert_eq!(
                    target, "secretsmanager.getsecretvalue",
                    "only reads are expected"
                );
                counted.fetch_add(1, Ordering::SeqCst);
                let secret = served.lock().unwrap().clone();
                let answer = serde_json::json!({
                    "ARN": ARN, "Name": "kore-ingest", "SecretString": secret,
                    "VersionId": "v1", "VersionStages": ["AWSCURRENT"],
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        FakeSecretsManager {
            url,
            document,
            reads,
        }
    }

    fn set(&self, document: &str) {
        *self.document.lock().unwrap() = document.to_owned();
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .endpoint_url(&self.url)
            .http_client(faults::recording_http_client())
            .load()
            .await
    }
}

async fn post_signed(webhook: &Webhook, secret: &str, body: &str) -> i64 {
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
        r#"{"KORE_WEBHOOK_SECRETS": "old-secret", "TWILIO_AUTH_TOKENS": ""}"#,
    );
    // SAFETY: the only test of this binary sets the variables before anything reads them.
    unsafe {
        std::env::set_var("WEBHOOK_SECRETS_ARN", ARN);
        std::env::set_var("WEBHOOK_PUBLIC_URL", PUBLIC_URL);
        std::env::set_var("TIME_BUDGET_MS", "30000");
        std::env::set_var("SECRETS_REFRESH_MIN_MS", "1000");
    }
    let aws = manager.sdk_config().await;
    let webhook = Webhook {
        ledger: fresh_ledger("wh-secrets").await,
        config: as_function(WEBHOOK, WebhookConfig::load(&aws))
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

    // A document that is not the expected JSON: the error says so without the value.
    for document in [
        r#""s3cr3t-plain-value""#,
        r#"{"KORE_WEBHOOK_SECRETS": ["s3cr3t-plain-value"]}"#,
        "s3cr3t-plain-value",
    ] {
        manager.set(document);
        let error = WebhookConfig::load(&aws).await.unwrap_err();
        assert!(!error.contains("s3cr3t"), "the secret leaks into: {error}");
        assert!(error.contains("WEBHOOK_SECRETS_ARN"), "{error}");
    }
}
