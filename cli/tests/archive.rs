//! `kore-usage archive seal`: a day sealed from the ledger holds exactly its usage events,
//! once each however often they were delivered, and sealing again writes the same bytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use kore_test_support::archive::files_under;
use kore_test_support::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// `kore-usage --table TABLE ARGS...` with its archive in `archive`.
fn kore_usage(table: &str, archive: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kore-usage"));
    command
        .args(["--table", table])
        .args(args)
        .env("ARCHIVE_URL", format!("file://{}", archive.display()));
    command
}

/// `archive seal` of 2024-11-03, finally, without waiting for writers (none run in a test).
const SEAL_FINALLY: [&str; 7] = [
    "archive",
    "seal",
    "--day",
    "2024-11-03",
    "--final",
    "--settle",
    "0s",
];

/// What `command` printed; it must succeed.
fn printed(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What `command` said on standard error; it must exit 1 having printed nothing.
fn refusal(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "nothing printed before the refusal"
    );
    String::from_utf8(output.stderr).unwrap()
}

fn seal(table: &str, archive: &Path, days: &[&str]) {
    printed(kore_usage(table, archive, &["archive", "seal", "--force"]).args(days));
}

#[tokio::test]
async fn a_sealed_day_holds_each_usage_event_once_and_seals_again_to_the_same_bytes() {
    let ledger = fresh_ledger("archive").await;
    let mut deliveries = Vec::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for n in 0..30u64 {
        let sim = format!("HS{:032x}", n % 6);
        let time = format!("2024-11-03T{:02}:{:02}:00Z", n % 24, n % 60);
        let e = SampleEvent::usage_update(&format!("EZ{n:032x}"), &sim, &time, (n, 1_000 * n));
        *expected.entry(sim).or_default() += n + 1_000 * n;
        deliveries.push((e.kore_json(), webhook(&format!("req-{n}"))));
        if n % 3 == 0 {
            deliveries.push((e.twilio_json(), kinesis(n)));
        }
    }
    // Events without usage go to a table of their own, once each too.
    for n in 0..4u64 {
        let sim = format!("HS{:032x}", n);
        let time = format!("2024-11-03T{:02}:30:00Z", 20 + n);
        let mut e = SampleEvent::usage_update(&format!("EZ{:032x}", 500 + n), &sim, &time, (0, 0));
        e.suffix = "attachment.accepted";
        deliveries.push((e.kore_json(), webhook(&format!("attach-{n}"))));
        deliveries.push((e.twilio_json(), kinesis(500 + n)));
    }
    store_deliveries(&ledger, &deliveries).await;
    let dir = tempfile::tempdir().unwrap();
    seal(ledger.table_name(), dir.path(), &["--day", "2024-11-03"]);
    let first = files_under(dir.path());
    // The same day again, as a range of one day.
    let range = [
        "--start",
        "2024-11-03T00:00:00Z",
        "--end",
        "2024-11-04T00:00:00Z",
    ];
    seal(ledger.table_name(), dir.path(), &range);
    assert_eq!(
        files_under(dir.path()),
        first,
        "sealing again writes the same bytes"
    );
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        [
            "manifests/day=2024-11-03.json",
            "other_events/day=2024-11-03/part-00000.parquet",
            "usage_events/day=2024-11-03/part-00000.parquet",
            "usage_rollups/day=2024-11-03/part-00000.parquet",
        ]
    );

    let part = first["usage_events/day=2024-11-03/part-00000.parquet"].clone();
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(part))
        .unwrap()
        .build()
        .unwrap();
    let mut archived: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0;
    for batch in reader {
        let batch = batch.unwrap();
        rows += batch.num_rows();
        let sims = batch.column_by_name("sim_sid").unwrap();
        let sims = sims
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        let totals = batch.column_by_name("data_total").unwrap();
        let totals = totals
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        for (sim, total) in sims.iter().zip(totals.iter()) {
            *archived.entry(sim.unwrap().to_owned()).or_default() += total.unwrap() as u64;
        }
    }
    assert_eq!(rows, 30, "each event once, however often delivered");
    assert_eq!(archived, expected);
    let manifest: Value = serde_json::from_slice(&first["manifests/day=2024-11-03.json"]).unwrap();
    assert_eq!(
        (
            manifest["usage_events"]["rows"].as_u64(),
            manifest["other_events"]["rows"].as_u64(),
            manifest["usage_rollups"]["rows"].as_u64(),
            manifest["distinct_event_sids"].as_u64()
        ),
        (Some(30), Some(4), Some(6), Some(34))
    );

    let status = ["archive", "status", "--format", "json"];
    let status = printed(&mut kore_usage(ledger.table_name(), dir.path(), &status));
    let days: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        days,
        serde_json::json!([{"day": "2024-11-03", "final": false, "usage_events": 30,
            "other_events": 4, "usage_rollups": 6, "parts": 3}])
    );

    // The Athena queries, run unchanged by DuckDB over the folder, sum what the ledger does.
    let query = |name: &str| {
        let output = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/archive-query"
        ))
        .args([name, "--month", "2024-11"])
        .env("ARCHIVE_URL", format!("file://{}", dir.path().display()))
        .output()
        .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let by_sim = query("usage_by_sim");
    let mut lines = by_sim.lines();
    assert_eq!(
        lines.next(),
        Some("sim_sid,account_sid,data_total,usage_events,days")
    );
    let queried: BTreeMap<String, u64> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[0].to_owned(), fields[2].parse().unwrap())
        })
        .collect();
    assert_eq!(queried, expected);
    let by_account = query("usage_by_account_and_country");
    assert_eq!(
        by_account
            .lines()
            .nth(1)
            .map(|l| l.split(',').nth(4).unwrap().to_owned()),
        Some(expected.values().sum::<u64>().to_string()),
        "{by_account}"
    );

    // Verified against the ledger; then the ledger takes one more event of the day, and the
    // archive no longer holds it all.
    let verify = || {
        let day = [
            "--start",
            "2024-11-03T00:00:00Z",
            "--end",
            "2024-11-04T00:00:00Z",
        ];
        kore_usage(ledger.table_name(), dir.path(), &["archive", "verify"])
            .args(day)
            .output()
            .unwrap()
    };
    let verified = verify();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let more = SampleEvent::usage_update(
        &format!("EZ{:032x}", 99),
        &format!("HS{:032x}", 1),
        "2024-11-03T12:00:00Z",
        (1, 2),
    );
    store_deliveries(&ledger, &[(more.kore_json(), webhook("late"))]).await;
    let differs = verify();
    assert_eq!(differs.status.code(), Some(1));
    let said = String::from_utf8_lossy(&differs.stdout);
    assert!(
        said.contains("2024-11-03: the manifest is not the ledger's events"),
        "{said}"
    );
    assert!(said.contains(&format!("SIM HS{:032x}", 1)), "{said}");
}

