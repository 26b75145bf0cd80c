//! The consumer's handler in process, on Lambda's own event types, against a scripted fake of
//! the ledger (no server): which records are reported for retry, and which are not. The
//! wiring to DynamoDB is tested in `tests/kinesis_consumer.rs`, the ledger itself in
//! `tests/ledger.rs`.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use kinesis_consumer::{Consumer, process_batch};
use kore_ingest_core::config::Env;
use kore_ingest_core::delivery::{Origin, Outcome};
use kore_ingest_core::event::{EventError, Provider};
use kore_ingest_core::quarantine::QuarantineKind;
use kore_ingest_core::spill::{self, SpilledRequest};
use kore_test_support::fake_ledger::{FakeLedger, PAST_DEADLINE};
use kore_test_support::{SampleEvent, kinesis_event, sequence_number};
use lambda_runtime::{Context, LambdaEvent};

const TWILIO_RECORD: &str =
    include_str!("../../../tests/fixtures/twilio-kinesis-data-session-updated.json");
const KORE_BATCH: &str =
    include_str!("../../../tests/fixtures/kore-webhook-data-session-batch.json");

fn failures(response: &KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap_or_default())
        .collect()
}

fn usage(n: u64) -> Vec<u8> {
    SampleEvent::usage_update(
        &format!("EZ{n:032}"),
        "HS00000000000000000000000000000042",
        &format!("2024-11-03T10:{n:02}:00Z"),
        (n, 10 * n),
    )
    .kore_json()
    .into_bytes()
}

/// A batch whose records carry the given sequence numbers, as they are (Kinesis numbers of
/// any length).
fn with_sequence_numbers(records: &[(&str, Vec<u8>)]) -> KinesisEvent {
    let numbered: Vec<(u64, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(i, (_, data))| (i as u64, data.clone()))
        .collect();
    let mut event = kinesis_event(&numbered);
    for (record, (sequence, _)) in event.records.iter_mut().zip(records) {
        record.kinesis.sequence_number = (*sequence).to_owned();
        record.event_id = Some(format!("shardId-000000000000:{sequence}"));
    }
    event
}

#[tokio::test]
async fn copies_in_a_batch_are_classified_in_stream_order_and_none_is_retried() {
    let ledger = FakeLedger::new();
    let conflicting = TWILIO_RECORD.replace(r#""data_total":0"#, r#""data_total":1"#);
    assert_ne!(conflicting, TWILIO_RECORD);
    let event = kinesis_event(&[
        (1, TWILIO_RECORD.into()),
        (2, KORE_BATCH.into()), // one record holding an array of two events
        (3, TWILIO_RECORD.into()),
        (4, conflicting.into()),
    ]);

    let report = process_batch(&ledger, event, None).await.unwrap();

    assert!(failures(&report.response).is_empty());
    let outcomes: Vec<(usize, &Outcome)> = report.outcomes.iter().map(|(r, o)| (*r, o)).collect();
    assert_eq!(
        outcomes[..4],
        [
            (0, &Outcome::New),
            (1, &Outcome::New),
            (1, &Outcome::New),
            (
                2,
                &Outcome::Duplicate {
                    new_delivery: false
                }
            ),
        ]
    );
    assert!(
        matches!(outcomes[4], (3, Outcome::Conflict { .. })),
        "{:?}",
        outcomes[4]
    );
    // The ledger saw every event, in stream order, each as the Kinesis record it came in.
    let recorded = ledger.recorded();
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded[0].0, recorded[3].0);
    assert_eq!(
        recorded[3].1.origin,
        Origin::Kinesis {
            shard_id: "shardId-000000000000".into(),
            sequence_number: sequence_number(3),
        }
    );
    assert_eq!(report.metrics.get("RecordsReceived"), 4.0);
    assert_eq!(report.metrics.get("EventsNew"), 3.0);
    assert_eq!(report.metrics.get("EventsDuplicate"), 1.0);
    assert_eq!(report.metrics.get("EventsConflict"), 1.0);
    assert_eq!(report.metrics.get("RecordsFailed"), 0.0);
    assert_eq!(report.metrics.get("UsageBytes"), 128_000.0);
}

