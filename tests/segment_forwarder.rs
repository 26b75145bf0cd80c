//! The `segment-forwarder` handler, called directly with the ledger table's DynamoDB stream
//! as Lambda delivers it (the items the ledger wrote to DynamoDB Local, as stream records),
//! against a Segment stand-in of its own (`scripts/lib/segment_standin.py`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::faults::{SEGMENT_FORWARDER, as_function};
use integration_tests::segment::{
    FakeSecretsManager, StandIn, stream_event, stream_record, table_items,
};
use integration_tests::*;
use kore_ingest_shared::ledger::{Outcome, UsageLedger};
use segment_forwarder::{BatchReport, Forwarder, ForwarderConfig, RecordOutcome, process_batch};
use serde_json::{Value, json};

type Item = HashMap<String, AttributeValue>;

fn forwarder(stand_in: &StandIn, extra: &[(&'static str, &'static str)]) -> Forwarder {
    let url = stand_in.url.clone();
    let config = ForwarderConfig::from_vars(|name| match name {
        "SEGMENT_ENDPOINT" => Some(url.clone()),
        "SEGMENT_WRITE_KEY" => Some("test-write-key".into()),
        // Short back-offs: the tests wait for nothing.
        "SEGMENT_RETRY_BASE_MS" => Some("10".into()),
        other => extra
            .iter()
            .find(|(k, _)| *k == other)
            .map(|(_, v)| (*v).to_owned()),
    })
    .expect("configuration");
    Forwarder::new(config).expect("forwarder")
}

async fn forward(forwarder: &Forwarder, records: Vec<Value>) -> BatchReport {
    as_function(
        SEGMENT_FORWARDER,
        process_batch(forwarder, stream_event(records), None),
    )
    .await
    .expect("the batch is processed")
}

fn failures(report: &BatchReport) -> Vec<String> {
    report
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap_or_default())
        .collect()
}

fn pk(item: &Item) -> &str {
    item.get("pk")
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

/// What the table's stream holds after the ledger stored `items`: one `INSERT` per item
/// (events, rollups, booking lists...), then a `MODIFY` for every event record another
/// delivery was added to.
async fn stream_of(ledger: &UsageLedger) -> (Vec<Value>, Vec<Item>) {
    let items = table_items(ledger).await;
    let mut records: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(n, item)| stream_record("INSERT", item, n as u64))
        .collect();
    let modified = items.iter().filter(|item| {
        pk(item).starts_with("EVENT#")
            && item
                .get("deliveries")
                .and_then(|d| d.as_ss().ok())
                .is_some_and(|d| d.len() > 1)
    });
    for (n, item) in modified.enumerate() {
        records.push(stream_record("MODIFY", item, 10_000 + n as u64));
    }
    (records, items)
}

/// `n` usage events of one SIM whose SIDs start with `prefix` (the stand-in's filter).
fn usage_events(prefix: &str, sim: &str, n: usize) -> Vec<SampleEvent> {
    (0..n)
        .map(|i| {
            SampleEvent::usage_update(
                &format!("{prefix}{i:06}"),
                sim,
                &format!("2024-11-04T{:02}:{:02}:00Z", 8 + i / 60, i % 60),
                (100 + i as u64, 1_000),
            )
        })
        .collect()
}

/// KORE's copy of `event` with `extra` fields added to its `data`.
fn kore_with(event: &SampleEvent, extra: Value) -> String {
    let mut json: Value = serde_json::from_str(&event.kore_json()).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        json["data"][k] = v.clone();
    }
    json.to_string()
}

async fn store(ledger: &UsageLedger, payloads: &[String]) {
    for (n, payload) in payloads.iter().enumerate() {
        let outcome = ledger
            .record(&parse_item(payload), &kinesis(n as u64))
            .await;
        assert!(
            matches!(outcome, Outcome::New | Outcome::Duplicate { .. }),
            "{outcome:?}"
        );
    }
}

fn prefix(name: &str) -> String {
    format!("EZ{name}{:08x}", fastrand::u32(..))
}