/// The whole table: each item's pk, sk and whether it carries `expires_at`.
async fn items_of(table: &str) -> Vec<(String, String, bool)> {
    let client = local_client();
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let text = |k: &str| item[k].as_s().unwrap().clone();
            items.push((text("pk"), text("sk"), item.contains_key("expires_at")));
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return items;
        }
    }
}

#[tokio::test]
async fn with_a_retention_event_records_and_booking_lists_expire_and_the_totals_stay() {
    use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};
    use kore_ingest_core::retention::Retention;

    let ledger = fresh_ledger("expiry").await;
    let table = ledger.table_name().to_owned();
    let writer = UsageLedger::new(
        local_client(),
        LedgerConfig {
            retention: Retention {
                ledger_days: Some(45),
                seal_after_days: 3,
            },
            ..LedgerConfig::new(table.clone())
        },
    );
    let mut deliveries = Vec::new();
    for n in 0..12u64 {
        let sim = format!("HS{:032x}", n % 4);
        let time = format!("2024-11-03T{:02}:10:00Z", n);
        let mut e = SampleEvent::usage_update(&format!("EZ{n:032x}"), &sim, &time, (n, 100 * n));
        if n == 11 {
            e.suffix = "attachment.accepted";
        }
        deliveries.push((e.kore_json(), webhook(&format!("r{n}"))));
        deliveries.push((e.twilio_json(), kinesis(n)));
    }
    store_deliveries(&writer, &deliveries).await;

    let items = items_of(&table).await;
    let kinds = |prefix: &str| -> Vec<bool> {
        items
            .iter()
            .filter(|(pk, sk, _)| pk.starts_with(prefix) || sk.starts_with(prefix))
            .map(|(_, _, expires)| *expires)
            .collect()
    };
    let events = kinds("EVENT#");
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| *e), "every event record expires");
    let lists: Vec<bool> = items
        .iter()
        .filter(|(pk, sk, _)| pk.starts_with("SIM#") && sk.starts_with("BOOKED#"))
        .map(|(_, _, e)| *e)
        .collect();
    assert!(
        !lists.is_empty() && lists.iter().all(|e| *e),
        "booking lists expire"
    );
    let rollups = kinds("USAGE#");
    assert!(
        !rollups.is_empty() && rollups.iter().all(|e| !e),
        "rollups never expire"
    );

    // A later day of the same SIM that the ledger keeps (written without a retention): the
    // readers below take it from the ledger and the expired day from the archive.
    let kept = SampleEvent::usage_update(
        &format!("EZ{:032x}", 50),
        &format!("HS{:032x}", 1),
        "2024-11-05T09:10:00Z",
        (3, 300),
    );
    let keeper = UsageLedger::new(local_client(), LedgerConfig::new(table.clone()));
    let kept = [
        (kept.kore_json(), webhook("kept")),
        (kept.twilio_json(), kinesis(50)),
    ];
    store_deliveries(&keeper, &kept).await;

    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| kore_usage(&table, dir.path(), args);
    let day = [
        "--start",
        "2024-11-03T00:00:00Z",
        "--end",
        "2024-11-04T00:00:00Z",
    ];
    let days = [
        "--start",
        "2024-11-02T00:00:00Z",
        "--end",
        "2024-11-05T00:00:00Z",
    ];
    let usage = || printed(run(&["usage", "--group", "sim", "--format", "json"]).args(day));
    let export = |format: &str, source: &str| {
        let args = ["export", "--format", format, "--source", source];
        printed(run(&args).args(days))
    };
    let sim = format!("HS{:032x}", 1);
    let evidence = |format: &str| {
        let args = ["evidence", "--sim", &sim, "--format", format];
        printed(run(&args).args(day))
    };
    let sessions = |format: &str, source: &str| {
        let args = [
            "sessions", "--sim", &sim, "--format", format, "--source", source,
        ];
        printed(&mut run(&args))
    };
    let sessions_before = (sessions("json", "auto"), sessions("table", "auto"));
    assert!(
        sessions_before.0.contains("session_sid"),
        "{}",
        sessions_before.0
    );
    let reconcile = || {
        let range = [
            "--from",
            "2024-11-03T00:00:00Z",
            "--to",
            "2024-11-06T00:00:00Z",
        ];
        printed(run(&["reconcile", "--format", "json"]).args(range))
    };
    let reconcile_before = reconcile();
    assert!(
        reconcile_before.contains("\"both\": 13"),
        "{reconcile_before}"
    );
    assert!(
        sessions_before.0.contains("\"windows_received\": 4"),
        "{}",
        sessions_before.0
    );
    let evidence_before = (evidence("json"), evidence("csv"));
    assert!(
        evidence_before.1.lines().count() > 2,
        "{}",
        evidence_before.1
    );
    let before = (usage(), export("jsonl", "auto"), export("csv", "auto"));
    assert_eq!(before.1.lines().count(), 12, "{}", before.1);
    let seal_finally = SEAL_FINALLY;
    printed(run(&seal_finally).arg("--force"));

    // Long after: what AWS would have deleted by then.
    let later = chrono::Utc::now().timestamp() + 400 * 86_400;
    let swept = sweep_expired(&table, later).await;
    assert!(swept >= 12, "{swept} items swept");
    assert_eq!(usage(), before.0, "the rollups answer as before");
    // A rebuild would recompute the rollups from what is left: refused, whether the CLI is
    // told the retention or finds the lists gone.
    for retention in ["45", "0"] {
        let rebuild = refusal(
            run(&["rebuild"])
                .args(day)
                .env("LEDGER_RETENTION_DAYS", retention),
        );
        assert!(
            rebuild.contains("expired"),
            "retention {retention}: {rebuild}"
        );
    }
    assert_eq!(usage(), before.0, "the rollups are kept");
    let check_archive = ["rebuild", "--check", "--from-archive", "--format", "json"];
    let checked: Value = serde_json::from_str(&printed(run(&check_archive).args(day))).unwrap();
    assert_eq!(checked["usage_events"].as_u64(), Some(11), "{checked}");
    assert_eq!(
        checked["differences"].as_array().map(Vec::len),
        Some(0),
        "{checked}"
    );
    assert_eq!(
        export("csv", "ledger").lines().count(),
        1,
        "the ledger's copy is gone: the header alone"
    );
    assert_eq!(
        (export("jsonl", "auto"), export("csv", "auto")),
        (before.1.clone(), before.2.clone()),
        "the archive answers byte for byte as the ledger did"
    );
    assert_eq!((evidence("json"), evidence("csv")), evidence_before);
    assert_eq!(
        (sessions("json", "auto"), sessions("table", "auto")),
        sessions_before,
        "the SIM's sessions, its booking lists gone, from the archive"
    );
    assert!(
        sessions("json", "ledger").contains("\"windows_received\": 1"),
        "the ledger alone holds only the kept day's window"
    );
    let args = ["sessions", "--sim", &sim, "--source", "archive"];
    let said = refusal(&mut run(&args));
    assert!(said.contains("2024-11-05 has no final seal"), "{said}");
    assert_eq!(
        reconcile(),
        reconcile_before,
        "who delivered what, from the archive"
    );
    let said = refusal(run(&["export", "--format", "csv", "--source", "archive"]).args(days));
    assert!(said.contains("2024-11-02 has no final seal"), "{said}");

    // Sealed finally already; and forced, the ledger no longer holds what its rollups count.
    let said = refusal(&mut run(&seal_finally));
    assert!(said.contains("sealed finally already"), "{said}");
    let said = refusal(run(&seal_finally).arg("--force"));
    assert!(said.contains("do not add up to its rollups"), "{said}");
    assert_eq!(
        export("jsonl", "auto"),
        before.1,
        "the archive is as it was"
    );

    // Every expired event delivered again, through the two functions' handlers (Twilio's
    // copies on Kinesis, KORE's to the webhook in one signed batch) and by replay: the day is
    // archived, so each is quarantined with that reason and no total moves.
    let other_process = UsageLedger::new(local_client(), LedgerConfig::new(table.clone()));
    let copies = |from: usize| -> Vec<&String> {
        deliveries
            .iter()
            .skip(from)
            .step_by(2)
            .map(|(json, _)| json)
            .collect()
    };
    let (kore_copies, twilio_copies) = (copies(0), copies(1));
    let records: Vec<(u64, Vec<u8>)> = twilio_copies
        .iter()
        .enumerate()
        .map(|(n, json)| (100 + n as u64, json.as_bytes().to_vec()))
        .collect();
    let report = kinesis_consumer::process_batch(&other_process, kinesis_event(&records), None)
        .await
        .unwrap();
    assert!(report.response.batch_item_failures.is_empty());
    assert_eq!(report.outcomes.len(), 12);
    for (_, outcome) in &report.outcomes {
        assert!(
            matches!(outcome, kore_ingest_core::delivery::Outcome::Quarantined { reason, .. } if reason.contains("2024-11-03 is archived")),
            "{outcome:?}"
        );
    }
    let secret = "archive-secret";
    let hook = webhook::Webhook {
        ledger: other_process.clone(),
        config: webhook::WebhookConfig::from_env(&kore_ingest_core::config::Env::from_fn(
            move |name| match name {
                "KORE_WEBHOOK_SECRETS" => Some(secret.into()),
                "WEBHOOK_PUBLIC_URL" => Some("https://hooks.example.com".into()),
                _ => None,
            },
        ))
        .unwrap(),
    };
    let body = format!(
        "[{}]",
        kore_copies
            .iter()
            .map(|json| json.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let request = kore_signed_post(
        secret,
        "https://hooks.example.com",
        "/events",
        body.as_bytes(),
    );
    let mut metrics = kore_ingest_core::metrics::InvocationMetrics::new("webhook");
    let response = hook.respond(&request, "archived", &mut metrics).await;
    assert_eq!(response.status_code, 200, "{:?}", response.body);
    let listed: Value = serde_json::from_str(&printed(&mut run(&[
        "quarantine",
        "list",
        "--format",
        "json",
    ])))
    .unwrap();
    let archived_by = |path: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["path"] == path)
            .filter(|e| {
                e["reason"]
                    .as_str()
                    .unwrap()
                    .contains("2024-11-03 is archived")
            })
            .count()
    };
    assert_eq!((archived_by("kinesis"), archived_by("webhook")), (12, 12));
    let file = dir.path().join("redelivered.jsonl");
    let lines: Vec<&str> = deliveries.iter().map(|(json, _)| json.as_str()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let replay = printed(run(&["replay", "--format", "json"]).arg(&file));
    let summary: Value = serde_json::from_str(&replay).unwrap();
    assert_eq!(summary["total"]["new"].as_u64(), Some(0), "{summary}");
    assert_eq!(
        summary["total"]["quarantined"].as_u64(),
        Some(24),
        "{summary}"
    );
    assert_eq!(usage(), before.0, "no total moved");

    // Usage counted after the final seal, once the ledger may have dropped the day: the
    // archive no longer holds all the rollups count, and the reader is told.
    let late = SampleEvent::usage_update(
        &format!("EZ{:032x}", 77),
        &format!("HS{:032x}", 2),
        "2024-11-03T20:00:00Z",
        (5, 5),
    );
    // Taken in again first: the archived day would quarantine it. With the retention known,
    // reopening a day whose records may have expired needs --force.
    let reopen = ["archive", "reopen", "--day", "2024-11-03"];
    let said = refusal(run(&reopen).env("LEDGER_RETENTION_DAYS", "45"));
    assert!(said.contains("--force"), "{said}");
    printed(run(&reopen).env("LEDGER_RETENTION_DAYS", "0"));
    let other_process = UsageLedger::new(local_client(), LedgerConfig::new(table.clone()));
    store_deliveries(&other_process, &[(late.kore_json(), webhook("late"))]).await;
    let said = refusal(run(&["export", "--format", "csv"]).args(day));
    assert!(
        said.contains(&format!("SIM HS{:032x}", 2)) && said.contains("after the day's final seal"),
        "{said}"
    );
    // The rollups now count the late event, which the archive does not hold.
    let differs = run(&check_archive).args(day).output().unwrap();
    let stdout = String::from_utf8_lossy(&differs.stdout);
    assert_eq!(differs.status.code(), Some(1), "{stdout}");
    let checked: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        checked["differences"][0]["sim_sid"].as_str(),
        Some(format!("HS{:032x}", 2).as_str()),
        "{checked}"
    );
}

