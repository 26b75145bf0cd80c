//! The `segment-forwarder` handler in process: the ledger table's DynamoDB stream as Lambda
//! delivers it (each item as the ledger writes it, `kore_ingest_aws::ledger::event_record_item`)
//! against Segment in process ([`FakeSegment`]). Nothing else runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kore_ingest_aws::ledger::{event_record_item, rollup_item};
use kore_ingest_core::config::Env;
use kore_ingest_core::delivery::delivery_tag;
use kore_ingest_core::usage::{BookingNames, DayBooking};
use kore_test_support::faults::{SEGMENT_FORWARDER, as_function};
use kore_test_support::secrets_manager::FakeSecretsManager;
use kore_test_support::segment::Stats;
use kore_test_support::streams::{stream_event, stream_record};
use kore_test_support::{SampleEvent, kinesis, parse_one};
use segment_forwarder::{
    Answer, BatchReport, Forwarder, ForwarderConfig, RecordOutcome, Sink, process_batch,
};
use serde_json::{Value, json};

type Item = HashMap<String, AttributeValue>;

/// Segment, in process: it answers a batch body as Segment does (400 for a call or a body
/// over its limits, else 200), or as scripted (a number of requests failing with a status),
/// and keeps every call with the answer its request got.
#[derive(Default)]
struct FakeSegment {
    state: Mutex<SinkState>,
}

struct SinkState {
    /// `(call, accepted)` for every call of every request.
    calls: Vec<(Value, bool)>,
    pass_requests: usize,
    fail_requests: usize,
    fail_status: u16,
    max_call_bytes: usize,
}

impl Default for SinkState {
    fn default() -> Self {
        SinkState {
            calls: Vec::new(),
            pass_requests: 0,
            fail_requests: 0,
            fail_status: 500,
            max_call_bytes: 32 * 1024,
        }
    }
}

impl FakeSegment {
    fn state(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After `pass` requests, `fail` more are answered `status`.
    fn fail(&self, pass: usize, fail: usize, status: u16) {
        let mut state = self.state();
        (state.pass_requests, state.fail_requests, state.fail_status) = (pass, fail, status);
    }

    /// A Segment stricter (or laxer) than 32 KB per call.
    fn max_call_bytes(&self, bytes: usize) {
        self.state().max_call_bytes = bytes;
    }

    fn forget(&self) {
        *self.state() = SinkState::default();
    }

    fn stats(&self, prefix: &str) -> Stats {
        let state = self.state();
        let ours: Vec<&(Value, bool)> = state
            .calls
            .iter()
            .filter(|(call, _)| {
                call["messageId"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(prefix))
            })
            .collect();
        let distinct = |accepted_only: bool| {
            ours.iter()
                .filter(|(_, accepted)| *accepted || !accepted_only)
                .map(|(call, _)| call["messageId"].to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64
        };
        // Counted as the stand-in of the local stack counts them.
        Stats {
            calls_received: ours.len() as u64,
            distinct_received: distinct(false),
            calls_accepted: ours.iter().filter(|(_, accepted)| *accepted).count() as u64,
            distinct_accepted: distinct(true),
        }
    }

    /// The accepted calls whose `messageId` starts with `prefix`.
    fn accepted(&self, prefix: &str) -> Vec<Value> {
        self.state()
            .calls
            .iter()
            .filter(|(call, accepted)| {
                *accepted
                    && call["messageId"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(prefix))
            })
            .map(|(call, _)| call.clone())
            .collect()
    }
}

impl Sink for &FakeSegment {
    async fn post(&self, body: String, _timeout: Duration) -> Answer {
        let batch: Value = serde_json::from_str(&body).expect("a JSON batch body");
        let calls = batch["batch"].as_array().cloned().unwrap_or_default();
        let mut state = self.state();
        let answer = if state.pass_requests > 0 {
            state.pass_requests -= 1;
            None
        } else if state.fail_requests > 0 {
            state.fail_requests -= 1;
            Some(state.fail_status)
        } else {
            None
        };
        let too_large = body.len() > 500 * 1024
            || calls
                .iter()
                .any(|call| call.to_string().len() > state.max_call_bytes);
        let status = answer.unwrap_or(if too_large { 400 } else { 200 });
        let accepted = status == 200;
        state
            .calls
            .extend(calls.into_iter().map(|call| (call, accepted)));
        match status {
            200 => Answer::Accepted,
            400 | 413 => Answer::Refused {
                status,
                detail: "too large".into(),
            },
            _ => Answer::Retry {
                reason: format!("Segment answered {status}"),
                retry_after: None,
            },
        }
    }
}

fn config(extra: &[(&str, &str)]) -> ForwarderConfig {
    let mut pairs = vec![
        ("SEGMENT_WRITE_KEY", "test-write-key"),
        // Short back-offs: the tests wait for nothing.
        ("SEGMENT_RETRY_BASE_MS", "10"),
    ];
    pairs.extend_from_slice(extra);
    ForwarderConfig::from_env(&Env::from_pairs(&pairs)).expect("configuration")
}

fn forwarder_of<'a>(
    segment: &'a FakeSegment,
    extra: &[(&str, &str)],
) -> Forwarder<&'a FakeSegment> {
    Forwarder {
        config: config(extra),
        segment,
    }
}

