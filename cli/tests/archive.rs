//! `kore-usage archive seal`: a day sealed from the ledger holds exactly its usage events,
//! once each however often they were delivered, and sealing again writes the same bytes.

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use kore_test_support::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn seal(table: &str, archive: &std::path::Path, days: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_kore-usage"))
        .args(["--table", table, "archive", "seal", "--force"])
        .args(days)
        .env("ARCHIVE_URL", format!("file://{}", archive.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every file under `root`, by path, with its bytes.
fn files(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
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
    let first = files(dir.path());
    // The same day again, as a range of one day.
    let range = [
        "--start",
        "2024-11-03T00:00:00Z",
        "--end",
        "2024-11-04T00:00:00Z",
    ];
    seal(ledger.table_name(), dir.path(), &range);
    assert_eq!(
        files(dir.path()),
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

    let status = Command::new(env!("CARGO_BIN_EXE_kore-usage"))
        .args([
            "--table",
            ledger.table_name(),
            "archive",
            "status",
            "--format",
            "json",
        ])
        .env("ARCHIVE_URL", format!("file://{}", dir.path().display()))
        .output()
        .unwrap();
    let days: Value = serde_json::from_slice(&status.stdout).unwrap();
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
        Command::new(env!("CARGO_BIN_EXE_kore-usage"))
            .args(["--table", ledger.table_name(), "archive", "verify"])
            .args([
                "--start",
                "2024-11-03T00:00:00Z",
                "--end",
                "2024-11-04T00:00:00Z",
            ])
            .env("ARCHIVE_URL", format!("file://{}", dir.path().display()))
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
