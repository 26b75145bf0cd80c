//! The archiver's scheduled run against the S3 emulator: it seals each settled day of the
//! week once, finally, byte for byte what a seal into a folder writes, and a run that was
//! cut short is completed by the next without an object too many.

use archiver::{Archivist, CATCH_UP_DAYS, handle};
use chrono::NaiveDate;
use kore_ingest_aws::archive::{ArchiveStore, Archiver};
use kore_test_support::archive::local_s3_archive;
use kore_test_support::faults::as_function;
use kore_test_support::*;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

fn scheduled(time: &str) -> LambdaEvent<Value> {
    let event = json!({
        "version": "0", "id": "5f1c2c9e-0000-0000-0000-000000000000",
        "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": time, "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/archiver"], "detail": {}
    });
    LambdaEvent::new(event, Context::default())
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 11, 3).unwrap()
}

/// The `n`th event of the day's traffic: KORE delivers each, Twilio every fourth.
fn traffic_event(n: u64) -> SampleEvent {
    let sim = format!("HS{:032x}", n % 8);
    let time = format!("2024-11-03T{:02}:{:02}:00Z", n % 24, (n * 7) % 60);
    let mut e = SampleEvent::usage_update(&format!("EZ{n:032x}"), &sim, &time, (n, 10 * n));
    if n % 10 == 9 {
        e.suffix = "attachment.accepted";
    }
    e
}

async fn ledger_with_a_day_of_traffic() -> kore_ingest_aws::ledger::UsageLedger {
    let ledger = fresh_ledger("archiver").await;
    let mut deliveries = Vec::new();
    for n in 0..40u64 {
        let e = traffic_event(n);
        deliveries.push((e.kore_json(), webhook(&format!("req-{n}"))));
        if n % 4 == 0 {
            deliveries.push((e.twilio_json(), kinesis(n)));
        }
    }
    store_deliveries(&ledger, &deliveries).await;
    ledger
}