/// One batch through the handler, as the forwarder's (for the IAM test: the handler makes
/// no AWS call of its own, and one added would be recorded and checked against the role).
async fn forward(forwarder: &Forwarder<&FakeSegment>, records: Vec<Value>) -> BatchReport {
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

/// What the table's stream holds after the ledger stored `payloads` in order: an `INSERT`
/// for each new event record and for a rollup of each SIM's day (the other items a commit
/// writes), then a `MODIFY` for every event record a later copy added a delivery to.
fn stream_of(payloads: &[String]) -> (Vec<Value>, Vec<Item>) {
    let mut items: Vec<Item> = Vec::new();
    let mut modified: Vec<Item> = Vec::new();
    let mut rollups: BTreeSet<(String, String)> = BTreeSet::new();
    for (n, payload) in payloads.iter().enumerate() {
        let event = parse_one(payload);
        let delivery = kinesis(n as u64);
        let tag = delivery_tag(event.provider, &delivery.origin);
        let stored = items
            .iter_mut()
            .find(|item| pk(item) == format!("EVENT#{}", event.key));
        match stored {
            Some(item) => {
                if let Some(AttributeValue::Ss(tags)) = item.get_mut("deliveries")
                    && !tags.contains(&tag)
                {
                    tags.push(tag);
                    modified.push(item.clone());
                }
            }
            None => {
                items.push(event_record_item(&event, &delivery, &Default::default()));
                if let Some(day) = DayBooking::of(&event, false)
                    && rollups.insert((day.booking.sim_sid.clone(), day.day.to_string()))
                {
                    items.push(rollup(&day));
                }
            }
        }
    }
    let mut records: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(n, item)| stream_record("INSERT", item, n as u64))
        .collect();
    for (n, item) in modified.iter().enumerate() {
        records.push(stream_record("MODIFY", item, 10_000 + n as u64));
    }
    (records, items)
}

fn rollup(day: &DayBooking) -> Item {
    rollup_item(day.day, &day.booking, &day.hours, &BookingNames::default()).expect("a rollup")
}

/// `n` usage events of one SIM whose SIDs start with `prefix`.
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

fn prefix(name: &str) -> String {
    format!("EZ{name}{:08x}", fastrand::u32(..))
}

#[tokio::test]
async fn each_new_event_reaches_segment_once_with_the_fields() {
    let segment = FakeSegment::default();
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
    let (records, items) = stream_of(&payloads);
    assert!(records.len() > 7 + 3, "rollups and booking lists too");

    let forwarder = forwarder_of(&segment, &[]);
    let report = forward(&forwarder, records.clone()).await;

    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("EventsForwarded"), 6.0);
    assert_eq!(report.metrics.get("EventsSkipped"), 1.0, "the test event");
    assert_eq!(
        report.metrics.get("RecordsIgnored"),
        (records.len() - 7) as f64,
        "other items and the MODIFYs"
    );
    let stats = segment.stats(&ids);
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (6, 6));
    for call in segment.accepted(&ids) {
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

    // Lambda sends a batch again after an unclear end: Segment gets the same messageIds.
    forward(&forwarder, records).await;
    let again = segment.stats(&ids);
    assert_eq!((again.calls_accepted, again.distinct_accepted), (12, 6));

    // Test events go when asked for, named by their whole type.
    let everything = forwarder_of(&segment, &[("SEGMENT_EVENT_KINDS", "all")]);
    let test_item = items.iter().find(|i| pk(i).ends_with("test")).unwrap();
    let report = forward(&everything, vec![stream_record("INSERT", test_item, 1)]).await;
    assert_eq!(report.metrics.get("EventsForwarded"), 1.0);
    let call = segment.accepted(&format!("{ids}test")).remove(0);
    assert_eq!(call["event"], "com.kore.eventstreams.test.event");
    assert_eq!(call["anonymousId"], format!("{ids}test"));
}

