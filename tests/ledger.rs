//! The exactly-once usage ledger against DynamoDB Local.

use std::collections::{BTreeMap, HashSet};

use chrono::{Duration, TimeZone, Utc};
use kore_ingest_core::callback::{CallbackKind, parse_callback};
use kore_ingest_core::delivery::Outcome;
use kore_ingest_core::event::{DataVolume, EventError, parse_events};
use kore_ingest_core::port::CallbackOutcome;
use kore_ingest_core::quarantine::QuarantineKind;
use kore_ingest_core::time::TimeRange;
use kore_test_support::*;

const SIM: &str = "HS11112222333344445555666677778888";

fn volume(up: u64, down: u64) -> DataVolume {
    DataVolume {
        upload: up,
        download: down,
        total: up + down,
    }
}

#[tokio::test]
async fn same_event_twice_counts_once() {
    let ledger = fresh_ledger("twice").await;
    let sample = SampleEvent::usage_update("EZ01", SIM, "2024-11-03T10:15:00Z", (100, 900));
    let event = parse_one(&sample.kore_json());

    assert_eq!(ledger.record_event(&event, &kinesis(1)).await, Outcome::New);
    assert_eq!(
        ledger.record_event(&event, &kinesis(2)).await,
        Outcome::Duplicate {
            new_delivery: false
        }
    );

    let day = ledger.sim_usage(SIM, "2024-11-03").await.unwrap().unwrap();
    assert_eq!(day.usage, volume(100, 900));
    assert_eq!(day.usage_events, 1);
    let month = ledger.sim_usage(SIM, "2024-11").await.unwrap().unwrap();
    assert_eq!(month.usage, volume(100, 900));
}

#[tokio::test]
async fn duplicate_from_twilio_and_kore_counts_once() {
    let ledger = fresh_ledger("both").await;
    let sample = SampleEvent::usage_update("EZ02", SIM, "2024-11-03T10:15:00Z", (20_480, 102_400));
    let kore = parse_one(&sample.kore_json());
    let twilio = parse_one(&sample.twilio_json());
    assert_eq!(kore.data_hash, twilio.data_hash);

    assert_eq!(
        ledger.record_event(&kore, &webhook("r1")).await,
        Outcome::New
    );
    assert_eq!(
        ledger.record_event(&twilio, &kinesis(1)).await,
        Outcome::Duplicate { new_delivery: true }
    );
    // The same Twilio delivery again adds nothing new.
    assert_eq!(
        ledger.record_event(&twilio, &kinesis(2)).await,
        Outcome::Duplicate {
            new_delivery: false
        }
    );

    let month = ledger.sim_usage(SIM, "2024-11").await.unwrap().unwrap();
    assert_eq!(month.usage, volume(20_480, 102_400));
    assert_eq!(month.usage_events, 1);
    let from = Utc.with_ymd_and_hms(2024, 11, 3, 0, 0, 0).unwrap();
    let events = ledger
        .events()
        .delivered_between(TimeRange::new(from, from + Duration::days(1)).unwrap())
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let mut tags = events[0].deliveries.clone();
    tags.sort();
    assert_eq!(tags, ["kore#webhook", "twilio#kinesis"]);
}

