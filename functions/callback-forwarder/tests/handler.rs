//! The `callback-forwarder` handler in process: the ledger table's stream as Lambda delivers
//! it (callback records as the ledger wrote them into DynamoDB Local) against a bus of the
//! test's own on the run's EventBridge emulator, with faults put in front of it.

use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use callback_forwarder::{BatchReport, Forwarder, RecordOutcome, process_batch};
use http::{HeaderMap, HeaderValue};
use kore_ingest_aws::bus::{Bus, EventBus};
use kore_ingest_aws::ledger::{Item, LedgerConfig, UsageLedger, keys};
use kore_ingest_core::callback::{CallbackKind, parse_callback};
use kore_ingest_core::config::Env;
use kore_ingest_core::delivery::{Delivery, Origin};
use kore_ingest_core::forward::BusEntry;
use kore_ingest_core::port::Ledger;
use kore_test_support::bus::{BusQueue, count_by_id, local_bus};
use kore_test_support::faults::{CALLBACK_FORWARDER, as_function};
use kore_test_support::streams::stream_record;
use kore_test_support::{fresh_ledger, local_client};
use serde_json::{Value, json};

/// The real bus, with the first `fail_calls` calls failing outright and every entry whose
/// detail holds `refuse` refused, as EventBridge refuses single entries.
struct FaultyBus {
    inner: EventBus,
    fail_calls: Mutex<usize>,
    refuse: Option<String>,
    calls: Mutex<usize>,
}

impl FaultyBus {
    fn new(inner: EventBus, fail_calls: usize, refuse: Option<&str>) -> Self {
        FaultyBus {
            inner,
            fail_calls: Mutex::new(fail_calls),
            refuse: refuse.map(str::to_owned),
            calls: Mutex::new(0),
        }
    }
}

impl Bus for FaultyBus {
    async fn put(&self, entries: &[BusEntry]) -> Result<Vec<Result<(), String>>, String> {
        *self.calls.lock().unwrap() += 1;
        {
            let mut fail = self.fail_calls.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err("PutEvents failed (InternalException): injected".into());
            }
        }
        let Some(refuse) = &self.refuse else {
            return self.inner.put(entries).await;
        };
        let (refused, passed): (Vec<usize>, Vec<usize>) =
            (0..entries.len()).partition(|&i| entries[i].detail.contains(refuse.as_str()));
        let sent: Vec<BusEntry> = passed.iter().map(|&i| entries[i].clone()).collect();
        let mut results = vec![Ok(()); entries.len()];
        if !sent.is_empty() {
            for (&i, result) in passed.iter().zip(self.inner.put(&sent).await?) {
                results[i] = result;
            }
        }
        for i in refused {
            results[i] = Err("MalformedDetail: Detail is malformed.".into());
        }
        Ok(results)
    }
}

fn env() -> Env {
    Env::from_pairs(&[
        ("TABLE_NAME", "unused"),
        ("EVENTS_MAX_ATTEMPTS", "3"),
        ("EVENTS_RETRY_BASE_MS", "10"),
    ])
}

/// Stores `count` SIM-update callbacks in `ledger` and returns their records as the table's
/// stream carries them, with their ids.
async fn stored_callbacks(
    ledger: &UsageLedger,
    tag: &str,
    count: usize,
) -> (Vec<Item>, Vec<String>) {
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for i in 0..count {
        let token = format!("RQ{tag}{i:06}{:08x}", fastrand::u32(..));
        let mut headers = HeaderMap::new();
        headers.insert(
            "kore-idempotency-token",
            HeaderValue::from_str(&token).unwrap(),
        );
        headers.insert("date", HeaderValue::from_static("2024-07-03T14:40:58Z"));
        let form = format!("SimSid=HS{tag}{i}&SimStatus=active&AccountSid=AC1&Note={tag}-{i}");
        let callback = parse_callback(CallbackKind::Sims, form.as_bytes(), &headers).unwrap();
        let delivery = Delivery::now(Origin::Webhook {
            request_id: format!("req-{tag}-{i}"),
        });
        ledger
            .record_callback(&callback, form.as_bytes(), &delivery)
            .await
            .unwrap();
        let id = keys::callback_id("kore", &token);
        let key = Item::from([
            (
                "pk".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::S(keys::callback_pk_of_id(&id)),
            ),
            (
                "sk".to_owned(),
                aws_sdk_dynamodb::types::AttributeValue::S(keys::SINGLE.to_owned()),
            ),
        ]);
        items.push(
            ledger
                .table()
                .get(key)
                .await
                .unwrap()
                .expect("the stored callback"),
        );
        ids.push(id);
    }
    (items, ids)
}

