//! End to end, issue 23: rules applied to the stack's ledger; usage from KORE (stream and
//! webhook) and Twilio, retried, through the ledger into the table's stream; the alerts
//! function under `cargo lambda watch` (fed by `scripts/local-ddb-esm`) raises each crossing
//! once, and callback-forwarder puts it on the stack's bus on the EventBridge emulator, out
//! of the queue a rule copies the bus into (`EVENTS_QUEUE_URL`). Within a minute.

use std::time::{Duration, Instant};

use kore_ingest_core::alerts::Rules;
use kore_ingest_core::time::TimeRange;
use kore_test_support::bus::BusQueue;
use kore_test_support::stack::{LocalStack, eventually};
use kore_test_support::*;
use serde_json::Value;

#[tokio::test]
async fn crossings_are_stored_and_put_on_the_bus_once_within_a_minute() {
    let stack = LocalStack::from_env();
    let queue = BusQueue::of_stack();
    let tag = format!("{:010}", fastrand::u32(..));
    let fleet = format!("HFe2ealerts{tag}{:013}", 0);
    let rules = Rules::parse(&format!(
        r#"{{"rules": [
          {{"id": "e2e-sim-{tag}", "kind": "usage", "fleet": "{fleet}", "per": "sim",
            "period": "day", "thresholds": [2000, 4000]}},
          {{"id": "e2e-fleet-{tag}", "kind": "usage", "fleet": "{fleet}", "per": "total",
            "period": "month", "thresholds": [5000]}}
        ]}}"#
    ))
    .unwrap();
    stack.ledger.alerts().apply(&rules).await.unwrap();

    // Two SIMs, 10 windows of 550 bytes each: each SIM crosses 2,000 and 4,000 on its day,
    // the fleet 5,000 in its month.
    let samples: Vec<SampleEvent> = (0..20)
        .map(|i| {
            let mut s = SampleEvent::usage_update(
                &format!("EZe2ealert{tag}{i:020}"),
                &format!("HSe2ealert{tag}{:020}", i % 2),
                &format!("2024-11-07T10:{:02}:00Z", i),
                (50, 500),
            );
            s.fleet_sid = fleet.clone();
            s
        })
        .collect();
    let started = Instant::now();
    let mut records: Vec<Vec<u8>> = samples.iter().map(|s| s.kore_json().into_bytes()).collect();
    records.extend(samples.iter().map(|s| s.twilio_json().into_bytes()));
    records.extend(samples.iter().take(5).map(|s| s.kore_json().into_bytes()));
    stack.put_records(&records).await;

    let range = TimeRange::new(
        "2024-11-01T00:00:00Z".parse().unwrap(),
        "2024-12-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let ours = |rule: &str| rule.ends_with(&tag);
    let alerts = eventually(120, "the five alerts in the ledger", || async {
        let listed = stack.ledger.alerts().list(&range, None).await.unwrap();
        let ours: Vec<_> = listed.into_iter().filter(|a| ours(&a.rule_id)).collect();
        (ours.len() >= 5).then_some(ours)
    })
    .await;
    let stored_in = started.elapsed();
    let mut keys: Vec<String> = alerts.iter().map(|a| a.key()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5, "{alerts:?}");
    assert!(
        alerts.iter().all(|a| a.value >= a.threshold.unwrap_or(0)),
        "{alerts:?}"
    );

    // On the bus, each once, with the record as detail.
    let mut on_bus: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        on_bus.extend(
            queue
                .drain(Duration::from_secs(2))
                .await
                .into_iter()
                .filter(|e| e["detail"]["rule_id"].as_str().is_some_and(ours)),
        );
        if on_bus.len() >= 5 {
            break;
        }
    }
    // Anything still on its way would be a second copy.
    on_bus.extend(
        queue
            .drain(Duration::from_secs(3))
            .await
            .into_iter()
            .filter(|e| e["detail"]["rule_id"].as_str().is_some_and(ours)),
    );
    assert_eq!(on_bus.len(), 5, "{on_bus:?}");
    assert!(
        on_bus
            .iter()
            .all(|e| e["detail-type"] == "Usage Threshold Crossed"),
        "{on_bus:?}"
    );
    eprintln!(
        "5 alerts stored {:.1} s after the records were put, and on the bus",
        stored_in.as_secs_f64()
    );
    assert!(
        stored_in < Duration::from_secs(60),
        "raised within a minute: {stored_in:?}"
    );
}
