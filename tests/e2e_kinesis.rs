//! End to end: records put on kinesalite reach DynamoDB Local through the local event source
//! mapping (`scripts/local-esm`) and `kinesis-consumer` running under `cargo lambda watch`.

use std::time::Instant;

use kore_ingest_core::quarantine::QuarantineKind;
use kore_ingest_core::quarantine::quarantine_id;
use kore_test_support::stack::{LocalStack, eventually, http};
use kore_test_support::*;
use serde_json::Value;

#[tokio::test]
async fn records_on_the_stream_reach_the_ledger_with_exact_rollups() {
    let stack = LocalStack::from_env();
    let sim = format!("HSe2ekinesis{:020}", fastrand::u64(..));
    let samples: Vec<SampleEvent> = (0..30u64)
        .map(|i| {
            SampleEvent::usage_update(
                &format!("EZe2e{}{i:08}", &sim[12..24]),
                &sim,
                &format!("2024-11-04T08:{i:02}:00Z"),
                (i * 7, i * 70),
            )
        })
        .collect();
    // KORE's copy of every event, Twilio's copy of a third, five KORE retries, and a poison
    // record in the middle.
    let poison = format!("not json {sim}").into_bytes();
    let mut records: Vec<Vec<u8>> = samples.iter().map(|s| s.kore_json().into_bytes()).collect();
    records.insert(15, poison.clone());
    records.extend(
        samples
            .iter()
            .step_by(3)
            .map(|s| s.twilio_json().into_bytes()),
    );
    records.extend(samples.iter().take(5).map(|s| s.kore_json().into_bytes()));

    stack.put_records(&records).await;

    let expected: u64 = window_bytes(&samples);
    let rollup = eventually(300, "all 30 events in the day rollup", || async {
        stack
            .ledger
            .sim_usage(&sim, "2024-11-04")
            .await
            .ok()
            .flatten()
            .filter(|r| r.usage_events >= 30)
    })
    .await;
    assert_eq!((rollup.usage.total, rollup.usage_events), (expected, 30));
    let month = stack
        .ledger
        .sim_usage(&sim, "2024-11")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((month.usage.total, month.usage_events), (expected, 30));

    let id = quarantine_id(&QuarantineKind::Event, "kinesis", &poison);
    let quarantined = eventually(60, "the poison record in the quarantine", || async {
        stack.ledger.quarantined().get(&id).await.ok().flatten()
    })
    .await;
    assert!(
        quarantined.reason.contains("not valid JSON"),
        "{}",
        quarantined.reason
    );
    assert!(
        quarantined.origin.starts_with("shardId-"),
        "{}",
        quarantined.origin
    );
}

/// A 1,000-record batch invoked on `kinesis-consumer` under `cargo lambda watch` (run with
/// `--nocapture` to read the figure).
#[tokio::test]
async fn a_thousand_record_batch_is_stored_in_one_invocation() {
    let stack = LocalStack::from_env();
    let sim = format!("HSe2ebatch{:022}", fastrand::u64(..));
    let records: Vec<(u64, Vec<u8>)> = (0..1000u64)
        .map(|i| {
            let e = SampleEvent::usage_update(
                &format!("EZbatch{}{i:06}", &sim[10..22]),
                &sim,
                "2024-11-05T12:00:00Z",
                (1, 2),
            );
            (i, e.kore_json().into_bytes())
        })
        .collect();
    let event = serde_json::to_vec(&kinesis_event(&records)).unwrap();
    let url = format!(
        "{}/2015-03-31/functions/kinesis-consumer/invocations",
        stack.lambda_url
    );

    let started = Instant::now();
    let (status, body) = http("POST", url, vec![], Some(event)).await;
    let seconds = started.elapsed().as_secs_f64();

    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        response["batchItemFailures"],
        serde_json::json!([]),
        "{body}"
    );
    eprintln!(
        "kinesis-consumer under cargo lambda watch: 1000 records in {seconds:.2} s = {:.0} events/s",
        1000.0 / seconds
    );
    let rollup = stack
        .ledger
        .sim_usage(&sim, "2024-11-05")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rollup.usage.total, rollup.usage_events), (3000, 1000));
}