#[tokio::test]
async fn thirty_two_concurrent_writers_of_one_event_store_it_once() {
    let ledger = fresh_ledger("concurrent").await;
    let sample = SampleEvent::usage_update("EZ03", SIM, "2024-11-03T10:15:00Z", (7, 3));
    let event = parse_one(&sample.kore_json());
    let writers: Vec<_> = (0..32)
        .map(|i| {
            let (ledger, event) = (ledger.clone(), event.clone());
            tokio::spawn(async move { ledger.record_event(&event, &kinesis(i)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.unwrap());
    }
    let new = outcomes.iter().filter(|o| **o == Outcome::New).count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Duplicate { .. }))
        .count();
    assert_eq!((new, duplicates), (1, 31), "{outcomes:?}");
    let day = ledger.sim_usage(SIM, "2024-11-03").await.unwrap().unwrap();
    assert_eq!((day.usage.total, day.usage_events), (10, 1));
}

#[tokio::test]
async fn conflicting_copy_keeps_the_first_and_quarantines_the_second() {
    let ledger = fresh_ledger("conflict").await;
    let first = SampleEvent::usage_update("EZ04", SIM, "2024-11-03T10:15:00Z", (1, 1));
    let mut altered = first.clone();
    altered.window = (1, 5_000);

    assert_eq!(
        ledger
            .record_event(&parse_one(&first.kore_json()), &kinesis(1))
            .await,
        Outcome::New
    );
    let outcome = ledger
        .record_event(&parse_one(&altered.twilio_json()), &kinesis(2))
        .await;
    let Outcome::Conflict { quarantine_id } = outcome else {
        panic!("expected a conflict, got {outcome:?}");
    };
    // A retry of the same conflicting copy does not pile up quarantine entries.
    assert_eq!(
        ledger
            .record_event(&parse_one(&altered.twilio_json()), &kinesis(2))
            .await,
        Outcome::Conflict {
            quarantine_id: quarantine_id.clone()
        }
    );

    let day = ledger.sim_usage(SIM, "2024-11-03").await.unwrap().unwrap();
    assert_eq!(day.usage, volume(1, 1));
    let stored = ledger
        .quarantined()
        .get(&quarantine_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.kind, QuarantineKind::Conflict);
    assert!(
        stored.reason.contains("conflict: event EZ04"),
        "{}",
        stored.reason
    );
    assert_eq!(stored.related_event_sid.as_deref(), Some("EZ04"));
    assert_eq!(stored.payload, altered.twilio_json().into_bytes());
    assert_eq!(ledger.quarantined().list(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unparseable_elements_are_quarantined_with_their_reason_once() {
    let ledger = fresh_ledger("poison").await;
    let good = SampleEvent::usage_update("EZ05", SIM, "2024-11-03T10:15:00Z", (1, 2));
    let batch = format!(
        r#"[{}, {{"type":"com.kore.iot.supersim.connection.attachment.accepted","source":"kore-events","data":{{}}}}]"#,
        good.kore_json()
    );
    let delivery = webhook("req-1");
    let inputs: Vec<_> = parse_events(batch.as_bytes())
        .unwrap()
        .into_iter()
        .map(|item| (item, delivery.clone()))
        .collect();
    let outcomes = ledger.record_batch(&inputs, None).await;
    assert_eq!(outcomes[0], Outcome::New);
    let Outcome::Quarantined {
        quarantine_id,
        reason,
    } = &outcomes[1]
    else {
        panic!("expected quarantine, got {:?}", outcomes[1]);
    };
    assert_eq!(reason, &EventError::NoDedupeKey.to_string());
    // Delivered again: same entry, not a second one.
    let again = ledger.record_batch(&inputs, None).await;
    assert_eq!(
        again[1],
        Outcome::Quarantined {
            quarantine_id: quarantine_id.clone(),
            reason: reason.clone()
        }
    );
    let listed = ledger.quarantined().list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "webhook");
    assert_eq!(listed[0].origin, "req-1");

    // A payload that is not UTF-8 is kept byte for byte (base64 in the item).
    let id = ledger
        .quarantine(kore_ingest_core::quarantine::QuarantineEntry {
            kind: kore_ingest_core::quarantine::QuarantineKind::Event,
            payload: &[0xff, 0x00, 0x7b],
            reason: "not UTF-8".into(),
            delivery: &kinesis(9),
            related_event: None,
        })
        .await
        .unwrap();
    let stored = ledger.quarantined().get(&id).await.unwrap().unwrap();
    assert_eq!(stored.payload, [0xff, 0x00, 0x7b]);
    assert_eq!(stored.origin, format!("shardId-000000000000/{:056}", 9));
}

#[tokio::test]
async fn events_without_usage_and_test_events_are_recorded() {
    let ledger = fresh_ledger("nousage").await;
    let mut started = SampleEvent::usage_update("EZ06", SIM, "2024-11-03T10:00:00Z", (0, 0));
    started.suffix = "data-session.started";
    assert_eq!(
        ledger
            .record_event(&parse_one(&started.kore_json()), &kinesis(1))
            .await,
        Outcome::New
    );
    let test_event = include_str!("fixtures/kore-test-event.json");
    assert_eq!(
        ledger.record(&parse_item(test_event), &webhook("t")).await,
        Outcome::New
    );
    assert_eq!(
        ledger.record(&parse_item(test_event), &webhook("t")).await,
        Outcome::Duplicate {
            new_delivery: false
        }
    );
    assert_eq!(ledger.sim_usage(SIM, "2024-11-03").await.unwrap(), None);
}

#[tokio::test]
async fn session_with_a_missing_window_has_a_gap() {
    let ledger = fresh_ledger("gaps").await;
    // Three windows of 100 bytes each; the cumulative totals say 100, 200, 300.
    let window = |n: u64, sim: &str, sid: &str| {
        let mut e = SampleEvent::usage_update(
            &format!("EZ{sim}{n}"),
            sim,
            &format!("2024-11-03T10:0{n}:00Z"),
            (40, 60),
        );
        e.session_sid = sid.into();
        e.cumulative = Some((40 * n, 60 * n));
        if n == 3 {
            e.suffix = "data-session.ended";
        }
        e
    };
    let complete = "HSCOMPLETE";
    let gappy = "HSGAPPY";
    for n in 1..=3 {
        let e = window(n, complete, "PIcomplete");
        ledger
            .record_event(&parse_one(&e.kore_json()), &kinesis(n))
            .await;
        if n != 2 {
            let e = window(n, gappy, "PIgappy");
            ledger
                .record_event(&parse_one(&e.kore_json()), &kinesis(n))
                .await;
        }
    }
    // Out-of-order redelivery of window 1 does not lower the high-water mark.
    let e = window(1, gappy, "PIgappy");
    ledger
        .record_event(&parse_one(&e.twilio_json()), &kinesis(7))
        .await;

    let complete_sessions = ledger.events().sessions(complete).await.unwrap();
    assert_eq!(complete_sessions.len(), 1);
    assert_eq!(complete_sessions[0].windows.total, 300);
    assert_eq!(complete_sessions[0].cumulative.unwrap().total, 300);
    assert!(!complete_sessions[0].has_gap());

    let gappy_sessions = ledger.events().sessions(gappy).await.unwrap();
    assert_eq!(gappy_sessions[0].windows.total, 200);
    assert_eq!(gappy_sessions[0].windows_received, 2);
    assert_eq!(gappy_sessions[0].cumulative.unwrap().total, 300);
    assert!(gappy_sessions[0].has_gap());
}

#[tokio::test]
async fn callbacks_are_stored_once_per_provider_and_token() {
    let ledger = fresh_ledger("callbacks").await;
    let body = include_str!("fixtures/callback-sim-status.form").trim_end();
    let kore_headers = http_headers(&[(
        "Kore-Idempotency-Token",
        "RQa48ec9b6ef475034c35566c02b654243",
    )]);
    let callback = parse_callback(CallbackKind::Sims, body.as_bytes(), &kore_headers).unwrap();
    let delivery = webhook("cb-1");
    assert_eq!(
        ledger
            .record_callback(&callback, body.as_bytes(), &delivery)
            .await,
        Ok(CallbackOutcome::New)
    );
    assert_eq!(
        ledger
            .record_callback(&callback, body.as_bytes(), &delivery)
            .await,
        Ok(CallbackOutcome::Duplicate)
    );
    // The same token from Twilio is a different delivery: a KORE token cannot de-duplicate it.
    let twilio_headers = http_headers(&[(
        "I-Twilio-Idempotency-Token",
        "RQa48ec9b6ef475034c35566c02b654243",
    )]);
    let twilio = parse_callback(CallbackKind::Sims, body.as_bytes(), &twilio_headers).unwrap();
    assert_eq!(
        ledger
            .record_callback(&twilio, body.as_bytes(), &delivery)
            .await,
        Ok(CallbackOutcome::New)
    );
    let status = ledger
        .sim_status("HSab3f06be8f5d32caecb91e8a306c6c08")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.change.status, "active");
    assert!(
        ledger
            .callback_exists("kore", "RQa48ec9b6ef475034c35566c02b654243")
            .await
            .unwrap()
    );
}

fn http_headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, http::HeaderValue::from_static(value));
    }
    map
}