#[tokio::test]
async fn poison_records_are_quarantined_with_their_origin_and_never_stall_the_shard() {
    let ledger = FakeLedger::new();
    let garbage: Vec<u8> = (0..64u8)
        .map(|b| b.wrapping_mul(151).wrapping_add(7))
        .collect();
    assert!(std::str::from_utf8(&garbage).is_err());
    let no_key = r#"{"type":"com.kore.iot.supersim.connection.attachment.accepted","source":"kore-events","time":"2024-11-03T10:00:00Z","data":{"sim_sid":"HS1"}}"#;
    let event = kinesis_event(&[
        (1, garbage.clone()),
        (2, b"this is not json".to_vec()),
        (3, no_key.into()),
        (4, TWILIO_RECORD.into()),
    ]);

    let report = process_batch(&ledger, event, None).await.unwrap();

    assert!(
        failures(&report.response).is_empty(),
        "poison must not be retried"
    );
    assert_eq!(report.metrics.get("RecordsQuarantined"), 3.0);
    assert_eq!(report.metrics.get("EventsNew"), 1.0);
    let mut kept = ledger.quarantined();
    kept.sort_by_key(|q| match &q.origin {
        Origin::Kinesis {
            sequence_number, ..
        } => sequence_number.clone(),
        other => panic!("{other:?}"),
    });
    assert_eq!(kept.len(), 3, "{kept:?}");
    for (n, q) in (1..).zip(&kept) {
        assert_eq!(q.kind, QuarantineKind::Event);
        assert_eq!(
            q.origin,
            Origin::Kinesis {
                shard_id: "shardId-000000000000".into(),
                sequence_number: sequence_number(n),
            }
        );
    }
    assert_eq!(kept[0].payload, garbage, "raw bytes kept exactly");
    assert!(kept[0].reason.contains("not UTF-8"), "{}", kept[0].reason);
    assert!(
        kept[1].reason.contains("not valid JSON"),
        "{}",
        kept[1].reason
    );
    assert_eq!(kept[2].reason, EventError::NoDedupeKey.to_string());
    assert_eq!(kept[2].payload, no_key.as_bytes());
}

/// Lambda restarts a shard from the lowest sequence number reported: compared as numbers
/// (`9` before `10`), only that one reported, and a failed quarantine write counts as a
/// failure too.
#[tokio::test]
async fn only_the_numerically_lowest_failed_sequence_number_is_reported() {
    let ledger = FakeLedger::new()
        .fail_event(&format!("EZ{:032}", 10))
        .fail_event(&format!("EZ{:032}", 9));
    let records = [
        ("8", usage(8)),
        ("9", usage(9)),
        ("10", usage(10)),
        ("11", usage(11)),
    ];

    let first = process_batch(&ledger, with_sequence_numbers(&records), None)
        .await
        .unwrap();

    assert_eq!(failures(&first.response), ["9"]);
    assert_eq!(first.metrics.get("RecordsFailed"), 2.0);
    assert_eq!(first.metrics.get("EventsNew"), 2.0);

    // Lambda re-sends from there: what was stored comes back as duplicates.
    ledger.heal();
    let again = process_batch(&ledger, with_sequence_numbers(&records[1..]), None)
        .await
        .unwrap();
    assert!(failures(&again.response).is_empty());
    assert_eq!(again.metrics.get("EventsNew"), 2.0);
    assert_eq!(again.metrics.get("EventsDuplicate"), 1.0);
    assert_eq!(ledger.stored().len(), 4);

    // A poison record whose quarantine write fails is retried like any other write.
    let no_quarantine = FakeLedger::new().fail_quarantine();
    let batch = with_sequence_numbers(&[("100", usage(1)), ("200", b"poison".to_vec())]);
    let report = process_batch(&no_quarantine, batch, None).await.unwrap();
    assert_eq!(failures(&report.response), ["200"]);
    assert_eq!(no_quarantine.stored().len(), 1);
}

#[tokio::test]
async fn a_failed_record_without_a_sequence_number_fails_the_whole_batch() {
    let ledger = FakeLedger::new().fail_event(&format!("EZ{:032}", 2));
    let batch = with_sequence_numbers(&[("1", usage(1)), ("", usage(2))]);
    let error = process_batch(&ledger, batch, None).await.unwrap_err();
    assert!(error.to_string().contains("no sequence number"), "{error}");
}

#[tokio::test]
async fn past_the_deadline_nothing_is_written_and_every_record_is_reported() {
    let ledger = FakeLedger::new();
    let records: Vec<(u64, Vec<u8>)> = (5..=7u64)
        .map(|n| (n, usage(n)))
        .chain([(8, b"poison".to_vec())])
        .collect();

    let report = process_batch(
        &ledger,
        kinesis_event(&records),
        Some(tokio::time::Instant::now()),
    )
    .await
    .unwrap();

    assert_eq!(failures(&report.response), [sequence_number(5)]);
    assert_eq!(report.metrics.get("RecordsFailed"), 4.0);
    assert!(ledger.stored().is_empty());
    assert!(ledger.quarantined().is_empty());
    assert!(report.outcomes.iter().all(|(_, o)| o.is_retry()));
    assert!(
        report
            .outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Retry { reason } if reason == PAST_DEADLINE))
    );
}