#[tokio::test]
async fn each_new_event_reaches_segment_once_with_the_fields() {
    let ledger = fresh_ledger("segment-once").await;
    let stand_in = StandIn::start();
    let ids = prefix("once");
    let sim = "HS0000000000000000000000000segment";
    let mut events = usage_events(&ids, sim, 5);
    events.push(SampleEvent {
        suffix: "attachment.accepted",
        ..SampleEvent::usage_update(&format!("{ids}attach"), sim, "2024-11-04T07:59:00Z", (0, 0))
    });
    // KORE delivers all, Twilio the first three again (the ledger adds a delivery: MODIFY),
    // and a KORE test event, which is not forwarded by default.
    let mut payloads: Vec<String> = events.iter().map(SampleEvent::kore_json).collect();
    payloads.extend(events.iter().take(3).map(SampleEvent::twilio_json));
    payloads.push(
        json!({
            "specversion": "1.0", "type": "com.kore.eventstreams.test.event",
            "source": "kore-events", "id": format!("{ids}test"),
            "time": "2024-11-04T07:00:00Z", "data": {"test_id": "t-1"},
        })
        .to_string(),
    );
    store(&ledger, &payloads).await;
    let (records, items) = stream_of(&ledger).await;
    assert!(records.len() > 7 + 3, "rollups and booking lists too");

    let forwarder = forwarder(&stand_in, &[]);
    let report = forward(&forwarder, records.clone()).await;

    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("EventsForwarded"), 6.0);
    assert_eq!(report.metrics.get("EventsSkipped"), 1.0, "the test event");
    assert_eq!(
        report.metrics.get("RecordsIgnored"),
        (records.len() - 7) as f64,
        "other items and the MODIFYs"
    );
    let stats = stand_in.stats(&ids).await;
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (6, 6));
    for call in stand_in.accepted(&ids).await {
        let id = call["messageId"].as_str().unwrap();
        let event = events.iter().find(|e| e.event_sid == id).unwrap();
        assert_eq!(call["type"], "track");
        assert_eq!(call["event"], event.suffix);
        assert_eq!(call["anonymousId"], sim);
        // The event's time: KORE's copy came first, with seven fractional digits.
        assert_eq!(
            call["timestamp"],
            event.time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        );
        assert_eq!(
            call["properties"],
            event.data(),
            "the data object untouched"
        );
    }
    assert_eq!(stand_in.write_keys().await, ["test-write-key"]);

    // Lambda sends a batch again after an unclear end: Segment gets the same messageIds.
    forward(&forwarder, records).await;
    let again = stand_in.stats(&ids).await;
    assert_eq!((again.calls_accepted, again.distinct_accepted), (12, 6));

    // Test events go when asked for, named by their whole type.
    let everything = forwarder_with_kinds(&stand_in, "all");
    let test_item = items.iter().find(|i| pk(i).ends_with("test")).unwrap();
    let report = forward(&everything, vec![stream_record("INSERT", test_item, 1)]).await;
    assert_eq!(report.metrics.get("EventsForwarded"), 1.0);
    let call = stand_in.accepted(&format!("{ids}test")).await.remove(0);
    assert_eq!(call["event"], "com.kore.eventstreams.test.event");
    assert_eq!(call["anonymousId"], format!("{ids}test"));
}

fn forwarder_with_kinds(stand_in: &StandIn, kinds: &'static str) -> Forwarder {
    forwarder(stand_in, &[("SEGMENT_EVENT_KINDS", kinds)])
}