/// Ten thousand usage events over 100 SIMs and two months, each delivered one to three
/// times, shuffled, through both providers: every rollup equals the independent total.
#[tokio::test]
async fn ten_thousand_shuffled_redelivered_events_roll_up_exactly() {
    let ledger = fresh_ledger("bulk").await;
    assert_eq!(ledger.table().config().max_concurrent_writes, 32);
    let mut rng = fastrand::Rng::with_seed(20_241_103);
    let start = Utc.with_ymd_and_hms(2024, 10, 1, 0, 0, 0).unwrap();
    let mut unique = Vec::with_capacity(10_000);
    for i in 0..10_000u64 {
        let sim = format!("HS{:032}", i % 100);
        // Spread over October and November, to the second.
        let at = start + Duration::seconds(rng.i64(0..61 * 24 * 3600));
        let mut e = SampleEvent::usage_update(
            &format!("EZ{i:032x}"),
            &sim,
            &at.to_rfc3339(),
            (rng.u64(0..50_000), rng.u64(0..500_000)),
        );
        e.suffix = if i % 7 == 0 {
            "data-session.ended"
        } else {
            "data-session.updated"
        };
        e.session_sid = format!("PI{:032}", i / 10);
        unique.push(e);
    }

    // Independent totals, from the generated numbers (not from parsing).
    let mut expected: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for e in &unique {
        let day = e.time.format("%Y-%m-%d").to_string();
        let month = e.time.format("%Y-%m").to_string();
        for period in [day, month] {
            let entry = expected.entry((e.sim_sid.clone(), period)).or_default();
            entry.0 += e.window.0;
            entry.1 += e.window.1;
            entry.2 += 1;
        }
    }

    let mut deliveries = Vec::new();
    for (i, e) in unique.iter().enumerate() {
        for copy in 0..rng.usize(1..=3) {
            let (json, delivery) = if rng.bool() {
                (e.kore_json(), webhook(&format!("req-{i}-{copy}")))
            } else {
                (e.twilio_json(), kinesis(i as u64 * 10 + copy as u64))
            };
            deliveries.push((parse_item(&json), delivery));
        }
    }
    rng.shuffle(&mut deliveries);

    let mut outcomes = Vec::new();
    for chunk in deliveries.chunks(1_000) {
        outcomes.extend(ledger.record_batch(chunk, None).await);
    }
    let retries: Vec<_> = outcomes.iter().filter(|o| o.is_retry()).collect();
    assert!(retries.is_empty(), "{retries:?}");
    let new = outcomes.iter().filter(|o| **o == Outcome::New).count();
    assert_eq!(new, unique.len());
    assert_eq!(
        outcomes.len() - new,
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Duplicate { .. }))
            .count()
    );

    let sims: HashSet<&String> = unique.iter().map(|e| &e.sim_sid).collect();
    assert_eq!(sims.len(), 100);
    for ((sim, period), (up, down, events)) in &expected {
        let rollup = ledger
            .sim_usage(sim, period)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no rollup for {sim} {period}"));
        assert_eq!(rollup.usage, volume(*up, *down), "{sim} {period}");
        assert_eq!(rollup.usage_events, *events, "{sim} {period}");
    }
    // The all-SIM read of a month (every shard of every day, no SIM filter) agrees with each
    // SIM's own read (its shard only).
    for month in ["2024-10", "2024-11"] {
        let rollups = ledger.period_usage(month).await.unwrap();
        assert_eq!(rollups.len(), 100, "{month}");
        for rollup in rollups {
            let (up, down, events) = expected[&(rollup.sim_sid.clone(), month.to_owned())];
            assert_eq!(
                (rollup.usage, rollup.usage_events),
                (volume(up, down), events)
            );
        }
    }
    let account_total: u64 = ledger
        .account_usage("AC0a1b2c3d4e5f60718293a4b5c6d7e8f9", "2024-10")
        .await
        .unwrap()
        .iter()
        .map(|r| r.usage.total)
        .sum();
    let expected_october: u64 = expected
        .iter()
        .filter(|((_, p), _)| p == "2024-10")
        .map(|(_, (up, down, _))| up + down)
        .sum();
    assert_eq!(account_total, expected_october);
}