#[tokio::test]
async fn the_scheduled_run_seals_each_settled_day_once_as_a_folder_seal_would() {
    let ledger = ledger_with_a_day_of_traffic().await;
    let (_, _, store) = local_s3_archive("archiver", "archive/").await;
    let archivist = Archivist {
        ledger: ledger.clone(),
        store: store.clone(),
        settle: std::time::Duration::ZERO,
    };
    // Before the 3rd is settled (midnight on the 7th), the week before it is sealed.
    let early = as_function(
        "archiver",
        handle(&archivist, scheduled("2024-11-06T23:59:00Z")),
    )
    .await
    .unwrap();
    assert_eq!(
        early["sealed"].as_array().unwrap().len(),
        CATCH_UP_DAYS as usize
    );
    assert!(
        !early["sealed"]
            .as_array()
            .unwrap()
            .contains(&json!("2024-11-03"))
    );

    let run = as_function(
        "archiver",
        handle(&archivist, scheduled("2024-11-07T01:30:00Z")),
    )
    .await
    .unwrap();
    assert_eq!(
        run,
        json!({ "sealed": ["2024-11-03"] }),
        "sealed days are left alone"
    );
    let archiver = Archiver {
        ledger: &ledger,
        store: &store,
    };
    let manifest = archiver.manifest(day()).await.unwrap().unwrap();
    assert!(manifest.is_final);
    assert_eq!(
        (
            manifest.usage_events.rows,
            manifest.other_events.rows,
            manifest.distinct_event_sids
        ),
        (36, 4, 40),
        "each event once, however often delivered"
    );
    assert_eq!(archiver.verify(day()).await.unwrap(), Vec::<String>::new());

    // The same day sealed into a folder: the same objects, byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let folder = ArchiveStore::Folder(dir.path().to_owned());
    let into_folder = Archiver {
        ledger: &ledger,
        store: &folder,
    };
    let into_folder_finally = into_folder
        .seal_finally(&[day()], std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(into_folder_finally[0].1.is_ok());
    let tables = into_folder.day_tables(day()).await.unwrap();
    let sealed = tables.seal(day(), true, 100_000).unwrap();
    let manifest_key = kore_ingest_aws::archive::manifest_key(day());
    assert_eq!(
        store.get(&manifest_key).await.unwrap(),
        folder.get(&manifest_key).await.unwrap()
    );
    for (key, _) in &sealed.objects {
        assert_eq!(
            store.get(key).await.unwrap(),
            folder.get(key).await.unwrap(),
            "{key}"
        );
    }
    // Sealed finally, the day is archived: a new event of it is quarantined, not stored.
    assert!(ledger.archived_days().all().await.unwrap().contains(&day()));
    let late = SampleEvent::usage_update(
        &format!("EZ{:032x}", 900),
        &format!("HS{:032x}", 1),
        "2024-11-03T23:00:00Z",
        (1, 1),
    );
    // A writer of another process: its copy of the archived days is read now.
    let writer = kore_ingest_aws::ledger::UsageLedger::new(
        local_client(),
        kore_ingest_aws::ledger::LedgerConfig::new(ledger.table_name()),
    );
    let outcomes = writer
        .recorder()
        .record_batch(&[(parse_item(&late.kore_json()), webhook("late"))], None)
        .await;
    assert!(
        matches!(&outcomes[0], kore_ingest_core::delivery::Outcome::Quarantined { reason, .. } if reason.contains("2024-11-03 is archived")),
        "{outcomes:?}"
    );
    // So is each copy of a stored event through a path that had not delivered it, in a
    // batch with nothing new: adding the delivery would change the record the seal holds. A
    // copy through KORE's webhook, which delivered it, is a duplicate as before.
    let stored = traffic_event(1);
    let outcomes = writer
        .recorder()
        .record_batch(
            &[
                (parse_item(&stored.twilio_json()), kinesis(901)),
                (parse_item(&stored.twilio_json()), kinesis(902)),
                (parse_item(&stored.kore_json()), webhook("again")),
            ],
            None,
        )
        .await;
    for outcome in &outcomes[..2] {
        assert!(
            matches!(outcome, kore_ingest_core::delivery::Outcome::Quarantined { reason, .. } if reason.contains("2024-11-03 is archived: the event is stored and sealed")),
            "{outcomes:?}"
        );
    }
    assert_eq!(
        outcomes[2],
        kore_ingest_core::delivery::Outcome::Duplicate {
            new_delivery: false
        }
    );
    let verified = archiver.verify(day()).await;
    assert_eq!(verified.unwrap(), Vec::<String>::new());
    let again = as_function(
        "archiver",
        handle(&archivist, scheduled("2024-11-08T01:30:00Z")),
    )
    .await
    .unwrap();
    assert_eq!(again, json!({ "sealed": ["2024-11-04"] }));
}

#[tokio::test]
async fn a_run_cut_short_is_completed_by_the_next_with_the_same_objects_and_no_more() {
    let ledger = ledger_with_a_day_of_traffic().await;
    let (_, _, store) = local_s3_archive("archiver-cut", "").await;
    let archiver = Archiver {
        ledger: &ledger,
        store: &store,
    };
    // A run killed after writing its first objects: parts, no manifest.
    let sealed = archiver
        .day_tables(day())
        .await
        .unwrap()
        .seal(day(), true, 100_000)
        .unwrap();
    for (key, part) in sealed.objects.iter().take(2) {
        store.put(key, part.bytes.clone()).await.unwrap();
    }
    // And a part an earlier seal wrote that this one does not: readers take every part.
    let stale = format!("usage_events/day={}/part-00007.parquet", day());
    store
        .put(&stale, sealed.objects[0].1.bytes.clone())
        .await
        .unwrap();
    assert!(archiver.manifest(day()).await.unwrap().is_none());
    assert!(archiver.verify(day()).await.unwrap()[0].contains("not sealed"));

    let archivist = Archivist {
        ledger: ledger.clone(),
        store: store.clone(),
        settle: std::time::Duration::ZERO,
    };
    as_function(
        "archiver",
        handle(&archivist, scheduled("2024-11-07T01:30:00Z")),
    )
    .await
    .unwrap();
    assert_eq!(
        archiver.manifest(day()).await.unwrap(),
        Some(sealed.manifest)
    );
    let mut keys = Vec::new();
    for table in kore_ingest_archive::TABLES {
        keys.extend(
            store
                .list(&format!("{table}/day={}/", day()))
                .await
                .unwrap(),
        );
    }
    let expected: Vec<&String> = sealed.objects.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.iter().collect::<Vec<_>>(), expected);
    assert_eq!(archiver.verify(day()).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_day_whose_events_no_longer_add_up_is_not_sealed_and_is_taken_in_again() {
    let ledger = ledger_with_a_day_of_traffic().await;
    // One event record gone, as if it had expired: the rollups count more than the events.
    let key = kore_ingest_core::event::DedupeKey::new(&format!("EZ{:032x}", 4), "event_sid");
    let gone = kore_ingest_aws::ledger::keys::event_pk(&key.unwrap());
    local_client()
        .delete_item()
        .table_name(ledger.table_name())
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(gone))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("#".into()))
        .send()
        .await
        .unwrap();
    let (_, _, store) = local_s3_archive("archiver-short", "").await;
    let archivist = Archivist {
        ledger: ledger.clone(),
        store: store.clone(),
        settle: std::time::Duration::ZERO,
    };
    let run = as_function(
        "archiver",
        handle(&archivist, scheduled("2024-11-07T01:30:00Z")),
    )
    .await;
    let error = run.unwrap_err().to_string();
    assert!(
        error.contains("2024-11-03") && error.contains("do not add up"),
        "{error}"
    );
    let archiver = Archiver {
        ledger: &ledger,
        store: &store,
    };
    assert_eq!(
        archiver.manifest(day()).await.unwrap(),
        None,
        "nothing written"
    );
    assert!(
        !ledger.archived_days().all().await.unwrap().contains(&day()),
        "the day is taken in again"
    );
}

/// S3 answers at most 1,000 keys a page; a folder holds more after three years of
/// manifests (or a day of more than 1,000 parts): it is listed whole, in order.
#[tokio::test]
async fn a_folder_of_more_than_a_thousand_objects_is_listed_whole() {
    let (_, _, store) = local_s3_archive("archiver-many", "archive/").await;
    let keys: Vec<String> = (0..1_001)
        .map(|n| format!("manifests/day={n:05}.json"))
        .collect();
    for key in &keys {
        store.put(key, b"{}".to_vec()).await.unwrap();
    }
    let listed = store.list("manifests/").await.unwrap();
    assert_eq!(listed.len(), keys.len());
    assert_eq!(listed, keys);
}