#[tokio::test]
async fn server_errors_are_retried_then_handed_back_and_nothing_is_lost() {
    let ledger = fresh_ledger("segment-5xx").await;
    let stand_in = StandIn::start();
    let ids = prefix("retry");
    // 30 events of 20 KB: two requests of Segment's 500 KB.
    let events = usage_events(&ids, "HS00000000000000000000000000retry", 30);
    let payloads: Vec<String> = events
        .iter()
        .map(|e| kore_with(e, json!({"padding": "p".repeat(20_000)})))
        .collect();
    store(&ledger, &payloads).await;
    let (records, _) = stream_of(&ledger).await;
    let event_records: Vec<(usize, &Value)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r["dynamodb"]["Keys"]["pk"]["S"]
                .as_str()
                .is_some_and(|pk| pk.starts_with("EVENT#"))
        })
        .collect();

    // Two 500s, then 200: retried within the invocation.
    stand_in
        .control(json!({"fail_requests": 2, "fail_status": 503}))
        .await;
    let forwarder = forwarder(&stand_in, &[("SEGMENT_MAX_ATTEMPTS", "3")]);
    let report = forward(&forwarder, records.clone()).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("SegmentRetries"), 2.0);
    assert_eq!(
        report.metrics.get("SegmentRequests"),
        4.0,
        "2 requests, 2 retries"
    );
    let stats = stand_in.stats(&ids).await;
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (30, 30));

    // The first request goes through, the second keeps failing: its first record is handed
    // back, and Lambda sends from there again once Segment answers.
    stand_in
        .control(json!({"reset": true, "pass_requests": 1, "fail_requests": 3, "fail_status": 500}))
        .await;
    let report = forward(&forwarder, records.clone()).await;
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let restart = records
        .iter()
        .position(|r| r["dynamodb"]["SequenceNumber"] == failed[0].as_str())
        .unwrap();
    let delivered = report
        .outcomes
        .iter()
        .filter(|o| matches!(o, RecordOutcome::Forwarded { .. }))
        .count();
    assert!(delivered > 0 && delivered < 30, "{delivered}");
    assert!(matches!(
        report.outcomes[restart],
        RecordOutcome::Failed { .. }
    ));
    assert_eq!(report.metrics.get("RecordsFailed"), (30 - delivered) as f64);
    assert_eq!(
        event_records
            .iter()
            .position(|(i, _)| *i == restart)
            .unwrap(),
        delivered,
        "the lowest record not delivered"
    );
    let report = forward(&forwarder, records[restart..].to_vec()).await;
    assert!(failures(&report).is_empty());
    let stats = stand_in.stats(&ids).await;
    // 30 delivered once each; the failed request's calls arrived three times more, refused.
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (30, 30));
    assert_eq!(stats.distinct_received, 30);
    assert_eq!(stats.calls_received, 30 + 3 * (30 - delivered as u64));
    eprintln!(
        "500 then 200: {} distinct messageIds accepted, {} calls received in all",
        stats.distinct_accepted, stats.calls_received
    );

    // 429 with Retry-After is retried the same way.
    stand_in
        .control(json!({"reset": true, "fail_requests": 1, "fail_status": 429}))
        .await;
    let report = forward(&forwarder, records).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("SegmentRetries"), 1.0);
}

#[tokio::test]
async fn a_forty_kilobyte_event_is_trimmed_and_never_blocks_the_stream() {
    let ledger = fresh_ledger("segment-40kb").await;
    let stand_in = StandIn::start();
    let ids = prefix("big");
    let events = usage_events(&ids, "HS000000000000000000000000000big40", 3);
    let error = json!({"code": 83701, "message": "m".repeat(40 * 1024)});
    let payloads = vec![
        events[0].kore_json(),
        kore_with(&events[1], json!({"error": error})),
        events[2].kore_json(),
    ];
    store(&ledger, &payloads).await;
    let (records, _) = stream_of(&ledger).await;

    let forwarder = forwarder(&stand_in, &[]);
    let report = forward(&forwarder, records.clone()).await;

    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("EventsForwarded"), 3.0);
    assert_eq!(report.metrics.get("CallsTrimmed"), 1.0);
    let calls = stand_in.accepted(&ids).await;
    assert_eq!(calls.len(), 3);
    let big = calls
        .iter()
        .find(|c| c["messageId"] == events[1].event_sid.as_str())
        .unwrap();
    assert!(big["properties"]["error"].is_null(), "the large field went");
    assert_eq!(big["properties"]["data_total"], events[1].window.0 + 1_000);
    let note = &big["context"]["kore_ingest"]["trimmed"];
    assert_eq!(note["removed_properties"], json!(["error"]));
    assert!(note["original_bytes"].as_u64().unwrap() > 40 * 1024);
    assert!(big.to_string().len() < 32_000);

    // A Segment stricter than 32 KB: it refuses a request holding a 12 KB call with 400.
    // The request is split until that call is alone, which is trimmed until it is taken.
    let ids = prefix("strict");
    let events = usage_events(&ids, "HS00000000000000000000000000strict", 6);
    let payloads: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, e)| match i {
            3 => kore_with(e, json!({"padding": "p".repeat(12_000)})),
            _ => e.kore_json(),
        })
        .collect();
    let ledger = fresh_ledger("segment-strict").await;
    store(&ledger, &payloads).await;
    let (records, _) = stream_of(&ledger).await;
    stand_in
        .control(json!({"reset": true, "max_call_bytes": 8_000}))
        .await;
    let report = forward(&forwarder, records.clone()).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("EventsForwarded"), 6.0);
    assert_eq!(report.metrics.get("CallsTrimmed"), 1.0);
    let stats = stand_in.stats(&ids).await;
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (6, 6));

    // A Segment that refuses everything: every call is noted as refused, none is handed
    // back, so the shard moves on.
    stand_in
        .control(json!({"reset": true, "max_call_bytes": 50}))
        .await;
    let report = forward(&forwarder, records).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("CallsRefused"), 6.0);
    assert_eq!(report.metrics.get("EventsForwarded"), 0.0);
}