/// Prints the write capacity DynamoDB Local reports per new event and per duplicate (run
/// with `--nocapture` to read it), and checks the shape of the cost.
#[tokio::test]
async fn write_cost_per_new_event_and_per_duplicate() {
    let ledger = fresh_ledger("wcu").await;
    let sample = SampleEvent::usage_update("EZ10", SIM, "2024-11-03T10:15:00Z", (100, 900));
    let kore = parse_one(&sample.kore_json());
    let twilio = parse_one(&sample.twilio_json());

    let before = ledger.table().consumed_write_units();
    assert_eq!(ledger.record_event(&kore, &kinesis(1)).await, Outcome::New);
    let new_event = ledger.table().consumed_write_units() - before;

    let before = ledger.table().consumed_write_units();
    ledger.record_event(&kore, &kinesis(2)).await;
    let same_delivery_duplicate = ledger.table().consumed_write_units() - before;

    let before = ledger.table().consumed_write_units();
    ledger.record_event(&twilio, &webhook("x")).await;
    let new_delivery_duplicate = ledger.table().consumed_write_units() - before;

    eprintln!(
        "WCU reported by DynamoDB Local: new usage event {new_event}, duplicate (same provider and path) {same_delivery_duplicate}, duplicate (new provider or path) {new_delivery_duplicate}"
    );
    assert!(new_event > 0.0);
    assert_eq!(
        same_delivery_duplicate, 0.0,
        "a failed condition reports no capacity"
    );
    assert!(new_delivery_duplicate > 0.0);
    assert!(new_delivery_duplicate < new_event);
}