/// Issue 21, item 12: fields named in `SEGMENT_OMIT_PROPERTIES` (top-level, or a dotted
/// path into an object) never leave the account; everything else is sent as received.
#[tokio::test]
async fn omitted_personal_fields_never_reach_segment() {
    let segment = FakeSegment::default();
    let ids = prefix("omit");
    let event = &usage_events(&ids, "HS00000000000000000000000000omit", 1)[0];
    let personal = json!({
        "imei": "356938035643809", "imsi": "732123200000001", "ip_address": "100.64.12.34",
        "location": {"lat": 41.8781, "lon": -87.6298, "cell_id": "20981234", "lac": "7001"},
    });
    let (records, _) = stream_of(&[kore_with(event, personal)]);
    let forwarder = forwarder_of(
        &segment,
        &[(
            "SEGMENT_OMIT_PROPERTIES",
            "imei, imsi,ip_address,location.cell_id,location.lac,nowhere.x",
        )],
    );

    let report = forward(&forwarder, records).await;

    assert!(failures(&report).is_empty());
    let call = segment.accepted(&ids).remove(0);
    let mut expected = event.data();
    expected["location"] = json!({"lat": 41.8781, "lon": -87.6298});
    assert_eq!(
        call["properties"], expected,
        "only the named fields are left out"
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_handed_back_and_nothing_is_lost() {
    let segment = FakeSegment::default();
    let ids = prefix("retry");
    // 30 events of 20 KB: two requests of Segment's 500 KB.
    let events = usage_events(&ids, "HS00000000000000000000000000retry", 30);
    let payloads: Vec<String> = events
        .iter()
        .map(|e| kore_with(e, json!({"padding": "p".repeat(20_000)})))
        .collect();
    let (records, _) = stream_of(&payloads);
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
    segment.fail(0, 2, 503);
    let forwarder = forwarder_of(&segment, &[("SEGMENT_MAX_ATTEMPTS", "3")]);
    let report = forward(&forwarder, records.clone()).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("SegmentRetries"), 2.0);
    assert_eq!(
        report.metrics.get("SegmentRequests"),
        4.0,
        "2 requests, 2 retries"
    );
    let stats = segment.stats(&ids);
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (30, 30));

    // The first request goes through, the second keeps failing: its first record is handed
    // back, and Lambda sends from there again once Segment answers.
    segment.forget();
    segment.fail(1, 3, 500);
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
    let stats = segment.stats(&ids);
    // 30 delivered once each; the failed request's calls arrived three times more, refused.
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (30, 30));
    assert_eq!(stats.distinct_received, 30);
    assert_eq!(stats.calls_received, 30 + 3 * (30 - delivered as u64));
    eprintln!(
        "500 then 200: {} distinct messageIds accepted, {} calls received in all",
        stats.distinct_accepted, stats.calls_received
    );

    // 429 with Retry-After is retried the same way.
    segment.forget();
    segment.fail(0, 1, 429);
    let report = forward(&forwarder, records).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("SegmentRetries"), 1.0);
}

#[tokio::test]
async fn a_forty_kilobyte_event_is_trimmed_and_never_blocks_the_stream() {
    let segment = FakeSegment::default();
    let ids = prefix("big");
    let events = usage_events(&ids, "HS000000000000000000000000000big40", 3);
    let error = json!({"code": 83701, "message": "m".repeat(40 * 1024)});
    let payloads = vec![
        events[0].kore_json(),
        kore_with(&events[1], json!({"error": error})),
        events[2].kore_json(),
    ];
    let (records, _) = stream_of(&payloads);

    let forwarder = forwarder_of(&segment, &[]);
    let report = forward(&forwarder, records.clone()).await;

    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("EventsForwarded"), 3.0);
    assert_eq!(report.metrics.get("CallsTrimmed"), 1.0);
    let calls = segment.accepted(&ids);
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
    let (records, _) = stream_of(&payloads);
    segment.forget();
    segment.max_call_bytes(8_000);
    let report = forward(&forwarder, records.clone()).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("EventsForwarded"), 6.0);
    assert_eq!(report.metrics.get("CallsTrimmed"), 1.0);
    let stats = segment.stats(&ids);
    assert_eq!((stats.calls_accepted, stats.distinct_accepted), (6, 6));

    // A Segment that refuses everything: every call is noted as refused, none is handed
    // back, so the shard moves on.
    segment.forget();
    segment.max_call_bytes(50);
    let report = forward(&forwarder, records).await;
    assert!(failures(&report).is_empty());
    assert_eq!(report.metrics.get("CallsRefused"), 6.0);
    assert_eq!(report.metrics.get("EventsForwarded"), 0.0);
}

#[tokio::test]
async fn records_that_are_no_event_to_forward_never_block() {
    let segment = FakeSegment::default();
    let forwarder = forwarder_of(&segment, &[]);
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
async fn the_write_key_comes_from_secrets_manager_ahead_of_the_environment() {
    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:segment-AbCdEf";
    let manager = FakeSecretsManager::start(ARN, r#"{"SEGMENT_WRITE_KEY": "wk-from-secrets"}"#);
    let aws = manager.sdk_config().await;
    let env = Env::from_pairs(&[
        ("SEGMENT_WRITE_KEY_SECRET_ARN", ARN),
        // The secret wins over a key in the environment.
        ("SEGMENT_WRITE_KEY", "not-this-one"),
    ]);
    let loaded = as_function(SEGMENT_FORWARDER, Forwarder::load(&aws, &env))
        .await
        .expect("the secret is read");
    assert_eq!(manager.reads(), 1);
    assert!(!format!("{loaded:?}").contains("wk-from-secrets"));
    assert_eq!(loaded.config.write_key, "wk-from-secrets");
}
