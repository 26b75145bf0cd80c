//! The `kinesis-consumer` handler wired to the ledger on DynamoDB Local, called with
//! Lambda's own event shape: what only the real storage shows (rollups, DynamoDB's errors
//! and answers, payloads larger than an item) and the AWS operations the function performs
//! (`tests/iam_grants.rs`). Its rules (which record is reported, poison, the deadline) are
//! tested in process in `functions/kinesis-consumer/tests/handler.rs`.

use kinesis_consumer::process_batch;
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};
use kore_ingest_core::delivery::Outcome;
use kore_test_support::faults::{KINESIS_CONSUMER, Throttle, as_function, throttled_client};
use kore_test_support::script::{Script, Step, dynamodb_error, scripted_client};
use kore_test_support::*;

const TWILIO_RECORD: &str = include_str!("fixtures/twilio-kinesis-data-session-updated.json");
const KORE_BATCH: &str = include_str!("fixtures/kore-webhook-data-session-batch.json");

/// The consumer's handler, its AWS operations recorded as the function's.
async fn consume(
    ledger: &UsageLedger,
    event: aws_lambda_events::event::kinesis::KinesisEvent,
    deadline: Option<tokio::time::Instant>,
) -> Result<kinesis_consumer::BatchReport, Box<dyn std::error::Error + Send + Sync>> {
    as_function(KINESIS_CONSUMER, process_batch(ledger, event, deadline)).await
}