/// Within one batch, the first copy of an event in input order is the one kept, however the
/// writes interleave: a conflicting copy later in the batch is always the one quarantined.
#[tokio::test]
async fn first_copy_in_a_batch_wins_whatever_the_concurrency() {
    let ledger = fresh_ledger("batch-order").await;
    let first = SampleEvent::usage_update("EZ11", SIM, "2024-11-03T10:15:00Z", (5, 5));
    let mut altered = first.clone();
    altered.window = (5, 6);
    let inputs = vec![
        (parse_item(&first.kore_json()), kinesis(1)),
        (parse_item(&altered.kore_json()), kinesis(2)),
        (parse_item(&first.twilio_json()), kinesis(3)),
    ];
    let outcomes = ledger.record_batch(&inputs, None).await;
    assert_eq!(outcomes[0], Outcome::New);
    assert!(
        matches!(outcomes[1], Outcome::Conflict { .. }),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], Outcome::Duplicate { new_delivery: true });
    let day = ledger.sim_usage(SIM, "2024-11-03").await.unwrap().unwrap();
    assert_eq!(day.usage, volume(5, 5));
}

/// A transaction held past the deadline (a stalled server): once the deadline has passed, no
/// further write starts, neither the retry of what the transaction could not store nor the
/// delivery a copy would add. Here the duplicate check fails, so a stored event's copy
/// shares the transaction with a new event and cancels it.
#[tokio::test]
async fn no_write_starts_after_the_deadline_even_after_a_stalled_transaction() {
    use kore_ingest_aws::ledger::LedgerConfig;
    use kore_test_support::script::{Script, Step, dynamodb_error, scripted_client};

    let table = fresh_ledger("deadline-stall").await;
    let stored = SampleEvent::usage_update("EZstored", SIM, "2024-11-03T10:00:00Z", (1, 2));
    assert_eq!(
        table
            .record_event(&parse_one(&stored.twilio_json()), &kinesis(1))
            .await,
        Outcome::New
    );
    let script = Script::new(|operation, nth| match (operation, nth) {
        ("BatchGetItem", _) => Step::Fail(400, dynamodb_error("ThrottlingException", "slow down")),
        ("TransactWriteItems", 1) => Step::Hold(std::time::Duration::from_millis(800)),
        _ => Step::Pass,
    });
    let ledger = kore_ingest_aws::ledger::UsageLedger::new(
        scripted_client(&script, false),
        LedgerConfig::new(table.table_name()),
    );
    let new = SampleEvent::usage_update("EZnew", SIM, "2024-11-03T10:05:00Z", (10, 20));
    let inputs = vec![
        (parse_item(&new.kore_json()), webhook("late-1")),
        // The stored event again, through a new path: a copy that would add a delivery.
        (parse_item(&stored.kore_json()), webhook("late-1")),
    ];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
    let outcomes = ledger.record_batch(&inputs, Some(deadline)).await;
    assert!(outcomes.iter().all(Outcome::is_retry), "{outcomes:?}");
    let late: Vec<_> = script
        .log()
        .into_iter()
        .filter(|(at, operation)| *at >= deadline && operation != "GetItem")
        .collect();
    assert!(
        late.is_empty(),
        "writes started after the deadline: {late:?}"
    );
    // Nothing of the new event was stored, and the copy added no delivery.
    assert_eq!(
        table
            .sim_usage(SIM, "2024-11-03")
            .await
            .unwrap()
            .unwrap()
            .usage_events,
        1
    );
    let from = Utc.with_ymd_and_hms(2024, 11, 3, 0, 0, 0).unwrap();
    let events = table
        .events()
        .delivered_between(TimeRange::new(from, from + Duration::days(1)).unwrap())
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].deliveries, ["twilio#kinesis"]);
}