/// `kore-usage`'s archive commands on an S3 archive (the emulator): the binary seals,
/// verifies and reads there as into a folder. The emulator records the calls the binary
/// makes, for the IAM test against `ArchiveOperatorPolicy`.
#[tokio::test]
async fn the_archive_commands_seal_verify_and_read_an_s3_archive() {
    use kore_test_support::archive::{S3Recorder, local_s3_archive};

    let ledger = fresh_ledger("archive-s3").await;
    let mut deliveries = Vec::new();
    for n in 0..6u64 {
        let sim = format!("HS{:032x}", n % 3);
        let time = format!("2024-11-03T{:02}:20:00Z", 2 * n);
        let e = SampleEvent::usage_update(&format!("EZ{n:032x}"), &sim, &time, (n, 7 * n));
        deliveries.push((e.kore_json(), webhook(&format!("s3-{n}"))));
    }
    store_deliveries(&ledger, &deliveries).await;
    let table = ledger.table_name().to_owned();

    // The binary, on a bucket of its own, holding a part an earlier seal left: the final
    // seal deletes it.
    let (_, bucket, store) = local_s3_archive("cli", "archive/").await;
    let stale = "usage_events/day=2024-11-03/part-00007.parquet";
    store
        .put(stale, b"left by an earlier seal".to_vec())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut command = kore_usage(&table, dir.path(), args);
        command.env("ARCHIVE_URL", format!("s3://{bucket}/archive/"));
        command
    };
    let range = [
        "--start",
        "2024-11-03T00:00:00Z",
        "--end",
        "2024-11-04T00:00:00Z",
    ];
    let from_ledger =
        printed(run(&["export", "--format", "csv", "--source", "ledger"]).args(range));
    // What the binary sends to S3, recorded by the emulator as `kore-usage`'s calls for
    // the IAM test (ArchiveOperatorPolicy).
    let recorder = S3Recorder::start().await;
    printed(run(&SEAL_FINALLY).arg("--force"));
    printed(run(&["archive", "verify"]).args(range));
    assert!(printed(&mut run(&["archive", "status"])).contains("2024-11-03"));
    let from_archive =
        printed(run(&["export", "--format", "csv", "--source", "archive"]).args(range));
    let calls = recorder.record_calls_to(&bucket, "kore-usage").await;
    assert_eq!(from_archive, from_ledger);
    assert_eq!(from_archive.lines().count(), 7, "{from_archive}");
    assert_eq!(
        store.get(stale).await.unwrap(),
        None,
        "the stale part is gone"
    );
    assert_eq!(
        calls.into_iter().collect::<Vec<_>>(),
        [
            "s3:DeleteObject",
            "s3:GetObject",
            "s3:ListBucket",
            "s3:PutObject"
        ],
        "the binary's S3 calls"
    );
}