fn failures(response: &aws_lambda_events::event::streams::KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn new_duplicate_and_conflicting_records_end_as_specified() {
    let ledger = fresh_ledger("consumer-outcomes").await;
    let conflicting = TWILIO_RECORD.replace(r#""data_total":0"#, r#""data_total":1"#);
    assert_ne!(conflicting, TWILIO_RECORD);
    let event = kinesis_event(&[
        (1, TWILIO_RECORD.into()),
        (2, KORE_BATCH.into()), // one record holding an array of two events
        (3, TWILIO_RECORD.into()),
        (4, conflicting.into()),
    ]);

    let report = consume(&ledger, event, None).await.unwrap();

    assert!(failures(&report.response).is_empty());
    let outcomes: Vec<&Outcome> = report.outcomes.iter().map(|(_, o)| o).collect();
    assert_eq!(
        outcomes[..4],
        [
            &Outcome::New,
            &Outcome::New,
            &Outcome::New,
            &Outcome::Duplicate {
                new_delivery: false
            }
        ]
    );
    assert!(
        matches!(outcomes[4], Outcome::Conflict { .. }),
        "{:?}",
        outcomes[4]
    );
    assert_eq!(report.metrics.get("RecordsReceived"), 4.0);
    assert_eq!(report.metrics.get("EventsNew"), 3.0);
    assert_eq!(report.metrics.get("EventsDuplicate"), 1.0);
    assert_eq!(report.metrics.get("EventsConflict"), 1.0);
    assert_eq!(report.metrics.get("UsageBytes"), 128_000.0);

    let twilio_day = ledger
        .sim_usage("HS2f71995b834d803ff5376799ba59bd1d", "2022-12-14")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((twilio_day.usage.total, twilio_day.usage_events), (0, 1));
    let kore_day = ledger
        .sim_usage("HS11112222333344445555666677778888", "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kore_day.usage.total, kore_day.usage_events), (128_000, 2));
}

/// A SIM's new events in a batch are committed together, so throttling fails them together;
/// other SIMs' events are stored. Here records 3, 6 and 8 are the only events of their SIMs.
#[tokio::test]
async fn throttled_writes_report_the_lowest_failed_sequence_number_and_redelivery_is_exact() {
    let table = fresh_ledger("consumer-throttle").await;
    let throttle = Throttle::on_marker("EZFAIL");
    let ledger = UsageLedger::new(
        throttled_client(&throttle),
        LedgerConfig::new(table.table_name()),
    );

    let throttled = [3u64, 6, 8];
    let sim_of = |n: u64| {
        if throttled.contains(&n) {
            format!("HS{n:032}")
        } else {
            "HS00000000000000000000000000000042".to_owned()
        }
    };
    let records: Vec<(u64, Vec<u8>)> = (1..=10u64)
        .map(|n| {
            let sid = if throttled.contains(&n) {
                format!("EZFAIL{n:028}")
            } else {
                format!("EZ{n:032}")
            };
            let e = SampleEvent::usage_update(
                &sid,
                &sim_of(n),
                &format!("2024-11-03T10:{n:02}:00Z"),
                (n, 10 * n),
            );
            (n, e.kore_json().into_bytes())
        })
        .collect();

    let first = consume(&ledger, kinesis_event(&records), None)
        .await
        .unwrap();
    assert_eq!(failures(&first.response), [sequence_number(3)]);
    assert_eq!(first.metrics.get("RecordsFailed"), 3.0);
    assert!(
        throttle.throttled() >= 3,
        "each throttled SIM's transaction"
    );
    let partial = table
        .sim_usage(&sim_of(1), "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(partial.usage_events, 7);
    for n in throttled {
        assert!(
            table
                .sim_usage(&sim_of(n), "2024-11-03")
                .await
                .unwrap()
                .is_none()
        );
    }

    // Lambda re-sends everything from the lowest failed sequence number on.
    throttle.stop();
    let second = consume(&ledger, kinesis_event(&records[2..]), None)
        .await
        .unwrap();
    assert!(failures(&second.response).is_empty());
    assert_eq!(second.metrics.get("EventsNew"), 3.0);
    assert_eq!(second.metrics.get("EventsDuplicate"), 5.0);

    for n in 1..=10u64 {
        let day = table
            .sim_usage(&sim_of(n), "2024-11-03")
            .await
            .unwrap()
            .unwrap();
        let expected: u64 = (1..=10u64)
            .filter(|&m| sim_of(m) == sim_of(n))
            .map(|m| m + 10 * m)
            .sum();
        let events = if throttled.contains(&n) { 1 } else { 7 };
        assert_eq!((day.usage.total, day.usage_events), (expected, events));
    }
}

/// Issue 13, item 1: a 900 KB binary record (base64 would be 1.2 MB, three times a DynamoDB
/// item) is quarantined whole, and the shard goes on: the record is not reported for retry.
#[tokio::test]
async fn a_900_kb_binary_record_is_quarantined_whole_and_the_shard_goes_on() {
    let ledger = fresh_ledger("consumer-900kb").await;
    let mut rng = fastrand::Rng::with_seed(900);
    let binary: Vec<u8> = (0..900 * 1024).map(|_| rng.u8(..)).collect();
    assert!(std::str::from_utf8(&binary).is_err());
    let event = kinesis_event(&[(1, binary.clone()), (2, TWILIO_RECORD.into())]);

    let report = consume(&ledger, event, None).await.unwrap();

    assert!(
        failures(&report.response).is_empty(),
        "the shard must not stall"
    );
    assert_eq!(report.metrics.get("RecordsQuarantined"), 1.0);
    assert_eq!(report.metrics.get("EventsNew"), 1.0);
    let id = report
        .outcomes
        .iter()
        .find_map(|(_, o)| match o {
            Outcome::Quarantined { quarantine_id, .. } => Some(quarantine_id.clone()),
            _ => None,
        })
        .expect("the binary record is quarantined");
    let kept = ledger.quarantined().get(&id).await.unwrap().unwrap();
    assert!(!kept.truncated);
    assert!(kept.payload == binary, "the exact bytes come back");
    assert_eq!(ledger.quarantined().list(10).await.unwrap().len(), 1);
}

/// When DynamoDB refuses a copy's write as already stored but does not return the stored
/// item (the duplicate check having missed it), the consumer reads it (GetItem) to tell a
/// duplicate from a conflict: the path the role's GetItem grant is for (tests/iam_grants.rs).
#[tokio::test]
async fn a_duplicate_whose_stored_copy_is_not_returned_is_read_and_counted_once() {
    let ledger = fresh_ledger("consumer-no-old-item").await;
    let sid = "EZ000000000000000000000000noolditem";
    let event = SampleEvent::usage_update(
        sid,
        "HS0000000000000000000000000noold",
        "2024-11-03T10:00:00Z",
        (7, 8),
    );
    let records = [(1, event.kore_json().into_bytes())];
    let first = consume(&ledger, kinesis_event(&records), None)
        .await
        .unwrap();
    assert_eq!(first.metrics.get("EventsNew"), 1.0);

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
    let without_old = UsageLedger::new(
        scripted_client(&script, false),
        LedgerConfig::new(ledger.table_name()),
    );
    let again = consume(&without_old, kinesis_event(&records), None)
        .await
        .unwrap();
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
    assert!(failures(&again.response).is_empty());
    assert_eq!(again.metrics.get("EventsDuplicate"), 1.0);
    let day = ledger
        .sim_usage("HS0000000000000000000000000noold", "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage.total, day.usage_events), (15, 1));
}

/// Issue 21, item 1: a field of 300 KB that cannot be parsed (a `time`, an unknown `type`, a
/// `data` string) is quarantined whole with a reason that names the field in at most about a
/// kilobyte, and the shard goes on; the error never copies the field whole.
#[tokio::test]
async fn a_300_kb_bad_field_is_quarantined_whole_with_a_bounded_reason() {
    let ledger = fresh_ledger("consumer-huge-field").await;
    let huge = "9".repeat(300_000);
    let good = SampleEvent::usage_update(
        "EZ00000000000000000000000000hugeok",
        "HS000000000000000000000000000huge",
        "2024-11-03T10:00:00Z",
        (1, 2),
    );
    let mut bad_time: serde_json::Value = serde_json::from_str(&good.kore_json()).unwrap();
    bad_time["time"] = huge.clone().into();
    let mut bad_type = bad_time.clone();
    bad_type["time"] = "2024-11-03T10:00:00Z".into();
    bad_type["type"] = format!("com.example.{huge}").into();
    bad_type["source"] = "elsewhere".into();
    bad_type["dataschema"] = "elsewhere".into();
    let mut bad_data = bad_type.clone();
    bad_data["type"] = "com.kore.iot.supersim.connection.data-session.updated".into();
    bad_data["data"] = serde_json::to_string(&huge).unwrap().into();
    let bad: Vec<Vec<u8>> = [bad_time, bad_type, bad_data]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    let records: Vec<(u64, Vec<u8>)> = bad
        .iter()
        .cloned()
        .chain([good.kore_json().into_bytes()])
        .enumerate()
        .map(|(i, bytes)| (i as u64 + 1, bytes))
        .collect();

    let report = consume(&ledger, kinesis_event(&records), None)
        .await
        .unwrap();

    assert!(
        failures(&report.response).is_empty(),
        "the shard must not stall: {:?}",
        report.outcomes
    );
    assert_eq!(report.metrics.get("RecordsQuarantined"), 3.0);
    assert_eq!(report.metrics.get("EventsNew"), 1.0);
    let summaries = ledger.quarantined().list(10).await.unwrap();
    assert_eq!(summaries.len(), 3);
    let mut reasons = Vec::new();
    for summary in &summaries {
        assert!(
            summary.reason.len() <= 1100,
            "{} bytes",
            summary.reason.len()
        );
        let kept = ledger
            .quarantined()
            .get(&summary.id)
            .await
            .unwrap()
            .unwrap();
        assert!(bad.contains(&kept.payload), "kept whole");
        reasons.push(summary.reason.clone());
    }
    reasons.sort();
    assert!(
        reasons[0].starts_with("cannot tell whether KORE or Twilio"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("field `data` is invalid"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("field `time` is invalid"),
        "{reasons:?}"
    );
}