/// A commit whose answer is lost (the server applied it, the client saw a 500) is retried
/// by the SDK with the same client request token, so it succeeds again: the event is New,
/// stored once, not reported as a duplicate of itself.
#[tokio::test]
async fn an_sdk_retry_of_a_commit_that_succeeded_reports_new() {
    use kore_ingest_aws::ledger::LedgerConfig;
    use kore_test_support::script::{Script, Step, dynamodb_error, scripted_client};

    let table = fresh_ledger("lost-answer").await;
    let script = Script::new(|operation, nth| match (operation, nth) {
        ("TransactWriteItems", 1) => Step::ApplyThenFail(
            500,
            dynamodb_error("InternalServerError", "the answer was lost"),
        ),
        _ => Step::Pass,
    });
    let ledger = kore_ingest_aws::ledger::UsageLedger::new(
        scripted_client(&script, true),
        LedgerConfig::new(table.table_name()),
    );
    let sample = SampleEvent::usage_update("EZlost", SIM, "2024-11-03T10:00:00Z", (5, 6));
    let outcome = ledger
        .record_event(&parse_one(&sample.kore_json()), &kinesis(1))
        .await;
    assert_eq!(outcome, Outcome::New);
    let sent = script
        .log()
        .iter()
        .filter(|(_, operation)| operation == "TransactWriteItems")
        .count();
    assert_eq!(sent, 2, "the SDK retried the commit once");
    let day = table.sim_usage(SIM, "2024-11-03").await.unwrap().unwrap();
    assert_eq!((day.usage.total, day.usage_events), (11, 1));
}

