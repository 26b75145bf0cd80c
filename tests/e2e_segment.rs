//! End to end: events delivered to the local stack (Kinesis and signed webhook batches, from
//! KORE and Twilio, retries included) reach the stack's Segment stand-in through the ledger
//! table's DynamoDB stream (DynamoDB Local), `scripts/local-ddb-esm` and `segment-forwarder`
//! under `cargo lambda watch`. `scripts/test` starts the stack with `SEGMENT_LOCAL=1`.
//!
//! The tests share the stack's one stand-in (and one of them makes it fail), so they run one
//! at a time.

use std::time::{Duration, Instant};

use kore_ingest_core::signature::kore_signature;
use kore_test_support::segment::{StandIn, Stats};
use kore_test_support::stack::{LocalStack, eventually, http};
use kore_test_support::*;
use serde_json::{Value, json};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Events whose SIDs start with `prefix`, one per minute from `hour`.
fn events(prefix: &str, sim: &str, n: usize, hour: usize) -> Vec<SampleEvent> {
    (0..n)
        .map(|i| {
            SampleEvent::usage_update(
                &format!("{prefix}{i:06}"),
                sim,
                &format!("2024-11-06T{:02}:{:02}:00Z", hour + i / 60, i % 60),
                (10 + i as u64, 100),
            )
        })
        .collect()
}

fn unique(name: &str) -> String {
    format!("EZe2eseg{name}{:010}", fastrand::u32(..))
}

async fn post_kore_batch(stack: &LocalStack, samples: &[SampleEvent]) {
    let secret = std::env::var("KORE_WEBHOOK_SECRETS").expect("scripts/test sets it");
    let secret = secret.split(',').next().unwrap_or_default().to_owned();
    let base = std::env::var("WEBHOOK_PUBLIC_URL").expect("scripts/test sets it");
    let body = kore_body(samples);
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
    let (status, text) = http(
        "POST",
        stack.webhook_url("/events"),
        headers,
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

/// The stand-in's counts for `prefix` once `expected` events are in and nothing more has
/// arrived for two seconds (late MODIFYs and hand-backs included).
async fn settled(stand_in: &StandIn, prefix: &str, expected: u64) -> Stats {
    eventually(240, "every event at the Segment stand-in", || async {
        let stats = stand_in.stats(prefix).await;
        (stats.distinct_accepted >= expected).then_some(())
    })
    .await;
    let mut last = stand_in.stats(prefix).await;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stand_in.stats(prefix).await;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    last
}

#[tokio::test]
async fn deliveries_from_both_providers_reach_segment_once_each() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = LocalStack::from_env();
    let stand_in = StandIn::of_stack();
    let ids = unique("once");
    let sim = format!("HSe2esegment{:020}", fastrand::u64(..));
    let samples = events(&ids, &sim, 40, 9);

    // KORE through the stream, Twilio's copy of every event too, five KORE retries, and
    // KORE's webhook delivering the first ten again.
    let mut records: Vec<Vec<u8>> = samples.iter().map(|s| s.kore_json().into_bytes()).collect();
    records.extend(samples.iter().map(|s| s.twilio_json().into_bytes()));
    records.extend(samples.iter().take(5).map(|s| s.kore_json().into_bytes()));
    stack.put_records(&records).await;
    post_kore_batch(&stack, &samples[..10]).await;

    let stats = settled(&stand_in, &ids, 40).await;
    eprintln!(
        "both providers, {} deliveries of 40 events: {} calls accepted, {} distinct messageIds",
        records.len() + 10,
        stats.calls_accepted,
        stats.distinct_accepted
    );
    assert_eq!(
        (stats.calls_accepted, stats.distinct_accepted),
        (40, 40),
        "each event once"
    );
    // Every copy reached the ledger: the copies became deliveries (MODIFYs), not calls.
    let day = stack
        .ledger
        .sim_usage(&sim, "2024-11-06")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(day.usage_events, 40);

    for call in stand_in.accepted(&ids).await {
        let sample = samples
            .iter()
            .find(|s| s.event_sid == call["messageId"].as_str().unwrap_or_default())
            .expect("one of ours");
        assert_eq!(call["type"], "track");
        assert_eq!(call["event"], "data-session.updated");
        assert_eq!(call["anonymousId"], sim.as_str());
        assert_eq!(
            call["timestamp"],
            sample.time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        );
        assert_eq!(call["properties"], sample.data());
    }
    // Every request authenticated with the stack's write key (scripts/dev's default).
    assert_eq!(stand_in.write_keys().await, ["local-segment-write-key"]);
}

#[tokio::test]
async fn a_segment_outage_ends_with_every_event_delivered_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = LocalStack::from_env();
    let stand_in = StandIn::of_stack();
    let ids = unique("outage");
    let sim = format!("HSe2eoutage{:021}", fastrand::u64(..));
    let samples = events(&ids, &sim, 30, 12);

    // Segment answers 500 to the next four requests, however long the events take to get
    // there (a time window raced the stack's latency on a busy machine): the forwarder
    // retries with back-off (three tries), hands the records back to the (local) event
    // source mapping, which sends them again.
    // Only requests holding this test's events count: a straggler of another test must not
    // use up the failures (it did once, and the outage went unseen).
    stand_in
        .control(json!({"fail_requests": 4, "fail_status": 500, "fail_prefix": ids}))
        .await;
    let records: Vec<Vec<u8>> = samples.iter().map(|s| s.kore_json().into_bytes()).collect();
    stack.put_records(&records).await;

    let stats = settled(&stand_in, &ids, 30).await;
    eprintln!(
        "Segment down for 4 requests, then up: {} distinct messageIds accepted, {} calls accepted, {} calls received in all (answered 500 or 200)",
        stats.distinct_accepted, stats.calls_accepted, stats.calls_received
    );
    assert_eq!(stats.distinct_accepted, 30, "every event delivered");
    assert_eq!(stats.distinct_received, 30, "and nothing else");
    assert!(
        stats.calls_received > stats.calls_accepted,
        "the outage was seen: {stats:?}"
    );
}

#[tokio::test]
async fn a_forty_kilobyte_event_does_not_block_the_stream() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = LocalStack::from_env();
    let stand_in = StandIn::of_stack();
    let ids = unique("big");
    let sim = format!("HSe2ebig{:024}", fastrand::u64(..));
    let samples = events(&ids, &sim, 5, 15);
    let mut records: Vec<Vec<u8>> = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let mut json: Value = serde_json::from_str(&sample.kore_json()).unwrap();
        if i == 2 {
            json["data"]["error"] = json!({"code": 83701, "message": "e".repeat(40 * 1024)});
        }
        records.push(json.to_string().into_bytes());
    }
    stack.put_records(&records).await;

    let stats = settled(&stand_in, &ids, 5).await;
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (5, 5));
    let calls = stand_in.accepted(&ids).await;
    let big = calls
        .iter()
        .find(|c| c["messageId"] == samples[2].event_sid.as_str())
        .unwrap();
    assert_eq!(
        big["context"]["kore_ingest"]["trimmed"]["removed_properties"],
        json!(["error"])
    );
    assert_eq!(big["properties"]["sim_sid"], sim.as_str());
}