fn batch(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// The inserts of `items`, with sequence numbers from `first`, as one batch.
fn inserts(items: &[Item], first: u64) -> Event {
    batch(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| stream_record("INSERT", item, first + i as u64))
            .collect(),
    )
}

/// The handler on one batch, its AWS calls recorded as callback-forwarder's.
async fn forward<B: Bus>(forwarder: &Forwarder<B>, event: Event) -> BatchReport {
    as_function(CALLBACK_FORWARDER, process_batch(forwarder, event, None))
        .await
        .unwrap()
}

#[tokio::test]
async fn only_the_insert_of_a_callback_record_goes_on_the_bus() {
    let ledger = fresh_ledger("cbf-inserts").await;
    let (bus_name, queue) = BusQueue::fresh("cbf-inserts").await;
    let (items, ids) = stored_callbacks(&ledger, "ins", 1).await;
    let records = vec![
        stream_record("INSERT", &items[0], 1),
        // The same record modified (a callback is never modified): no second entry.
        stream_record("MODIFY", &items[0], 2),
    ];
    let forwarder = Forwarder::new(local_bus(&bus_name), ledger.callbacks(), &env()).unwrap();
    let report = forward(&forwarder, batch(records)).await;
    assert_eq!(
        report.outcomes,
        vec![
            RecordOutcome::Forwarded { id: ids[0].clone() },
            RecordOutcome::Ignored
        ]
    );
    let events = queue.drain(Duration::from_secs(2)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["source"], "kore-ingest");
    assert_eq!(event["detail-type"], "SIM Update");
    assert_eq!(event["detail"]["id"], ids[0].as_str());
    assert_eq!(event["detail"]["sent_at"], "2024-07-03T14:40:58.000Z");
    assert_eq!(event["detail"]["fields"][3], json!(["Note", "ins-0"]));
}

#[tokio::test]
async fn a_bus_that_fails_for_a_while_gets_every_callback_once_after_retries() {
    let ledger = fresh_ledger("cbf-outage").await;
    let (bus_name, queue) = BusQueue::fresh("cbf-outage").await;
    let (items, ids) = stored_callbacks(&ledger, "out", 12).await;
    // Two failed calls: the first attempt of both calls (10 + 2 entries).
    let bus = FaultyBus::new(local_bus(&bus_name), 2, None);
    let forwarder = Forwarder::new(bus, ledger.callbacks(), &env()).unwrap();
    let report = forward(&forwarder, inserts(&items, 1)).await;
    assert!(report.response.batch_item_failures.is_empty());
    assert_eq!(report.metrics.get("CallbacksForwarded"), 12.0);
    assert_eq!(report.metrics.get("EventBusRetries"), 12.0);
    let events = queue.drain(Duration::from_secs(2)).await;
    let counts = count_by_id(&events, &ids);
    assert_eq!(counts.len(), 12, "every callback on the bus: {counts:?}");
    assert!(counts.values().all(|n| *n == 1), "each once: {counts:?}");
    assert!(ledger.callbacks().unforwarded().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_entry_the_bus_keeps_refusing_is_kept_for_redrive_and_holds_back_no_other() {
    let ledger = fresh_ledger("cbf-refused").await;
    let (bus_name, queue) = BusQueue::fresh("cbf-refused").await;
    let (items, ids) = stored_callbacks(&ledger, "ref", 3).await;
    let bus = FaultyBus::new(local_bus(&bus_name), 0, Some("ref-0"));
    let forwarder = Forwarder::new(bus, ledger.callbacks(), &env()).unwrap();
    let report = forward(&forwarder, inserts(&items, 1)).await;
    assert!(
        report.response.batch_item_failures.is_empty(),
        "the batch goes on"
    );
    assert!(
        matches!(
            &report.outcomes[0],
            RecordOutcome::Kept { id, reason } if *id == ids[0] && reason.contains("MalformedDetail") && reason.contains("3 attempts")
        ),
        "{:?}",
        report.outcomes[0]
    );
    let events = queue.drain(Duration::from_secs(2)).await;
    let counts = count_by_id(&events, &ids);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ids[1..].to_vec()
    );
    let kept = ledger.callbacks().unforwarded().await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id, ids[0]);
    assert!(kept[0].reason.contains("MalformedDetail"), "{kept:?}");
}