/// An invocation of `records` with `seconds_left` before Lambda's timeout.
fn invocation(records: &[(u64, Vec<u8>)], seconds_left: u64) -> LambdaEvent<KinesisEvent> {
    let mut context = Context::default();
    let deadline = SystemTime::now() + Duration::from_secs(seconds_left);
    context.deadline = deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    LambdaEvent::new(kinesis_event(records), context)
}

/// The handler's deadline is the invocation's less `DEADLINE_MARGIN_MS`.
#[tokio::test]
async fn the_invocation_deadline_less_the_margin_bounds_the_writes() {
    let env = Env::from_pairs(&[("DEADLINE_MARGIN_MS", "5000")]);
    let consumer = Consumer::new(FakeLedger::new(), &env).unwrap();

    let closer_than_the_margin = consumer
        .handle(invocation(&[(1, usage(1))], 3))
        .await
        .unwrap();
    assert_eq!(failures(&closer_than_the_margin), [sequence_number(1)]);
    assert!(consumer.ledger.stored().is_empty());

    let in_time = consumer
        .handle(invocation(&[(1, usage(1))], 60))
        .await
        .unwrap();
    assert!(failures(&in_time).is_empty());
    assert_eq!(consumer.ledger.stored().len(), 1);
}

/// Issue 21, item 9: a write started just inside the margin that then hangs (a stalled
/// table; the SDK's own timeout is longer than the margin) is cut off before Lambda's
/// timeout, with the time to answer kept, and the batch is reported for retry from its
/// first record (what was stored comes again as harmless duplicates).
#[tokio::test(start_paused = true)]
async fn a_write_that_would_outlast_the_invocation_is_cut_off_and_reported_for_retry() {
    let env = Env::from_pairs(&[("DEADLINE_MARGIN_MS", "5000")]);
    let stalled = FakeLedger::new().delay_batches(Duration::from_secs(60));
    let consumer = Consumer::new(stalled, &env).unwrap();
    let started = tokio::time::Instant::now();

    // Six seconds left: the write starts one second before the margin, then stalls.
    let response = consumer
        .handle(invocation(&[(1, usage(1)), (2, usage(2))], 6))
        .await
        .unwrap();

    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    assert!(took > Duration::from_secs(5), "cut off too early: {took:?}");
    assert_eq!(failures(&response), [sequence_number(1)]);
}

#[test]
fn the_margin_is_read_as_milliseconds() {
    let margin = |value: &str| {
        Consumer::new(
            FakeLedger::new(),
            &Env::from_pairs(&[("DEADLINE_MARGIN_MS", value)]),
        )
        .map(|consumer| consumer.deadline_margin)
        .map_err(|e| e.to_string())
    };
    assert_eq!(margin(""), Ok(Duration::from_secs(5)));
    assert_eq!(margin(" 250 "), Ok(Duration::from_millis(250)));
    // The same bounds as every other function's (the forwarder's): at most ten minutes.
    assert!(margin("600001").is_err());
    assert_eq!(
        margin("5s"),
        Err("DEADLINE_MARGIN_MS is invalid: `5s` is not a whole number of milliseconds from 0 to 600000".into())
    );
}

/// A record the webhook spilled when storage failed holds a request's events: they are
/// recorded as that webhook delivery (provider, request id), not as a Kinesis one.
#[tokio::test]
async fn a_spilled_webhook_request_is_recorded_as_the_webhook_delivery_it_is() {
    let ledger = FakeLedger::new();
    let request = SpilledRequest {
        provider: Some(Provider::Twilio),
        request_id: "req-spilled".into(),
        received_at: "2024-11-03T10:00:05.123Z".parse().unwrap(),
    };
    let sample = SampleEvent::usage_update(
        "EZ00000000000000000000000000spill",
        "HS00000000000000000000000000spill",
        "2024-11-03T10:00:00Z",
        (1, 2),
    );
    let event_text = sample.twilio_json();
    let records = spill::encode(&request, &[event_text.as_str()]).unwrap();
    assert_eq!(records.len(), 1);

    let report = process_batch(&ledger, kinesis_event(&[(1, records[0].clone())]), None)
        .await
        .unwrap();

    assert_eq!(report.metrics.get("RecordsSpilledIn"), 1.0);
    assert_eq!(report.metrics.get("EventsNew"), 1.0);
    let recorded = ledger.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].1.origin,
        Origin::Webhook {
            request_id: "req-spilled".into()
        }
    );
    assert_eq!(recorded[0].1.provider_hint, Some(Provider::Twilio));
    assert_eq!(recorded[0].1.received_at, request.received_at);
}
