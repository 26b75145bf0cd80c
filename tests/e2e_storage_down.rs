//! End to end: the run's DynamoDB Local is paused (SIGSTOP) under the webhook running in
//! `cargo lambda watch` with `SPILL_STREAM` set (as the template deploys it): the sender gets
//! 200 within its 5 s because the body went to the stream, and once DynamoDB is back the
//! consumer (through the local event source mapping) stores every event exactly once, as
//! delivered by the webhook; the same request sent again is all duplicates. Its own test
//! binary, because it pauses the DynamoDB Local every test of the run shares (binaries run
//! one at a time). Without `SPILL_STREAM` the answer is 503 (tests/webhook.rs).

use std::process::Command;
use std::time::{Duration, Instant};

use kore_ingest_core::signature::kore_signature;
use kore_ingest_core::time::TimeRange;
use kore_test_support::stack::{LocalStack, eventually, http};
use kore_test_support::*;

fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Resumes DynamoDB Local however the test ends.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

#[tokio::test]
async fn storage_down_gets_503_in_time_and_the_retry_after_recovery_is_exact() {
    let stack = LocalStack::from_env();
    let pidfile =
        std::env::var("DYNAMODB_PIDFILE").expect("DYNAMODB_PIDFILE (scripts/test sets it)");
    let pid = std::fs::read_to_string(&pidfile)
        .expect("DynamoDB Local's pid")
        .trim()
        .to_owned();
    let secret = std::env::var("KORE_WEBHOOK_SECRETS")
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let base = std::env::var("WEBHOOK_PUBLIC_URL").unwrap();
    let sim = format!("HSe2edown{:023}", fastrand::u64(..));
    let (samples, body) = kore_batch(10, &sim, &sim[9..17]);
    let signature = kore_signature(
        secret.as_bytes(),
        "POST",
        &format!("{base}/events"),
        body.as_bytes(),
    );
    let headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Kore-Signature".to_owned(), signature),
    ];

    // Warm the function up first so the pause measures storage, not a cold start.
    let (status, _) = http("GET", stack.webhook_url("/health"), vec![], None).await;
    assert_eq!(status, 200);

    signal(&pid, "-STOP");
    let resume = Resume(pid.clone());
    let started = Instant::now();
    let (status, text) = http(
        "POST",
        stack.webhook_url("/events"),
        headers.clone(),
        Some(body.clone().into_bytes()),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{text}");
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["spilled"], 10, "{text}");
    assert!(
        took < Duration::from_secs(5),
        "answered after {took:?}: senders wait 5 s"
    );
    drop(resume);

    let expected: u64 = window_bytes(&samples);
    let day = eventually(300, "the spilled events in the day rollup", || async {
        stack
            .ledger
            .sim_usage(&sim, "2024-11-03")
            .await
            .ok()
            .flatten()
            .filter(|r| r.usage_events >= 10)
    })
    .await;
    assert_eq!((day.usage.total, day.usage_events), (expected, 10));

    // The sender's copy of the same request (had it retried anyway): all duplicates.
    let (status, text) = http(
        "POST",
        stack.webhook_url("/events"),
        headers,
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["duplicates"], 10, "{text}");
    let day = stack
        .ledger
        .sim_usage(&sim, "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage.total, day.usage_events), (expected, 10));
    let from = chrono::DateTime::parse_from_rfc3339("2024-11-03T00:00:00Z")
        .unwrap()
        .to_utc();
    let ours: Vec<_> = stack
        .ledger
        .events()
        .delivered_between(TimeRange::new(from, from + chrono::Duration::days(1)).unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| samples.iter().any(|s| s.event_sid == e.event_sid))
        .collect();
    assert_eq!(ours.len(), 10);
    assert!(
        ours.iter()
            .all(|e| e.deliveries == ["kore#webhook".to_owned()]),
        "{ours:?}"
    );
}