#[tokio::test]
async fn records_that_are_no_event_to_forward_never_block() {
    let stand_in = StandIn::start();
    let forwarder = forwarder(&stand_in, &[]);
    let item = |pairs: &[(&str, AttributeValue)]| -> Item {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let broken = item(&[("pk", s("EVENT#EZbroken")), ("sk", s("#")), ("ty", s("x"))]);
    let callback = item(&[("pk", s("CALLBACK#kore#RQ1")), ("sk", s("#"))]);
    let records = vec![
        stream_record("INSERT", &broken, 1),
        stream_record("INSERT", &callback, 2),
        stream_record("REMOVE", &broken, 3),
    ];
    let report = forward(&forwarder, records).await;
    assert!(failures(&report).is_empty());
    assert!(
        matches!(&report.outcomes[0], RecordOutcome::Undecodable { reason } if reason.contains("no data")),
        "{:?}",
        report.outcomes[0]
    );
    assert_eq!(
        report.outcomes[1..],
        [RecordOutcome::Ignored, RecordOutcome::Ignored]
    );
    assert_eq!(report.metrics.get("RecordsUndecodable"), 1.0);
    assert_eq!(report.metrics.get("SegmentRequests"), 0.0);
}

#[tokio::test]
async fn the_write_key_is_read_once_from_secrets_manager() {
    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:segment-AbCdEf";
    let manager = FakeSecretsManager::start(ARN, r#"{"SEGMENT_WRITE_KEY": "wk-from-secrets"}"#);
    let stand_in = StandIn::start();
    let url = stand_in.url.clone();
    let aws = manager.sdk_config().await;
    let forwarder = as_function(
        SEGMENT_FORWARDER,
        Forwarder::load_with(&aws, |name| match name {
            "SEGMENT_WRITE_KEY_SECRET_ARN" => Some(ARN.into()),
            "SEGMENT_ENDPOINT" => Some(url.clone()),
            // The secret wins over a key in the environment.
            "SEGMENT_WRITE_KEY" => Some("not-this-one".into()),
            _ => None,
        }),
    )
    .await
    .expect("the secret is read");
    assert_eq!(manager.reads(), 1);
    assert!(!format!("{forwarder:?}").contains("wk-from-secrets"));

    let ledger = fresh_ledger("segment-secret").await;
    let ids = prefix("key");
    store(
        &ledger,
        &usage_events(&ids, "HS00000000000000000000000000000key", 2)
            .iter()
            .map(SampleEvent::kore_json)
            .collect::<Vec<_>>(),
    )
    .await;
    let (records, _) = stream_of(&ledger).await;
    for _ in 0..2 {
        forward(&forwarder, records.clone()).await;
    }
    assert_eq!(manager.reads(), 1, "once per container");
    assert_eq!(stand_in.write_keys().await, ["wk-from-secrets"]);
}