/// Usage can only be written knowing the closed periods (it may belong to one), and a new
/// event knowing the archived days (its day may be archived): when either cannot be read
/// (the first and the second query of a fresh ledger), new usage events are handed back for
/// retry, and nothing is stored.
#[tokio::test]
async fn new_usage_waits_when_the_closed_periods_cannot_be_read() {
    use kore_ingest_aws::ledger::LedgerConfig;
    use kore_test_support::script::{Script, Step, dynamodb_error, scripted_client};

    let table = fresh_ledger("closes-unreadable").await;
    for (failing, said) in [(1, "closed periods"), (2, "archived days")] {
        let script = Script::new(move |operation, nth| match (operation, nth) {
            ("Query", n) if n == failing => {
                Step::Fail(400, dynamodb_error("ThrottlingException", "slow down"))
            }
            _ => Step::Pass,
        });
        let ledger = kore_ingest_aws::ledger::UsageLedger::new(
            scripted_client(&script, false),
            LedgerConfig::new(table.table_name()),
        );
        let sample = SampleEvent::usage_update("EZwaits", SIM, "2024-11-03T10:00:00Z", (1, 2));
        let outcome = ledger
            .record_event(&parse_one(&sample.kore_json()), &kinesis(1))
            .await;
        let Outcome::Retry { reason } = outcome else {
            panic!("expected a retry, got {outcome:?}");
        };
        assert!(reason.contains(said), "{reason}");
        assert_eq!(table.sim_usage(SIM, "2024-11-03").await.unwrap(), None);
    }
}

/// Issue 21, item 5: one event may carry 2^50 bytes, so a SIM-hour can pass 2^64. DynamoDB
/// stores such a sum exactly (38 digits); reading it is an error naming the SIM and the
/// period, never a count of 0.
#[tokio::test]
async fn a_sim_hour_past_2_pow_64_is_an_overflow_naming_the_sim_and_hour_never_zero() {
    let ledger = fresh_ledger("sum-past-u64").await;
    let sim = "HS000000000000000000000000000big64";
    let sample = SampleEvent::usage_update("EZbig64", sim, "2024-11-03T10:15:00Z", (100, 900));
    let event = parse_one(&sample.kore_json());
    assert_eq!(ledger.record_event(&event, &kinesis(1)).await, Outcome::New);
    // What thousands of events of 2^50 bytes leave in the rollup, in one step: the same
    // `ADD` the write path runs, past u64::MAX.
    let booking = kore_ingest_core::usage::Booking::of(&event).unwrap();
    let (pk, sk) = kore_ingest_aws::ledger::keys::rollup_key(event.billing_day, &booking);
    let big = aws_sdk_dynamodb::types::AttributeValue::N(u64::MAX.to_string());
    local_client()
        .update_item()
        .table_name(ledger.table_name())
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk))
        .update_expression("ADD t10 :big, d10 :big, dt :big, dd :big")
        .expression_attribute_values(":big", big)
        .send()
        .await
        .unwrap();

    let error = ledger.sim_usage(sim, "2024-11-03").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("the usage of SIM {sim} for 2024-11-03 does not fit a 64-bit count")
    );
    let hourly = kore_ingest_core::usage::UsageQuery::new(
        Utc.with_ymd_and_hms(2024, 11, 3, 10, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 11, 3, 11, 0, 0).unwrap(),
        kore_ingest_core::usage::Granularity::Hour,
        None,
        kore_ingest_core::usage::UsageFilters::default(),
    )
    .unwrap();
    let error = ledger.rollups().usage(&hourly).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("SIM {sim} for 2024-11-03")),
        "{error}"
    );
}