#[tokio::test]
async fn a_callback_neither_on_the_bus_nor_kept_is_handed_back_to_lambda() {
    let ledger = fresh_ledger("cbf-handback").await;
    let (items, _) = stored_callbacks(&ledger, "hb", 2).await;
    // The bus fails every call, and the redrive list's table does not exist.
    let bus = FaultyBus::new(local_bus("no-such-bus"), usize::MAX, None);
    let missing = UsageLedger::new(local_client(), LedgerConfig::new("no-such-table"));
    let forwarder = Forwarder::new(bus, missing.callbacks(), &env()).unwrap();
    let report = forward(&forwarder, inserts(&items, 7)).await;
    let failures: Vec<Option<String>> = report
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        failures,
        vec![Some(kore_test_support::streams::stream_sequence(7))]
    );
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, RecordOutcome::Failed { .. }))
    );
}

#[tokio::test]
async fn each_stored_alert_goes_on_the_bus_once_with_its_record_as_detail() {
    use kore_ingest_core::alerts::{Alert, AlertKind};
    let ledger = fresh_ledger("cbf-alerts").await;
    let (bus_name, queue) = BusQueue::fresh("cbf-alerts").await;
    let alert = Alert {
        rule_id: "fleet-a-monthly".into(),
        kind: AlertKind::Usage,
        subject: "HS1".into(),
        period_start: "2024-11-01T00:00:00.000Z".into(),
        threshold: Some(800_000_000),
        value: 800_000_123,
        crossed_by: Some("EZ1".into()),
        raised_at: "2024-11-20T08:00:00.000Z".into(),
    };
    assert!(ledger.alerts().raise(&alert).await.unwrap());
    assert!(!ledger.alerts().raise(&alert).await.unwrap(), "stored once");
    let key = Item::from([
        (
            "pk".to_owned(),
            aws_sdk_dynamodb::types::AttributeValue::S(keys::alerts_pk(&alert.period_start)),
        ),
        (
            "sk".to_owned(),
            aws_sdk_dynamodb::types::AttributeValue::S(alert.key()),
        ),
    ]);
    let item = ledger.table().get(key).await.unwrap().expect("the alert");
    let forwarder = Forwarder::new(local_bus(&bus_name), ledger.callbacks(), &env()).unwrap();
    let records = vec![
        stream_record("INSERT", &item, 1),
        stream_record("MODIFY", &item, 2),
    ];
    let report = forward(&forwarder, batch(records)).await;
    let id = format!("alert#{}", alert.key());
    assert_eq!(
        report.outcomes,
        vec![RecordOutcome::Forwarded { id }, RecordOutcome::Ignored]
    );
    let events = queue.drain(Duration::from_secs(2)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Usage Threshold Crossed");
    assert_eq!(events[0]["detail"], alert.to_json());
}