/// A ledger on the same table as `ledger` with its own (empty) cache of the closes: another
/// process, such as the operator's `kore-usage close`.
fn another_process(
    ledger: &kore_ingest_aws::ledger::UsageLedger,
) -> kore_ingest_aws::ledger::UsageLedger {
    kore_ingest_aws::ledger::UsageLedger::new(
        local_client(),
        kore_ingest_aws::ledger::LedgerConfig::new(ledger.table_name()),
    )
}

fn november() -> TimeRange {
    TimeRange::new(
        Utc.with_ymd_and_hms(2024, 11, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0).unwrap(),
    )
    .unwrap()
}

/// Issue 21, item 2: a writer whose copy of the closes predates a close (a long retry, a
/// replay, a longer CLOSED_PERIODS_TTL_MS) commits after the close's snapshot was read: the
/// event is in the period's adjustments, never in neither, and the close still verifies.
#[tokio::test]
async fn a_write_committed_after_a_close_it_did_not_know_of_is_an_adjustment() {
    let writer = fresh_ledger("close-race-writer").await;
    let sim = "HS0000000000000000000000000closerace";
    let first = SampleEvent::usage_update("EZcloserace1", sim, "2024-11-03T10:00:00Z", (1, 2));
    // The writer reads the closes (none yet) and keeps its copy.
    assert_eq!(
        writer
            .record_event(&parse_one(&first.kore_json()), &kinesis(1))
            .await,
        Outcome::New
    );

    let operator = another_process(&writer);
    let close = operator.closes().register(None, november()).await.unwrap();
    let close = operator
        .closes()
        .store_snapshot(&close, None, None)
        .await
        .unwrap();

    let late = SampleEvent::usage_update("EZcloserace2", sim, "2024-11-03T11:00:00Z", (3, 4));
    assert_eq!(
        writer
            .record_event(&parse_one(&late.kore_json()), &kinesis(2))
            .await,
        Outcome::New
    );

    let problems = operator.closes().verify(&close).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let adjusted: Vec<String> = operator
        .closes()
        .adjustments(&close)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.event_sid)
        .collect();
    assert_eq!(adjusted, ["EZcloserace2"]);
}

/// Issue 21, item 2: two closes whose periods overlap, registered at the same moment, are
/// never both taken (the usage would be invoiced twice): one is refused.
#[tokio::test]
async fn overlapping_closes_registered_at_once_are_never_both_taken() {
    let ledger = fresh_ledger("close-overlap-race").await;
    for round in 0..4u32 {
        let day = |d: u32| Utc.with_ymd_and_hms(2025, 1 + round, d, 0, 0, 0).unwrap();
        let every_account = TimeRange::new(day(1), day(20)).unwrap();
        let one_account = TimeRange::new(day(10), day(25)).unwrap();
        let (a, b) = (another_process(&ledger), another_process(&ledger));
        let (first, second) = tokio::join!(
            a.closes().register(None, every_account),
            b.closes()
                .register(Some("AC00000000000000000000000000000001"), one_account),
        );
        assert!(
            first.is_ok() != second.is_ok(),
            "round {round}: exactly one is taken: {first:?} / {second:?}"
        );
    }
}

/// A close comes an hour after its period at the earliest, even forced: that is what lets
/// the commits of today's usage skip the check of their day's marker.
#[tokio::test]
async fn a_period_that_has_not_ended_an_hour_ago_cannot_be_closed() {
    let ledger = fresh_ledger("close-too-recent").await;
    let today = Utc::now().date_naive();
    let midnight = |day: chrono::NaiveDate| day.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let period = TimeRange::new(midnight(today), midnight(today.succ_opt().unwrap())).unwrap();
    let refused = ledger.closes().register(None, period).await.unwrap_err();
    assert!(
        matches!(
            refused,
            kore_ingest_core::closes::CloseError::TooRecent { .. }
        ),
        "{refused}"
    );
    assert!(ledger.closes().all().await.unwrap().is_empty());
}
