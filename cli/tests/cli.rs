//! The `kore-usage` binary, run as an operator runs it, against DynamoDB Local (started by
//! `scripts/test`, which exports `AWS_ENDPOINT_URL_DYNAMODB`, credentials and a region).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::callback::CallbackKind;
use kore_ingest_core::config::Env;
use kore_ingest_core::delivery::{Delivery, Outcome};
use kore_ingest_core::event::{DataVolume, Provider};
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind};
use kore_test_support::faults::cancelled_for_marked_items;
use kore_test_support::*;
use serde_json::{Value, json};

const ACCOUNT_A: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ACCOUNT_B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const FLEET_1: &str = "HF11111111111111111111111111111111";
const FLEET_2: &str = "HF22222222222222222222222222222222";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with the given table (none: neither `--table` nor `TABLE_NAME`).
fn kore_usage_with(table: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kore-usage"));
    command.env_remove("TABLE_NAME");
    if let Some(table) = table {
        command.args(["--table", table]);
    }
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run kore-usage");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

fn kore_usage(ledger: &UsageLedger, args: &[&str]) -> Run {
    kore_usage_with(Some(ledger.table_name()), args, &[])
}

/// Runs a command that must succeed and returns its stdout.
fn ok(ledger: &UsageLedger, args: &[&str]) -> String {
    let run = kore_usage(ledger, args);
    assert_eq!(
        run.code, 0,
        "kore-usage {args:?} failed\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.stdout
}

fn ok_json(ledger: &UsageLedger, args: &[&str]) -> Value {
    let stdout = ok(ledger, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// A failure is one plain sentence on stderr: one line, no debug dump, no backtrace.
fn assert_one_sentence(stderr: &str) {
    let text = stderr.trim_end();
    assert_eq!(text.lines().count(), 1, "one line: {stderr}");
    assert!(text.starts_with("error: "), "{stderr}");
    assert!(text.ends_with('.'), "{stderr}");
    for dump in [
        "Error {",
        "ServiceError",
        "DispatchFailure",
        "backtrace",
        "panicked",
        "{ ",
    ] {
        assert!(!text.contains(dump), "no `{dump}` in: {stderr}");
    }
}

/// The cells of a table line (columns are separated by at least two spaces).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// A human-readable size such as `1.2 MiB` matches `bytes` to its one shown decimal.
fn assert_size(text: &str, bytes: u64) {
    let (number, unit) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("size {text}"));
    let factor = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {text}"),
    };
    let shown: f64 = number.parse().unwrap_or_else(|_| panic!("size {text}"));
    let tolerance = if unit == "B" { 0.0 } else { 0.05 * factor };
    assert!(
        (shown * factor - bytes as f64).abs() <= tolerance + 1e-6,
        "{text} shows {bytes} bytes"
    );
    if unit != "B" {
        assert!(bytes >= 1024, "{bytes} bytes are shown in B, not {text}");
    }
}

fn volume(up: u64, down: u64) -> DataVolume {
    DataVolume {
        upload: up,
        download: down,
        total: up + down,
    }
}

/// Generated usage traffic: `unique` events over `sims` SIMs (half in account A / fleet 1,
/// half in account B / fleet 2) on 3 and 4 November 2024, each delivered once or twice
/// through KORE webhooks and Twilio's Kinesis sink, shuffled.
fn traffic(seed: u64, unique: usize, sims: usize) -> (Vec<SampleEvent>, Vec<(String, Delivery)>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = Utc.with_ymd_and_hms(2024, 11, 3, 0, 0, 0).unwrap();
    let events: Vec<SampleEvent> = (0..unique)
        .map(|i| {
            let sim = i % sims;
            let at = start + Duration::seconds(rng.i64(0..2 * 24 * 3600));
            let mut e = SampleEvent::usage_update(
                &format!("EZ{seed:08x}{i:024x}"),
                &format!("HS{sim:032}"),
                &at.to_rfc3339(),
                (rng.u64(0..50_000), rng.u64(0..5_000_000)),
            );
            (e.account_sid, e.fleet_sid) = if sim < sims / 2 {
                (ACCOUNT_A.into(), FLEET_1.into())
            } else {
                (ACCOUNT_B.into(), FLEET_2.into())
            };
            if i % 5 == 0 {
                e.suffix = "data-session.ended";
            }
            e.session_sid = format!("PI{seed:08x}{:024}", i / 6);
            e
        })
        .collect();
    let mut deliveries = Vec::new();
    for (i, e) in events.iter().enumerate() {
        for copy in 0..rng.usize(1..=2) {
            deliveries.push(if rng.bool() {
                (e.kore_json(), webhook(&format!("req-{i}-{copy}")))
            } else {
                (e.twilio_json(), kinesis(i as u64 * 10 + copy as u64))
            });
        }
    }
    rng.shuffle(&mut deliveries);
    (events, deliveries)
}

/// Independent totals per SIM for a period (`YYYY-MM` or `YYYY-MM-DD`): upload, download,
/// events, from the generated numbers.
fn expected_usage(
    events: &[SampleEvent],
    period: &str,
    keep: impl Fn(&SampleEvent) -> bool,
) -> BTreeMap<String, (u64, u64, u64)> {
    let mut totals: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for e in events.iter().filter(|e| keep(e)) {
        let format = if period.len() == 7 {
            "%Y-%m"
        } else {
            "%Y-%m-%d"
        };
        if e.time.format(format).to_string() != period {
            continue;
        }
        let entry = totals.entry(e.sim_sid.clone()).or_default();
        entry.0 += e.window.0;
        entry.1 += e.window.1;
        entry.2 += 1;
    }
    totals
}

fn assert_report_json(report: &Value, period: &str, expected: &BTreeMap<String, (u64, u64, u64)>) {
    let rows = report.as_array().expect("a JSON array");
    let sims: Vec<&str> = rows
        .iter()
        .map(|r| r["sim_sid"].as_str().unwrap())
        .collect();
    let expected_sims: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(sims, expected_sims, "sorted by sim_sid, every SIM once");
    for row in rows {
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(
            sorted_keys,
            [
                "data_download",
                "data_total",
                "data_upload",
                "period",
                "sim_sid",
                "usage_events"
            ]
        );
        let (up, down, events) = expected[row["sim_sid"].as_str().unwrap()];
        assert_eq!(
            row,
            &json!({
                "sim_sid": row["sim_sid"],
                "period": period,
                "data_upload": up,
                "data_download": down,
                "data_total": up + down,
                "usage_events": events,
            })
        );
    }
}

#[tokio::test]
async fn report_json_table_and_csv_equal_independent_totals_of_redelivered_traffic() {
    let ledger = fresh_ledger("cli-report").await;
    let (events, deliveries) = traffic(1, 300, 10);
    store_deliveries(&ledger, &deliveries).await;
    let month = expected_usage(&events, "2024-11", |_| true);
    assert_eq!(month.len(), 10);
    assert_eq!(month.values().map(|t| t.2).sum::<u64>(), 300);

    // JSON: exactly the contract's keys, integers, sorted by SIM.
    let report = ok_json(
        &ledger,
        &["report", "--period", "2024-11", "--format", "json"],
    );
    assert_report_json(&report, "2024-11", &month);

    // CSV: the contract's header and the same raw integers.
    let csv = ok(
        &ledger,
        &["report", "--period", "2024-11", "--format", "csv"],
    );
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("sim_sid,period,data_upload,data_download,data_total,usage_events")
    );
    let parsed: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(parsed.len(), 10);
    for (fields, (sim, (up, down, n))) in parsed.iter().zip(&month) {
        let numbers: Vec<u64> = fields[2..].iter().map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields[..2], [sim.as_str(), "2024-11"]);
        assert_eq!(numbers, [*up, *down, up + down, *n]);
    }

    // Table (the default): aligned, readable sizes, a totals row; the same numbers.
    let table = ok(&ledger, &["report", "--period", "2024-11"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        cells(lines[0]),
        ["SIM", "PERIOD", "UPLOAD", "DOWNLOAD", "TOTAL", "EVENTS"]
    );
    // Aligned: every line (header, rows, rule, totals) is as wide as the header.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    for (line, (sim, (up, down, n))) in lines[1..11].iter().zip(&month) {
        let row = cells(line);
        assert_eq!(row[..2], [sim.as_str(), "2024-11"], "{line}");
        assert_size(row[2], *up);
        assert_size(row[3], *down);
        assert_size(row[4], up + down);
        assert_eq!(row[5], n.to_string());
    }
    assert!(lines[11].chars().all(|c| c == '-'), "{table}");
    let totals = cells(lines[12]);
    assert_eq!(totals[0], "TOTAL (10 SIMs)");
    let (up, down): (u64, u64) = month.values().fold((0, 0), |(u, d), t| (u + t.0, d + t.1));
    assert_size(totals[2], up);
    assert_size(totals[3], down);
    assert_size(totals[4], up + down);
    assert_eq!(totals[5], "300");
    assert!(
        totals[4].ends_with("MiB") || totals[4].ends_with("GiB"),
        "{table}"
    );

    // A day, narrowed by account and fleet (the filters combine); one SIM by itself.
    let day = "2024-11-03";
    let account_a = expected_usage(&events, day, |e| e.account_sid == ACCOUNT_A);
    let report = ok_json(
        &ledger,
        &[
            "report",
            "--period",
            day,
            "--account",
            ACCOUNT_A,
            "--format",
            "json",
        ],
    );
    assert_report_json(&report, day, &account_a);
    let fleet_2 = expected_usage(&events, day, |e| e.fleet_sid == FLEET_2);
    let report = ok_json(
        &ledger,
        &[
            "report", "--period", day, "--fleet", FLEET_2, "--format", "json",
        ],
    );
    assert_report_json(&report, day, &fleet_2);
    let report = ok_json(
        &ledger,
        &[
            "report",
            "--period",
            day,
            "--account",
            ACCOUNT_A,
            "--fleet",
            FLEET_2,
            "--format",
            "json",
        ],
    );
    assert_eq!(report, json!([]), "no SIM of account A is in fleet 2");
    let sim = month.keys().next().unwrap().clone();
    let one = expected_usage(&events, "2024-11", |e| e.sim_sid == sim);
    let report = ok_json(
        &ledger,
        &[
            "report", "--period", "2024-11", "--sim", &sim, "--format", "json",
        ],
    );
    assert_report_json(&report, "2024-11", &one);
    let nothing = ok(&ledger, &["report", "--period", "2024-12"]);
    assert_eq!(nothing.trim(), "No usage recorded for 2024-12.");
}

#[tokio::test]
async fn reconcile_finds_exactly_the_events_sent_through_one_provider_only() {
    let ledger = fresh_ledger("cli-reconcile").await;
    let start = Utc.with_ymd_and_hms(2024, 11, 3, 23, 0, 0).unwrap();
    let (mut only_kore, mut only_twilio, mut both) = (Vec::new(), Vec::new(), 0);
    let mut inputs = Vec::new();
    // Two hours across midnight: 60 events, every third through KORE only, every third
    // through Twilio only, the rest through both (and some twice).
    for i in 0..60u64 {
        let at = start + Duration::minutes(i as i64 * 2);
        let e = SampleEvent::usage_update(
            &format!("EZrec{i:027}"),
            "HS0000000000000000000000000000rec",
            &at.to_rfc3339(),
            (i, 10 * i),
        );
        let kore = (parse_item(&e.kore_json()), webhook(&format!("r{i}")));
        let twilio = (parse_item(&e.twilio_json()), kinesis(i));
        match i % 3 {
            0 => {
                only_kore.push(e.event_sid.clone());
                inputs.push(kore);
            }
            1 => {
                only_twilio.push(e.event_sid.clone());
                inputs.push(twilio.clone());
                inputs.push(twilio);
            }
            _ => {
                both += 1;
                inputs.push(twilio);
                inputs.push(kore);
            }
        }
    }
    // Outside the range: Twilio only, must not be reported.
    let late = SampleEvent::usage_update(
        "EZlate",
        "HS0000000000000000000000000000rec",
        "2024-11-04T01:00:00Z",
        (1, 1),
    );
    inputs.push((parse_item(&late.twilio_json()), kinesis(999)));
    let outcomes = ledger.record_batch(&inputs, None).await;
    assert!(outcomes.iter().all(|o| !o.is_retry()), "{outcomes:?}");

    let from = "2024-11-03T23:00:00Z";
    let to = "2024-11-04T01:00:00Z";
    let report = ok_json(
        &ledger,
        &["reconcile", "--from", from, "--to", to, "--format", "json"],
    );
    only_kore.sort();
    only_twilio.sort();
    assert_eq!(
        report,
        json!({"both": both, "only_twilio": only_twilio, "only_kore": only_kore})
    );
    assert_eq!(report.as_object().unwrap().len(), 3);

    let table = ok(&ledger, &["reconcile", "--from", from, "--to", to]);
    assert!(
        table.contains("Delivered by both KORE and Twilio: 20"),
        "{table}"
    );
    assert!(table.contains("Only Twilio: 20"), "{table}");
    assert!(table.contains(&format!("  {}\n", only_kore[0])), "{table}");
    assert!(!table.contains("EZlate"), "{table}");
}

/// An archive of the traffic: JSON lines, KORE and Twilio renderings, some lines holding
/// an array of events, some events twice.
fn write_archive(events: &[SampleEvent]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .expect("temp file");
    let mut i = 0;
    while i < events.len() {
        let line = match i % 4 {
            0 => events[i].kore_json(),
            1 => events[i].twilio_json(),
            _ => {
                let end = (i + 3).min(events.len());
                let batch: Vec<String> = events[i..end].iter().map(|e| e.kore_json()).collect();
                i = end - 1;
                format!("[{}]", batch.join(","))
            }
        };
        writeln!(file, "{line}").unwrap();
        if i % 7 == 0 {
            writeln!(file, "{}", events[i].twilio_json()).unwrap();
        }
        i += 1;
    }
    file.flush().unwrap();
    file
}

async fn month_usage(ledger: &UsageLedger) -> Vec<(String, DataVolume, u64)> {
    ledger
        .period_usage("2024-11")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sim_sid, r.usage, r.usage_events))
        .collect()
}

#[tokio::test]
async fn replay_of_the_same_archive_twice_reports_only_duplicates_the_second_time() {
    let ledger = fresh_ledger("cli-replay").await;
    let (events, _) = traffic(2, 120, 6);
    let archive = write_archive(&events);
    // The same events again as one pretty-printed JSON array, as a Kinesis sink export.
    let mut exported = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    let array: Vec<Value> = events[..30]
        .iter()
        .map(|e| serde_json::from_str(&e.twilio_json()).unwrap())
        .collect();
    write!(
        exported,
        "{}",
        serde_json::to_string_pretty(&array).unwrap()
    )
    .unwrap();
    exported.flush().unwrap();
    let paths = [
        archive.path().to_str().unwrap(),
        exported.path().to_str().unwrap(),
    ];

    let first = ok_json(
        &ledger,
        &[
            "replay",
            paths[0],
            paths[1],
            "--batch-size",
            "40",
            "--format",
            "json",
        ],
    );
    let total = &first["total"];
    assert_eq!(total["new"], 120, "{first}");
    assert_eq!(
        total["duplicate"].as_u64().unwrap(),
        total["inputs"].as_u64().unwrap() - 120
    );
    assert_eq!(
        first["files"][1]["new"], 0,
        "the export repeats the archive"
    );
    assert_eq!(first["files"][1]["duplicate"], 30);
    for key in ["conflict", "quarantined", "retry"] {
        assert_eq!(total[key], 0, "{key}: {first}");
    }
    let expected: Vec<(String, DataVolume, u64)> = expected_usage(&events, "2024-11", |_| true)
        .into_iter()
        .map(|(sim, (up, down, n))| (sim, volume(up, down), n))
        .collect();
    assert_eq!(month_usage(&ledger).await, expected);

    let second = kore_usage(&ledger, &["replay", paths[0], paths[1], "--format", "json"]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let second: Value = serde_json::from_str(&second.stdout).unwrap();
    let total = &second["total"];
    assert_eq!(total["inputs"], first["total"]["inputs"]);
    assert_eq!(total["duplicate"], total["inputs"], "{second}");
    for key in ["new", "conflict", "quarantined", "retry"] {
        assert_eq!(total[key], 0, "{key}: {second}");
    }
    assert_eq!(month_usage(&ledger).await, expected, "totals unchanged");

    // The table summary names each file and the total.
    let table = ok(&ledger, &["replay", paths[0], paths[1]]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        cells(lines[0]),
        [
            "FILE",
            "INPUTS",
            "NEW",
            "DUPLICATE",
            "CONFLICT",
            "QUARANTINED",
            "RETRY"
        ]
    );
    assert_eq!(cells(lines[1])[0], paths[0]);
    let inputs = total["inputs"].to_string();
    assert_eq!(
        cells(lines.last().unwrap()),
        [
            "TOTAL",
            inputs.as_str(),
            "0",
            inputs.as_str(),
            "0",
            "0",
            "0"
        ]
    );
}

#[tokio::test]
async fn replay_quarantines_unparseable_lines_with_their_place_in_the_archive() {
    let ledger = fresh_ledger("cli-replay-poison").await;
    let good = SampleEvent::usage_update("EZpoison1", "HSpoison", "2024-11-03T10:00:00Z", (5, 7));
    let mut file = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    writeln!(file, "{}", good.kore_json()).unwrap();
    writeln!(file, "{{\"specversion\": \"1.0\", truncated").unwrap();
    writeln!(file).unwrap();
    writeln!(
        file,
        r#"[{{"type":"com.kore.iot.supersim.connection.attachment.accepted","source":"kore-events","data":{{}}}}]"#
    )
    .unwrap();
    // Issue 21, item 6: an event larger than any function takes (7 MiB: neither a Kinesis
    // record nor a webhook body can be) is quarantined as the functions would, not stored
    // for rebuild, evidence and export to fail on.
    let mut huge: Value = serde_json::from_str(
        &SampleEvent::usage_update("EZpoisonhuge", "HSpoison", "2024-11-03T11:00:00Z", (1, 1))
            .kore_json(),
    )
    .unwrap();
    huge["data"]["padding"] = "x".repeat(7 * 1024 * 1024).into();
    writeln!(file, "{huge}").unwrap();
    file.flush().unwrap();
    let path = file.path().to_str().unwrap();

    let report = ok_json(&ledger, &["replay", path, "--format", "json"]);
    let total = &report["total"];
    assert_eq!(
        (total["inputs"].as_u64(), total["new"].as_u64()),
        (Some(4), Some(1)),
        "{report}"
    );
    assert_eq!(total["quarantined"], 3, "{report}");
    let listed = ok_json(&ledger, &["quarantine", "list", "--format", "json"]);
    let mut origins: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["origin"].as_str().unwrap())
        .collect();
    origins.sort_unstable();
    assert_eq!(
        origins,
        [
            format!("{path}:2"),
            format!("{path}:4"),
            format!("{path}:5")
        ]
    );
    let reasons: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("more than the functions take")),
        "{reasons:?}"
    );
    let day = ledger
        .sim_usage("HSpoison", "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage, day.usage_events), (volume(5, 7), 1));
}

/// Issue 21, item 3: the runbook for the consumer's on-failure queue replays the records the
/// consumer gave up on, spilled webhook requests among them: `replay` stores their events as
/// the webhook deliveries they are, and `quarantine redrive` does the same with one that was
/// quarantined before this was understood.
#[tokio::test]
async fn replay_and_redrive_store_records_the_webhook_spilled_as_its_deliveries() {
    use kore_ingest_core::spill::{SpilledRequest, encode};
    let ledger = fresh_ledger("cli-replay-spill").await;
    let sim = "HS00000000000000000000000000spill";
    let events: Vec<SampleEvent> = (1..=4u64)
        .map(|n| {
            SampleEvent::usage_update(
                &format!("EZspilled{n:023}"),
                sim,
                &format!("2024-11-03T10:0{n}:00Z"),
                (n, 10 * n),
            )
        })
        .collect();
    let spilled = |request_id: &str, events: &[SampleEvent]| {
        let raw: Vec<String> = events.iter().map(SampleEvent::kore_json).collect();
        let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
        let request = SpilledRequest {
            provider: Some(Provider::Kore),
            request_id: request_id.into(),
            received_at: Utc.with_ymd_and_hms(2024, 11, 3, 10, 30, 0).unwrap(),
        };
        let mut records = encode(&request, &raw).unwrap();
        assert_eq!(records.len(), 1);
        records.remove(0)
    };
    // The records the consumer gave up on, one per line, as the runbook writes them.
    let mut file = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    file.write_all(&spilled("req-spilled-1", &events[..3]))
        .unwrap();
    writeln!(file).unwrap();
    file.flush().unwrap();
    let report = ok_json(
        &ledger,
        &["replay", file.path().to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(
        (
            report["total"]["new"].as_u64(),
            report["total"]["quarantined"].as_u64()
        ),
        (Some(3), Some(0)),
        "{report}"
    );
    // A spilled record quarantined earlier is redriven the same way.
    let record = spilled("req-spilled-2", &events[2..]);
    let id = ledger
        .quarantine(QuarantineEntry {
            kind: QuarantineKind::Event,
            payload: &record,
            reason: "simulated: spilled record quarantined by an older replay".into(),
            delivery: &kinesis(7),
            related_event: None,
        })
        .await
        .unwrap();
    let redriven = ok_json(&ledger, &["quarantine", "redrive", &id, "--format", "json"]);
    assert_eq!(redriven[0]["result"], "removed", "{redriven}");
    assert_eq!(
        (
            redriven[0]["new"].as_u64(),
            redriven[0]["duplicate"].as_u64()
        ),
        (Some(1), Some(1))
    );

    let day = ledger.sim_usage(sim, "2024-11-03").await.unwrap().unwrap();
    assert_eq!(day.usage_events, 4);
    let stored = ledger.events().of_sim(sim, None).await.unwrap();
    assert_eq!(stored.len(), 4);
    for (record, _) in &stored {
        assert_eq!(record.deliveries, ["kore#webhook"], "{}", record.key);
    }
}

#[tokio::test]
async fn quarantine_redrive_stores_a_fixed_payload_once_and_keeps_what_still_fails() {
    let ledger = fresh_ledger("cli-redrive").await;
    let sim = "HS0000000000000000000000000redrive";

    // A valid event quarantined by a parser bug that has been fixed since.
    let fixed = SampleEvent::usage_update("EZfixed", sim, "2024-11-03T10:00:00Z", (300, 4_000));
    let fixed_json = fixed.twilio_json();
    let fixed_id = ledger
        .quarantine(QuarantineEntry {
            kind: QuarantineKind::Event,
            payload: fixed_json.as_bytes(),
            reason: "simulated: parser bug fixed since".into(),
            delivery: &kinesis(1),
            related_event: None,
        })
        .await
        .unwrap();
    // Still invalid: no event_sid and no id.
    let bad = r#"{"type":"com.kore.iot.supersim.connection.attachment.accepted","source":"kore-events","data":{}}"#;
    let Outcome::Quarantined {
        quarantine_id: bad_id,
        reason: bad_reason,
    } = ledger.record(&parse_item(bad), &webhook("req-bad")).await
    else {
        panic!("the bad event is quarantined");
    };
    // A callback whose storage failed, with its provider and idempotency token.
    let form = include_str!("../../tests/fixtures/callback-sim-status.form").trim_end();
    let token = "RQ00000000000000000000000000redrive";
    let callback_id = ledger
        .quarantine(QuarantineEntry {
            kind: QuarantineKind::Callback {
                kind: CallbackKind::Sims,
                idempotency_token: Some(token.into()),
            },
            payload: form.as_bytes(),
            reason: "simulated: storage refused it".into(),
            delivery: &Delivery {
                provider_hint: Some(Provider::Kore),
                ..webhook("req-callback")
            },
            related_event: None,
        })
        .await
        .unwrap();
    // A conflicting copy: it conflicts again on every redrive and stays.
    let first = SampleEvent::usage_update("EZconflict", sim, "2024-11-03T11:00:00Z", (1, 1));
    let mut altered = first.clone();
    altered.window = (1, 999);
    assert_eq!(
        ledger
            .record(&parse_item(&first.kore_json()), &kinesis(2))
            .await,
        Outcome::New
    );
    let Outcome::Conflict {
        quarantine_id: conflict_id,
    } = ledger
        .record(&parse_item(&altered.twilio_json()), &kinesis(3))
        .await
    else {
        panic!("the altered copy conflicts");
    };

    let listed = ok_json(&ledger, &["quarantine", "list", "--format", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    let shown = ok_json(
        &ledger,
        &["quarantine", "show", &fixed_id, "--format", "json"],
    );
    assert_eq!(shown["payload"], fixed_json.as_str());
    assert_eq!(shown["payload_encoding"], "text");
    assert_eq!(shown["reason"], "simulated: parser bug fixed since");
    assert_eq!(shown["kind"], "event");
    let shown = ok(&ledger, &["quarantine", "show", &callback_id]);
    assert!(
        shown.contains("idempotency token: RQ00000000000000000000000000redrive"),
        "{shown}"
    );
    assert!(shown.trim_end().ends_with(form), "{shown}");

    // Redrive everything.
    let results = ok_json(
        &ledger,
        &["quarantine", "redrive", "--all", "--format", "json"],
    );
    let by_id = |results: &Value, id: &str| -> Value {
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {results}"))
            .clone()
    };
    let r = by_id(&results, &fixed_id);
    assert_eq!(
        (r["result"].as_str(), r["new"].as_u64()),
        (Some("removed"), Some(1)),
        "{r}"
    );
    let r = by_id(&results, &callback_id);
    assert_eq!(
        (r["result"].as_str(), r["new"].as_u64()),
        (Some("removed"), Some(1)),
        "{r}"
    );
    let r = by_id(&results, &bad_id);
    assert_eq!(r["result"], "kept");
    assert!(r["reason"].as_str().unwrap().contains(&bad_reason), "{r}");
    let r = by_id(&results, &conflict_id);
    assert_eq!(
        (r["result"].as_str(), r["conflict"].as_u64()),
        (Some("kept"), Some(1)),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap().contains("conflicts"), "{r}");

    let day = ledger.sim_usage(sim, "2024-11-03").await.unwrap().unwrap();
    assert_eq!((day.usage, day.usage_events), (volume(301, 4_001), 2));
    assert!(ledger.callback_exists("kore", token).await.unwrap());
    let mut left: Vec<String> = ledger
        .quarantined()
        .list(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    left.sort();
    let mut kept = vec![bad_id.clone(), conflict_id.clone()];
    kept.sort();
    assert_eq!(
        left, kept,
        "only what still fails stays, and no copies were added"
    );

    // Again: nothing changes.
    let table = ok(&ledger, &["quarantine", "redrive", "--all"]);
    assert!(table.contains("kept"), "{table}");
    assert!(!table.contains("removed"), "{table}");
    let again = ok_json(
        &ledger,
        &["quarantine", "redrive", "--all", "--format", "json"],
    );
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "kept" && r["new"] == 0),
        "{again}"
    );
    let day_again = ledger.sim_usage(sim, "2024-11-03").await.unwrap().unwrap();
    assert_eq!(day_again, day);
    assert_eq!(ledger.quarantined().list(100).await.unwrap().len(), 2);
    // The removed entry is gone: naming it is a failure, in one sentence.
    let run = kore_usage(&ledger, &["quarantine", "redrive", &fixed_id]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_one_sentence(&run.stderr);
    assert_eq!(
        ledger.sim_usage(sim, "2024-11-03").await.unwrap().unwrap(),
        day
    );
}

#[tokio::test]
async fn sessions_gaps_lists_the_session_with_a_missing_window_and_not_the_complete_one() {
    let ledger = fresh_ledger("cli-sessions").await;
    let sim = "HS00000000000000000000000sessions";
    // Three windows of 100 bytes; cumulative totals 100, 200, 300. The gappy session
    // misses its second window.
    let window = |n: u64, session: &str| {
        let mut e = SampleEvent::usage_update(
            &format!("EZ{session}{n}"),
            sim,
            &format!("2024-11-03T10:0{n}:00Z"),
            (40, 60),
        );
        e.session_sid = session.into();
        e.cumulative = Some((40 * n, 60 * n));
        if n == 3 {
            e.suffix = "data-session.ended";
        }
        e
    };
    let mut inputs = Vec::new();
    for n in 1..=3 {
        inputs.push((parse_item(&window(n, "PIcomplete").kore_json()), kinesis(n)));
        if n != 2 {
            inputs.push((
                parse_item(&window(n, "PIgappy").kore_json()),
                kinesis(10 + n),
            ));
        }
    }
    ledger.record_batch(&inputs, None).await;

    let gaps = ok_json(
        &ledger,
        &["sessions", "--sim", sim, "--gaps", "--format", "json"],
    );
    let gaps = gaps.as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["session_sid"], "PIgappy");
    assert_eq!(gaps[0]["windows_received"], 2);
    assert_eq!(gaps[0]["received"]["total"], 200);
    assert_eq!(gaps[0]["cumulative"]["total"], 300);
    assert_eq!(gaps[0]["missing_bytes"], 100);
    assert_eq!(gaps[0]["has_gap"], true);

    let all = ok_json(&ledger, &["sessions", "--sim", sim, "--format", "json"]);
    let sids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids.len(), 2);
    assert!(sids.contains(&"PIcomplete") && sids.contains(&"PIgappy"));

    let table = ok(&ledger, &["sessions", "--sim", sim, "--gaps"]);
    assert!(table.contains("PIgappy"), "{table}");
    assert!(table.contains("yes (100 B missing)"), "{table}");
    assert!(!table.contains("PIcomplete"), "{table}");
}

#[test]
fn wrong_usage_exits_2() {
    let table = Some("any-table");
    for args in [
        &[][..],
        &["report"][..],
        &["report", "--period", "2024-13"][..],
        &["report", "--period", "2024-11-31"][..],
        &["report", "--period", "2024-1"][..],
        &["report", "--period", "2024-11", "--format", "xml"][..],
        &["sessions"][..],
        &["sessions", "--sim", "HS1", "--format", "csv"][..],
        &[
            "reconcile",
            "--from",
            "yesterday",
            "--to",
            "2024-11-01T00:00:00Z",
        ][..],
        &[
            "reconcile",
            "--from",
            "2024-11-02T00:00:00Z",
            "--to",
            "2024-11-01T00:00:00Z",
        ][..],
        &["replay"][..],
        &["replay", "x.jsonl", "--batch-size", "0"][..],
        &["quarantine"][..],
        &["quarantine", "show"][..],
        // A grace beyond the calendar is refused, not taken as none.
        &[
            "close",
            "--start",
            "2024-11-01T00:00:00Z",
            "--end",
            "2024-12-01T00:00:00Z",
            "--grace",
            "100000000000h",
        ][..],
        &["frobnicate"][..],
    ] {
        let run = kore_usage_with(table, args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    // No table: neither --table nor TABLE_NAME.
    let run = kore_usage_with(None, &["report", "--period", "2024-11"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("TABLE_NAME"), "{}", run.stderr);
    // TABLE_NAME alone is enough to get past parsing (and fails later, for want of a table).
    let run = kore_usage_with(
        None,
        &["quarantine", "show", "x"],
        &[("TABLE_NAME", "t-cli-does-not-exist")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
}

#[test]
fn help_has_examples_and_version_is_printed() {
    let run = kore_usage_with(None, &["--version"], &[]);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout.trim(),
        format!("kore-usage {}", env!("CARGO_PKG_VERSION"))
    );
    for command in [
        &["--help"][..],
        &["report", "--help"][..],
        &["sessions", "--help"][..],
        &["reconcile", "--help"][..],
        &["replay", "--help"][..],
        &["quarantine", "redrive", "--help"][..],
    ] {
        let run = kore_usage_with(None, command, &[]);
        assert_eq!(run.code, 0, "{command:?}");
        assert!(
            run.stdout.contains("Examples:"),
            "{command:?}: {}",
            run.stdout
        );
    }
}

#[tokio::test]
async fn failures_exit_1_with_one_plain_sentence() {
    // The table does not exist.
    let run = kore_usage_with(
        Some("t-cli-no-such-table"),
        &["report", "--period", "2024-11"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_one_sentence(&run.stderr);
    assert!(
        run.stderr
            .contains("the table `t-cli-no-such-table` does not exist"),
        "{}",
        run.stderr
    );

    // Nothing listens at the endpoint.
    let run = kore_usage_with(
        Some("t-cli-any"),
        &["sessions", "--sim", "HS1"],
        &[("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_one_sentence(&run.stderr);
    assert!(
        run.stderr
            .contains("cannot reach DynamoDB at http://127.0.0.1:9"),
        "{}",
        run.stderr
    );

    // An archive that cannot be read; an unknown quarantine id.
    let ledger = fresh_ledger("cli-failures").await;
    let run = kore_usage(&ledger, &["replay", "/nonexistent/archive.jsonl"]);
    assert_eq!(run.code, 1);
    assert_one_sentence(&run.stderr);
    assert!(
        run.stderr.contains("/nonexistent/archive.jsonl"),
        "{}",
        run.stderr
    );
    let run = kore_usage(&ledger, &["quarantine", "show", "0123abcd"]);
    assert_eq!(run.code, 1);
    assert_one_sentence(&run.stderr);
    assert!(run.stderr.contains("0123abcd"), "{}", run.stderr);
}

/// One HTTP/1.1 message (head and body, by `content-length`), or `None` at end of stream.
fn read_http_message(reader: &mut impl BufRead) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut length = 0;
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(value) = text.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == b"\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

/// A loopback proxy in front of DynamoDB Local for a `kore-usage` process: requests whose
/// body holds `marker` get DynamoDB's `ThrottlingException` (a transaction: cancelled for the
/// marked items), every other request is forwarded. Returns the proxy's endpoint URL. It serves until the test process ends.
fn throttling_proxy(marker: &'static str) -> String {
    let upstream = dynamodb_endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut writer = client.try_clone()?;
                let mut reader = BufReader::new(client);
                while let Some((head, body)) = read_http_message(&mut reader)? {
                    if body.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                        // In a transaction, only the marked item is throttled, as DynamoDB
                        // throttles a hot item.
                        let transaction =
                            String::from_utf8_lossy(&head).contains(".TransactWriteItems");
                        let reply = if transaction {
                            cancelled_for_marked_items(&body, marker)
                        } else {
                            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#.to_owned()
                        };
                        write!(
                            writer,
                            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        )?;
                        continue;
                    }
                    let mut server = TcpStream::connect(&upstream)?;
                    server.write_all(&head)?;
                    server.write_all(&body)?;
                    let Some((head, body)) = read_http_message(&mut BufReader::new(server))? else {
                        return Ok(());
                    };
                    writer.write_all(&head)?;
                    writer.write_all(&body)?;
                }
                Ok(())
            });
        }
    });
    url
}

#[tokio::test]
async fn replay_exits_1_naming_inputs_still_retryable_and_a_second_run_stores_them_once() {
    let ledger = fresh_ledger("cli-replay-retry").await;
    // A SIM's events are committed together: the throttled one is its SIM's only event.
    let sim = "HS000000000000000000000000000retry";
    let throttled_sim = "HS00000000000000000000000throttled";
    let events: Vec<SampleEvent> = (1..=5u64)
        .map(|n| {
            let (sid, sim) = if n == 3 {
                ("EZthrottledthrottledthrottled003".to_owned(), throttled_sim)
            } else {
                (format!("EZretry{n:025}"), sim)
            };
            let at = format!("2024-11-03T10:0{n}:00Z");
            SampleEvent::usage_update(&sid, sim, &at, (n, 100 * n))
        })
        .collect();
    let mut file = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    for e in &events {
        writeln!(file, "{}", e.kore_json()).unwrap();
    }
    file.flush().unwrap();
    let path = file.path().to_str().unwrap();

    let proxy = throttling_proxy("EZthrottledthrottledthrottled003");
    let run = kore_usage_with(
        Some(ledger.table_name()),
        &["replay", path, "--format", "json"],
        &[("AWS_ENDPOINT_URL_DYNAMODB", proxy.as_str())],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let total = &report["total"];
    assert_eq!(
        (total["new"].as_u64(), total["retry"].as_u64()),
        (Some(4), Some(1)),
        "{report}"
    );
    assert_eq!(total["retries"][0]["source"], format!("{path}:3"));
    assert_one_sentence(&run.stderr);
    assert!(run.stderr.contains(&format!("{path}:3")), "{}", run.stderr);
    assert!(run.stderr.contains("Throttling"), "{}", run.stderr);

    let report = ok_json(&ledger, &["replay", path, "--format", "json"]);
    let total = &report["total"];
    assert_eq!(
        (
            total["new"].as_u64(),
            total["duplicate"].as_u64(),
            total["retry"].as_u64()
        ),
        (Some(1), Some(4), Some(0)),
        "{report}"
    );
    let day = ledger.sim_usage(sim, "2024-11-03").await.unwrap().unwrap();
    assert_eq!((day.usage, day.usage_events), (volume(12, 1_200), 4));
    let day = ledger
        .sim_usage(throttled_sim, "2024-11-03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((day.usage, day.usage_events), (volume(3, 300), 1));
}

/// The networks SIMs roam over: SID, name, country. Five networks in three countries.
const NETWORKS: [(&str, &str, &str); 5] = [
    ("HWde000000000000000000000000000001", "Telekom.de", "DE"),
    ("HWde000000000000000000000000000002", "Vodafone.de", "DE"),
    ("HWfr000000000000000000000000000001", "Orange F", "FR"),
    ("HWus000000000000000000000000000001", "AT&T", "US"),
    ("HWus000000000000000000000000000002", "T-Mobile", "US"),
];

/// 200 SIMs in two accounts, roaming over five networks in three countries (and sometimes
/// none), a fifth of them moving fleet at 2024-11-01T00:30Z, with usage windows of up to 15
/// minutes around the end of October: windows cross hours, the day and the month.
fn roaming_fleet() -> Vec<SampleEvent> {
    let mut rng = fastrand::Rng::with_seed(20_241_101);
    let start = Utc.with_ymd_and_hms(2024, 10, 31, 20, 0, 0).unwrap();
    let moved_at = Utc.with_ymd_and_hms(2024, 11, 1, 0, 30, 0).unwrap();
    let mut events = Vec::new();
    for sim in 0..200usize {
        let account = if sim < 100 { ACCOUNT_A } else { ACCOUNT_B };
        let fleet = |moved: bool| format!("HF{:032}", sim % 3 + usize::from(moved));
        for window in 0..12usize {
            // Ends between 20:00 on the 31st and 04:00 on the 1st; a few outside the queries.
            let end = start + Duration::seconds(rng.i64(0..8 * 3600));
            let mut e = SampleEvent::usage_update(
                &format!("EZ{sim:04}{window:04}{:024x}", rng.u64(..)),
                &format!("HS{sim:032}"),
                &end.to_rfc3339(),
                (rng.u64(0..40_000), rng.u64(0..400_000)),
            );
            e.window_start = Some(end - Duration::minutes(15));
            // Sent up to ten minutes after the window ended: sometimes in the next hour,
            // day or month, which must not move the usage.
            e.sent_at = Some(end + Duration::seconds(rng.i64(0..600)));
            e.account_sid = account.into();
            let moves = sim % 5 == 0;
            e.fleet_sid = fleet(moves && end >= moved_at);
            e.network = match rng.usize(0..12) {
                0 => None,
                n => {
                    let (sid, name, country) = NETWORKS[n % NETWORKS.len()];
                    Some((sid.into(), name.into(), country.into()))
                }
            };
            e.sim_unique_name = Some(format!("meter-{sim:03}"));
            e.session_sid = format!("PI{sim:032}");
            if window == 11 {
                e.suffix = "data-session.ended";
            }
            events.push(e);
        }
    }
    events
}

/// (bucket start, account, group value)
type RecordKey = (String, String, String);
/// (bucket end, upload, download, events, group fields)
type RecordSum = (String, u64, u64, u64, Value);
/// A usage filter's arguments, the group it is tried with, and which events it keeps.
type FilterCase<'a> = (
    Vec<&'a str>,
    &'a str,
    Box<dyn Fn(&SampleEvent) -> bool + 'a>,
);

/// What `kore-usage usage --format json` must print, computed from the generated events
/// alone: booked in the UTC hour each window ended, to what the event named.
fn expected_records(
    events: &[SampleEvent],
    (start, end): (&str, &str),
    granularity: &str,
    group: Option<&str>,
    filter: &dyn Fn(&SampleEvent) -> bool,
) -> Value {
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&Utc)
    };
    let (start, end) = (at(start), at(end));
    let z = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut records: BTreeMap<RecordKey, RecordSum> = BTreeMap::new();
    for e in events.iter().filter(|e| filter(e)) {
        let hour = e.time
            - Duration::seconds(i64::from(
                chrono::Timelike::num_seconds_from_midnight(&e.time) % 3600,
            ));
        let hour = hour - Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&hour)));
        if hour < start || hour >= end {
            continue;
        }
        let (bucket_start, bucket_end) = match granularity {
            "hour" => (hour, hour + Duration::hours(1)),
            "day" => {
                let day = Utc.from_utc_datetime(&hour.date_naive().and_hms_opt(0, 0, 0).unwrap());
                (day, day + Duration::days(1))
            }
            _ => (start, end),
        };
        let network = e.network.clone();
        let (value, fields) = match group {
            None => (String::new(), json!({})),
            Some("sim") => (
                e.sim_sid.clone(),
                json!({"sim_sid": e.sim_sid, "sim_iccid": "89883070000012345678", "sim_unique_name": e.sim_unique_name}),
            ),
            Some("fleet") => (e.fleet_sid.clone(), json!({"fleet_sid": e.fleet_sid})),
            Some("network") => (
                network.as_ref().map(|n| n.0.clone()).unwrap_or_default(),
                json!({"network_sid": network.as_ref().map(|n| &n.0), "network_name": network.as_ref().map(|n| &n.1)}),
            ),
            Some(_) => (
                network.as_ref().map(|n| n.2.clone()).unwrap_or_default(),
                json!({"iso_country": network.as_ref().map(|n| &n.2)}),
            ),
        };
        let entry = records
            .entry((z(bucket_start), e.account_sid.clone(), value))
            .or_insert_with(|| (z(bucket_end), 0, 0, 0, fields));
        entry.1 += e.window.0;
        entry.2 += e.window.1;
        entry.3 += 1;
    }
    Value::Array(
        records
            .into_iter()
            .map(
                |((start_time, account, _), (end_time, up, down, n, fields))| {
                    let mut record = json!({
                        "account_sid": account,
                        "period": {"start_time": start_time, "end_time": end_time},
                        "data_upload": up,
                        "data_download": down,
                        "data_total": up + down,
                        "usage_events": n,
                    });
                    if let (Value::Object(record), Value::Object(fields)) = (&mut record, fields) {
                        record.extend(fields);
                    }
                    record
                },
            )
            .collect(),
    )
}

#[tokio::test]
async fn usage_records_equal_an_independent_computation_for_every_granularity_group_and_filter() {
    let ledger = fresh_ledger("cli-usage").await;
    let events = roaming_fleet();
    // SIM 5 moves fleet mid-range (every fifth SIM does).
    let moving_sim = format!("HS{:032}", 5);
    // Every event once or twice through each provider, shuffled, in batches of 100.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut deliveries = Vec::new();
    for (i, e) in events.iter().enumerate() {
        for copy in 0..rng.usize(1..=3) {
            deliveries.push(if rng.bool() {
                (e.kore_json(), webhook(&format!("usage-{i}-{copy}")))
            } else {
                (e.twilio_json(), kinesis(i as u64 * 10 + copy as u64))
            });
        }
    }
    rng.shuffle(&mut deliveries);
    for batch in deliveries.chunks(100) {
        store_deliveries(&ledger, batch).await;
    }

    let hours = ("2024-10-31T22:00:00Z", "2024-11-01T02:00:00Z");
    let days = ("2024-10-31T00:00:00Z", "2024-11-02T00:00:00Z");
    let everything: &dyn Fn(&SampleEvent) -> bool = &|_| true;
    let mut checked = 0;
    for granularity in ["hour", "day", "all"] {
        let range = if granularity == "day" { days } else { hours };
        for group in [
            None,
            Some("sim"),
            Some("fleet"),
            Some("network"),
            Some("iso-country"),
        ] {
            let mut args = vec![
                "usage",
                "--start",
                range.0,
                "--end",
                range.1,
                "--granularity",
                granularity,
                "--format",
                "json",
            ];
            if let Some(group) = group {
                args.extend(["--group", group]);
            }
            let printed = ok_json(&ledger, &args);
            let expected = expected_records(&events, range, granularity, group, everything);
            assert!(expected.as_array().unwrap().len() > 1, "{args:?}");
            assert_eq!(printed, expected, "{args:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 15);

    // Every filter, alone and combined.
    let filters: [FilterCase<'_>; 6] = [
        (
            vec!["--account", ACCOUNT_B],
            "sim",
            Box::new(|e| e.account_sid == ACCOUNT_B),
        ),
        (
            vec!["--sim", &moving_sim],
            "fleet",
            Box::new(|e| e.sim_sid == moving_sim),
        ),
        (
            vec!["--fleet", "HF00000000000000000000000000000001"],
            "sim",
            Box::new(|e| e.fleet_sid == "HF00000000000000000000000000000001"),
        ),
        (
            vec!["--network", NETWORKS[0].0],
            "iso-country",
            Box::new(|e| e.network.as_ref().is_some_and(|n| n.0 == NETWORKS[0].0)),
        ),
        (
            vec!["--iso-country", "US"],
            "network",
            Box::new(|e| e.network.as_ref().is_some_and(|n| n.2 == "US")),
        ),
        (
            vec!["--account", ACCOUNT_A, "--iso-country", "DE"],
            "fleet",
            Box::new(|e| {
                e.account_sid == ACCOUNT_A && e.network.as_ref().is_some_and(|n| n.2 == "DE")
            }),
        ),
    ];
    for (filter_args, group, filter) in &filters {
        for granularity in ["hour", "all"] {
            let mut args = vec![
                "usage",
                "--start",
                hours.0,
                "--end",
                hours.1,
                "--granularity",
                granularity,
                "--group",
                group,
                "--format",
                "json",
            ];
            args.extend(filter_args.iter().copied());
            let printed = ok_json(&ledger, &args);
            let expected =
                expected_records(&events, hours, granularity, Some(group), filter.as_ref());
            assert!(!expected.as_array().unwrap().is_empty(), "{args:?}");
            assert_eq!(printed, expected, "{args:?}");
        }
    }

    // The table and the CSV carry the same numbers; the table ends with the total.
    let args = [
        "usage",
        "--start",
        hours.0,
        "--end",
        hours.1,
        "--group",
        "iso-country",
    ];
    let json_records = ok_json(&ledger, &[&args[..], &["--format", "json"]].concat());
    let csv = ok(&ledger, &[&args[..], &["--format", "csv"]].concat());
    let table = ok(&ledger, &args);
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next(),
        Some(
            "account_sid,start_time,end_time,iso_country,data_upload,data_download,data_total,usage_events"
        )
    );
    let mut total = 0;
    for (line, record) in csv_lines.zip(json_records.as_array().unwrap()) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(
            fields[4..]
                .iter()
                .map(|f| f.parse::<u64>().unwrap())
                .collect::<Vec<_>>(),
            ["data_upload", "data_download", "data_total", "usage_events"]
                .map(|k| record[k].as_u64().unwrap())
        );
        total += record["data_total"].as_u64().unwrap();
        assert!(
            table.contains(&format!("  {}  ", record["data_total"])),
            "{table}"
        );
    }
    let last = table.lines().last().unwrap();
    assert!(last.starts_with("TOTAL ("), "{table}");
    assert!(cells(last).contains(&total.to_string().as_str()), "{last}");

    // The audit: nothing differs; one rollup altered by hand is found, alone, and restored.
    let check = [
        "rebuild", "--start", days.0, "--end", days.1, "--check", "--format", "json",
    ];
    let report = ok_json(&ledger, &check);
    assert_eq!(report["differences"], json!([]), "{report}");
    assert_eq!(
        report["usage_events"].as_u64(),
        Some(expected_events(&events, days))
    );

    let altered_sim = "HS00000000000000000000000000000042";
    let day = "2024-11-01";
    let partition = kore_ingest_aws::ledger::keys::usage_pk(
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap(),
        kore_ingest_aws::ledger::keys::usage_shard(altered_sim),
    );
    let rollups = ledger
        .table()
        .client()
        .query()
        .table_name(ledger.table_name())
        .key_condition_expression("pk = :pk AND begins_with(sk, :sim)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(partition.clone()),
        )
        .expression_attribute_values(
            ":sim",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{altered_sim}#")),
        )
        .send()
        .await
        .unwrap();
    let rollup = &rollups.items()[0];
    let hour_attr = rollup
        .keys()
        .find(|k| k.starts_with('t') && k.len() == 3)
        .unwrap()
        .clone();
    ledger
        .table()
        .client()
        .update_item()
        .table_name(ledger.table_name())
        .key("pk", rollup["pk"].clone())
        .key("sk", rollup["sk"].clone())
        .update_expression("ADD #t :extra")
        .expression_attribute_names("#t", &hour_attr)
        .expression_attribute_values(
            ":extra",
            aws_sdk_dynamodb::types::AttributeValue::N("1000".into()),
        )
        .send()
        .await
        .unwrap();
    let run = kore_usage(&ledger, &check);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let differences = report["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{report}");
    assert_eq!(differences[0]["sim_sid"], altered_sim);
    assert_eq!(differences[0]["day"], day);
    assert_eq!(
        differences[0]["hours"],
        json!([hour_attr[1..].parse::<u32>().unwrap()])
    );
    assert_eq!(
        differences[0]["stored_total"].as_u64().unwrap(),
        differences[0]["expected_total"].as_u64().unwrap() + 1000
    );

    let repaired = ok_json(
        &ledger,
        &[
            "rebuild", "--start", days.0, "--end", days.1, "--format", "json",
        ],
    );
    assert_eq!(repaired["rewritten"].as_u64(), Some(1), "{repaired}");
    assert_eq!(ok_json(&ledger, &check)["differences"], json!([]));
    let args = [
        "usage",
        "--start",
        days.0,
        "--end",
        days.1,
        "--granularity",
        "day",
        "--group",
        "sim",
        "--format",
        "json",
    ];
    assert_eq!(
        ok_json(&ledger, &args),
        expected_records(&events, days, "day", Some("sim"), everything)
    );
}

/// Usage events booked in `[start, end)`.
fn expected_events(events: &[SampleEvent], (start, end): (&str, &str)) -> u64 {
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&Utc)
    };
    let (start, end) = (at(start), at(end));
    events
        .iter()
        .filter(|e| e.time >= start && e.time < end)
        .count() as u64
}

/// Issue 13, item 13: `quarantine redrive` without ids used to process and delete the whole
/// quarantine. It now needs `--all`, and `--dry-run` shows what would happen without
/// writing anything.
#[tokio::test]
async fn redrive_of_everything_needs_all_and_dry_run_changes_nothing() {
    let ledger = fresh_ledger("cli-redrive-all").await;
    let sim = "HS00000000000000000000000redriveall";
    let event = SampleEvent::usage_update(
        "EZ0000000000000000000000redriveall",
        sim,
        "2024-11-03T10:00:00Z",
        (5, 6),
    );
    let payload = event.kore_json();
    let id = ledger
        .quarantine(QuarantineEntry {
            kind: QuarantineKind::Event,
            payload: payload.as_bytes(),
            reason: "a parser bug, fixed since".into(),
            delivery: &kinesis(1),
            related_event: None,
        })
        .await
        .unwrap();

    let run = kore_usage(&ledger, &["quarantine", "redrive"]);
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(run.stderr.contains("--all"), "{}", run.stderr);
    assert!(ledger.quarantined().get(&id).await.unwrap().is_some());
    assert_eq!(ledger.sim_usage(sim, "2024-11-03").await.unwrap(), None);
    let run = kore_usage(&ledger, &["quarantine", "redrive", "--all", &id]);
    assert_eq!(run.code, 2, "ids and --all together: {}", run.stderr);

    for args in [
        &[
            "quarantine",
            "redrive",
            "--all",
            "--dry-run",
            "--format",
            "json",
        ][..],
        &[
            "quarantine",
            "redrive",
            "--dry-run",
            "--format",
            "json",
            id.as_str(),
        ][..],
    ] {
        let planned = ok_json(&ledger, args);
        assert_eq!(planned.as_array().unwrap().len(), 1, "{planned}");
        assert_eq!(planned[0]["id"], id.as_str(), "{planned}");
        assert_eq!(planned[0]["result"], "would-redrive", "{planned}");
        assert_eq!(planned[0]["new"], 0, "{planned}");
    }
    let table = ok(&ledger, &["quarantine", "redrive", "--all", "--dry-run"]);
    assert!(table.contains("would redrive"), "{table}");
    assert!(ledger.quarantined().get(&id).await.unwrap().is_some());
    assert_eq!(ledger.sim_usage(sim, "2024-11-03").await.unwrap(), None);

    let done = ok_json(
        &ledger,
        &["quarantine", "redrive", "--all", "--format", "json"],
    );
    assert_eq!(done[0]["result"], "removed", "{done}");
    assert_eq!(
        ledger
            .sim_usage(sim, "2024-11-03")
            .await
            .unwrap()
            .unwrap()
            .usage_events,
        1
    );
}

/// Issue 13, item 1: payloads as large as the pipeline accepts are quarantined whole, and
/// `quarantine show` gives back exactly the bytes received: a 900 KB binary Kinesis record
/// (through the consumer's handler) and a 900 KB multi-byte text body (through the
/// webhook's), both of which used to fail the quarantine write forever.
#[tokio::test]
async fn quarantine_show_returns_900_kb_payloads_byte_for_byte() {
    use base64::Engine;
    let ledger = fresh_ledger("cli-900kb").await;
    let mut rng = fastrand::Rng::with_seed(9);
    let binary: Vec<u8> = (0..900 * 1024).map(|_| rng.u8(..)).collect();
    let report =
        kinesis_consumer::process_batch(&ledger, kinesis_event(&[(1, binary.clone())]), None)
            .await
            .unwrap();
    assert!(
        report.response.batch_item_failures.is_empty(),
        "the shard must not stall"
    );
    let binary_id =
        kore_ingest_core::quarantine::quarantine_id(&QuarantineKind::Event, "kinesis", &binary);

    let mut text = String::from("{\"specversion\": \"1.0\", \"note\": \"");
    while text.len() < 900 * 1024 {
        text.push_str("ÄÖÜ äöü ß — 日本語 😀 ");
    }
    let secret = "cli-900kb-secret";
    let hook = webhook::Webhook {
        ledger: ledger.clone(),
        config: webhook::WebhookConfig::from_env(&Env::from_fn(move |name| match name {
            "KORE_WEBHOOK_SECRETS" => Some(secret.into()),
            "WEBHOOK_PUBLIC_URL" => Some("https://hooks.example.com".into()),
            "TIME_BUDGET_MS" => Some("30000".into()),
            _ => None,
        }))
        .unwrap(),
    };
    let signature = kore_ingest_core::signature::kore_signature(
        secret.as_bytes(),
        "POST",
        "https://hooks.example.com/events",
        text.as_bytes(),
    );
    let request = function_url_request(
        "POST",
        "/events",
        "",
        &[
            ("Content-Type", "application/json"),
            ("Kore-Signature", &signature),
        ],
        Some(text.as_bytes()),
    );
    let mut metrics = kore_ingest_core::metrics::InvocationMetrics::new("webhook");
    let response = hook.respond(&request, "req-900kb", &mut metrics).await;
    assert_eq!(response.status_code, 400, "{:?}", response.body);
    let text_id = kore_ingest_core::quarantine::quarantine_id(
        &QuarantineKind::Event,
        "webhook",
        text.as_bytes(),
    );

    let shown = ok_json(
        &ledger,
        &["quarantine", "show", &binary_id, "--format", "json"],
    );
    assert_eq!(shown["payload_encoding"], "base64");
    assert_eq!(shown["truncated"], false);
    assert_eq!(shown["payload_size"], binary.len());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(shown["payload"].as_str().unwrap())
        .unwrap();
    assert!(decoded == binary, "binary payload differs");

    let shown = ok_json(
        &ledger,
        &["quarantine", "show", &text_id, "--format", "json"],
    );
    assert_eq!(shown["payload_encoding"], "text");
    assert_eq!(shown["truncated"], false);
    assert!(
        shown["payload"].as_str().unwrap() == text,
        "text payload differs"
    );
}

/// Usage events for `sims` SIMs (two accounts) on both sides of a month's end, each with its
/// session's running totals: `per_sim` windows of 15 minutes ending from `first_end` on.
fn month_end_traffic(
    prefix: &str,
    sims: usize,
    per_sim: usize,
    first_end: &str,
) -> Vec<SampleEvent> {
    let first = chrono::DateTime::parse_from_rfc3339(first_end)
        .unwrap()
        .with_timezone(&Utc);
    let mut events = Vec::new();
    for sim in 0..sims {
        let (mut up_sum, mut down_sum) = (0, 0);
        for window in 0..per_sim {
            let end = first + Duration::minutes(15 * window as i64 + sim as i64 % 7);
            let window_bytes = (100 + sim as u64 * 10 + window as u64, 1_000 + window as u64);
            up_sum += window_bytes.0;
            down_sum += window_bytes.1;
            let mut e = SampleEvent::usage_update(
                &format!("EZ{prefix}{sim:04}{window:04}{:020}", 0),
                &format!("HS{prefix}{sim:030}"),
                &end.to_rfc3339(),
                window_bytes,
            );
            e.window_start = Some(end - Duration::minutes(15));
            e.account_sid = if sim % 2 == 0 { ACCOUNT_A } else { ACCOUNT_B }.into();
            e.session_sid = format!("PI{prefix}{sim:030}");
            e.cumulative = Some((up_sum, down_sum));
            events.push(e);
        }
    }
    events
}

async fn deliver_both_providers(ledger: &UsageLedger, events: &[SampleEvent], tag: &str) {
    let mut deliveries = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let kore = (e.kore_json(), webhook(&format!("{tag}-{i}")));
        // Twilio's copy (data pretty-printed in a string) first for every other event.
        let twilio = (e.twilio_json(), kinesis(i as u64));
        if i % 2 == 0 {
            deliveries.extend([kore, twilio]);
        } else {
            deliveries.extend([twilio, kore]);
        }
    }
    for batch in deliveries.chunks(100) {
        store_deliveries(ledger, batch).await;
    }
}

#[tokio::test]
async fn a_closed_period_stays_as_invoiced_while_late_usage_becomes_adjustments() {
    let ledger = fresh_ledger("cli-close").await;
    let (start, end) = ("2024-11-01T00:00:00Z", "2024-11-02T00:00:00Z");
    // Usage on the day before, the day itself and the day after.
    let on_time = month_end_traffic("ct", 12, 100, "2024-10-31T12:00:00Z");
    deliver_both_providers(&ledger, &on_time, "on-time").await;

    let close_args = [
        "close", "--start", start, "--end", end, "--force", "--settle", "0s", "--format", "json",
    ];
    let closed = ok_json(&ledger, &close_args);
    assert_eq!(closed["state"], "closed", "{closed}");
    assert!(closed["lines"].as_u64().unwrap() >= 12, "{closed}");

    // Twice, or overlapping, is refused, saying when it was closed.
    let again = kore_usage(&ledger, &close_args);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert_one_sentence(&again.stderr);
    assert!(
        again.stderr.contains("already closed at 20"),
        "{}",
        again.stderr
    );
    let overlapping = kore_usage(
        &ledger,
        &[
            "close",
            "--start",
            "2024-10-31T00:00:00Z",
            "--end",
            "2024-11-02T00:00:00Z",
            "--account",
            ACCOUNT_A,
            "--force",
            "--settle",
            "0s",
        ],
    );
    assert_eq!(overlapping.code, 1, "{}", overlapping.stderr);
    assert!(
        overlapping.stderr.contains("overlaps"),
        "{}",
        overlapping.stderr
    );
    // Before its end plus the grace, only with --force.
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let recent = [
        "close",
        "--start",
        &z(today - Duration::days(1)),
        "--end",
        &z(today),
        "--settle",
        "0s",
    ];
    let early = kore_usage(&ledger, &recent);
    assert_eq!(early.code, 1, "{}", early.stderr);
    assert!(early.stderr.contains("--force"), "{}", early.stderr);

    let invoice_args = [
        "usage", "--start", start, "--end", end, "--closed", "--group", "sim", "--format", "json",
    ];
    let invoice = ok(&ledger, &invoice_args);

    // Late usage: new windows booked into the closed day from both providers, and the
    // on-time events once more (duplicates, never adjustments).
    let late = month_end_traffic("lt", 5, 3, "2024-11-01T20:00:00Z");
    let late_ledger = UsageLedger::new(
        local_client(),
        kore_ingest_aws::ledger::LedgerConfig::new(ledger.table_name()),
    );
    deliver_both_providers(&late_ledger, &late, "late").await;
    deliver_both_providers(&late_ledger, &on_time[..200], "again").await;

    // The invoice comes out byte for byte as it did.
    assert_eq!(ok(&ledger, &invoice_args), invoice);
    // The adjustments are exactly the late events.
    let adjustments = ok_json(
        &ledger,
        &[
            "adjustments",
            "--start",
            start,
            "--end",
            end,
            "--format",
            "json",
        ],
    );
    let mut listed: Vec<&str> = adjustments
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["event_sid"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected: Vec<&str> = late.iter().map(|e| e.event_sid.as_str()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Live usage = snapshot + adjustments, SIM by SIM.
    let live = ok_json(
        &ledger,
        &[
            "usage", "--start", start, "--end", end, "--group", "sim", "--format", "json",
        ],
    );
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let invoice: Value = serde_json::from_str(&invoice).unwrap();
    for record in invoice.as_array().unwrap() {
        *sums
            .entry(record["sim_sid"].as_str().unwrap().to_owned())
            .or_default() += record["data_total"].as_u64().unwrap();
    }
    for adjustment in adjustments.as_array().unwrap() {
        *sums
            .entry(adjustment["sim_sid"].as_str().unwrap().to_owned())
            .or_default() += adjustment["data_total"].as_u64().unwrap();
    }
    let live_sums: BTreeMap<String, u64> = live
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sim_sid"].as_str().unwrap().to_owned(),
                r["data_total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(live_sums, sums);
    let verify = ["verify-close", "--start", start, "--end", end];
    assert!(ok(&ledger, &verify).contains("holds"));

    // One snapshot part altered by hand: the hash no longer holds.
    use aws_sdk_dynamodb::types::AttributeValue;
    let part_key = [
        ("pk", AttributeValue::S(format!("CLOSE#*#{start}#{end}"))),
        ("sk", AttributeValue::S("PART#00000".into())),
    ];
    let mut get = ledger
        .table()
        .client()
        .get_item()
        .table_name(ledger.table_name());
    for (name, value) in part_key.clone() {
        get = get.key(name, value);
    }
    let mut part = get.send().await.unwrap().item.unwrap();
    let Some(AttributeValue::B(deflated)) = part.get("z") else {
        panic!("a deflated part");
    };
    let text =
        String::from_utf8(miniz_oxide::inflate::decompress_to_vec(deflated.as_ref()).unwrap())
            .unwrap();
    // One more byte uploaded on the first line.
    let first_line_end = text.find('\n').unwrap();
    let mut fields: Vec<String> = text[..first_line_end]
        .split('\t')
        .map(str::to_owned)
        .collect();
    fields[5] = (fields[5].parse::<u64>().unwrap() + 1).to_string();
    let altered = fields.join("\t") + &text[first_line_end..];
    assert_ne!(altered, text);
    part.insert(
        "z".into(),
        AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
            miniz_oxide::deflate::compress_to_vec(altered.as_bytes(), 6),
        )),
    );
    ledger
        .table()
        .client()
        .put_item()
        .table_name(ledger.table_name())
        .set_item(Some(part))
        .send()
        .await
        .unwrap();
    let failed = kore_usage(&ledger, &verify);
    assert_eq!(failed.code, 1, "{}", failed.stdout);
    assert!(failed.stdout.contains("hashes to"), "{}", failed.stdout);
}

fn z(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[tokio::test]
async fn evidence_totals_equal_usage_for_fifty_sims_across_a_month_boundary() {
    let ledger = fresh_ledger("cli-evidence").await;
    let events = month_end_traffic("ev", 50, 12, "2024-10-31T22:00:00Z");
    deliver_both_providers(&ledger, &events, "ev").await;
    let (start, end) = ("2024-10-31T23:00:00Z", "2024-11-01T01:00:00Z");
    let usage = ok_json(
        &ledger,
        &[
            "usage", "--start", start, "--end", end, "--group", "sim", "--format", "json",
        ],
    );
    let by_sim: BTreeMap<&str, (u64, u64)> = usage
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sim_sid"].as_str().unwrap(),
                (
                    r["data_total"].as_u64().unwrap(),
                    r["usage_events"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(by_sim.len(), 50);
    for (sim, (total, count)) in &by_sim {
        let evidence = ok_json(
            &ledger,
            &["evidence", "--sim", sim, "--start", start, "--end", end],
        );
        assert_eq!(
            evidence["total"]["data_total"].as_u64(),
            Some(*total),
            "{sim}"
        );
        assert_eq!(
            evidence["total"]["usage_events"].as_u64(),
            Some(*count),
            "{sim}"
        );
        let rows = evidence["events"].as_array().unwrap();
        assert_eq!(rows.len() as u64, *count);
        let first = &rows[0];
        assert_eq!(
            first["deliveries"].as_array().unwrap().len(),
            2,
            "both providers: {first}"
        );
        assert_eq!(
            first["data_session_sid"]
                .as_str()
                .map(|s| s.starts_with("PIev")),
            Some(true)
        );
        assert_eq!(first["data_sha256"].as_str().map(str::len), Some(64));
    }
    // The independent count: windows ending in the range.
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&Utc)
    };
    let independent: u64 = events
        .iter()
        .filter(|e| e.time >= at(start) && e.time < at(end))
        .map(|e| e.window.0 + e.window.1)
        .sum();
    assert_eq!(by_sim.values().map(|(t, _)| t).sum::<u64>(), independent);
    // The CSV carries the same rows and total.
    let csv = ok(
        &ledger,
        &[
            "evidence",
            "--sim",
            by_sim.keys().next().unwrap(),
            "--start",
            start,
            "--end",
            end,
            "--format",
            "csv",
        ],
    );
    assert!(csv.lines().last().unwrap().starts_with("TOTAL,"), "{csv}");

    // export: every event of the range, one line each.
    let exported = ok(
        &ledger,
        &[
            "export", "--start", start, "--end", end, "--format", "jsonl",
        ],
    );
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let in_range = events
        .iter()
        .filter(|e| e.time >= at(start) && e.time < at(end))
        .count();
    assert_eq!(lines.len(), in_range);
    assert!(lines.iter().all(|l| l["data"]["sim_sid"] == l["sim_sid"]));
}

/// UsageRecords pages built from independent totals, with a lost window, a late settlement
/// and one unexplained difference planted: each is told apart, and only the unexplained one
/// makes the exit code 1.
#[tokio::test]
async fn compare_explains_a_lost_window_and_a_late_settlement_and_flags_the_rest() {
    let ledger = fresh_ledger("cli-compare").await;
    // Two days of windows for six SIMs.
    let events = month_end_traffic("cp", 6, 192, "2024-11-01T00:05:00Z");
    // SIM 1's window 40 never reaches the ledger; its session's running totals show it.
    let lost = events
        .iter()
        .position(|e| e.sim_sid.ends_with("000001") && e.event_sid.contains("0001004"))
        .unwrap();
    let delivered: Vec<SampleEvent> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lost)
        .map(|(_, e)| e.clone())
        .collect();
    deliver_both_providers(&ledger, &delivered, "cp").await;

    // Independent daily totals per SIM, as the provider would report them.
    let mut daily: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in &events {
        *daily
            .entry((e.sim_sid.clone(), e.time.format("%Y-%m-%d").to_string()))
            .or_default() += e.window.0 + e.window.1;
    }
    let lost_day = events[lost].time.format("%Y-%m-%d").to_string();
    let last_day = daily.keys().map(|(_, d)| d.clone()).max().unwrap();
    let settling_sim = format!("HScp{:030}", 2);
    let odd_sim = format!("HScp{:030}", 3);
    let first_day = daily.keys().map(|(_, d)| d.clone()).min().unwrap();
    let unlisted_sim = format!("HScp{:030}", 4);
    let page = |with_unexplained: bool, with_unlisted: bool| {
        let records: Vec<Value> = daily
            .iter()
            .filter(|((sim, day), _)| with_unlisted || !(*sim == unlisted_sim && *day == first_day))
            .map(|((sim, day), total)| {
                let mut total = *total;
                if *sim == settling_sim && *day == last_day {
                    total /= 2; // not settled yet at the provider
                }
                if with_unexplained && *sim == odd_sim && *day == lost_day {
                    total += 12_345;
                }
                let start = format!("{day}T00:00:00Z");
                let end = z(chrono::DateTime::parse_from_rfc3339(&start).unwrap().with_timezone(&Utc) + Duration::days(1));
                json!({
                    "account_sid": ACCOUNT_A, "sim_sid": sim, "fleet_sid": null, "network_sid": null,
                    "iso_country": null, "period": {"start_time": start, "end_time": end},
                    "data_upload": 0, "data_download": 0, "data_total": total,
                    "data_total_billed": 0, "billed_unit": "USD",
                })
            })
            .collect();
        let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        let page = json!({"usage_records": records, "meta": {"page": 0, "page_size": 50, "key": "usage_records"}});
        write!(file, "{page}").unwrap();
        file
    };
    let as_of = format!("{last_day}T12:00:00Z");
    let with_all = page(true, true);
    let run = kore_usage(
        &ledger,
        &[
            "compare",
            "--usage-records",
            with_all.path().to_str().unwrap(),
            "--as-of",
            &as_of,
            "--format",
            "json",
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let causes: BTreeMap<String, &str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                format!(
                    "{} {}",
                    d["sim_sid"].as_str().unwrap(),
                    &d["start_time"].as_str().unwrap()[..10]
                ),
                d["cause"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        causes,
        BTreeMap::from([
            (
                format!("{} {lost_day}", events[lost].sim_sid),
                "session-gap"
            ),
            (format!("{settling_sim} {last_day}"), "settlement"),
            (format!("{odd_sim} {lost_day}"), "unexplained"),
        ]),
        "{report}"
    );
    assert_eq!(report["unexplained"], 1);

    // Issue 21, item 7: the same page given twice is the same records, not twice the usage.
    let without = page(false, true);
    let path = without.path().to_str().unwrap();
    let run = kore_usage(
        &ledger,
        &["compare", "--usage-records", path, path, "--as-of", &as_of],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("0 unexplained"), "{}", run.stdout);

    // Usage the ledger has and the provider does not show is a difference too.
    let unlisted = page(false, false);
    let run = kore_usage(
        &ledger,
        &[
            "compare",
            "--usage-records",
            unlisted.path().to_str().unwrap(),
            "--as-of",
            &as_of,
            // Settled by then: a missing record cannot pass for a late one.
            "--settlement",
            "1h",
            "--format",
            "json",
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let unlisted_bucket = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sim_sid"] == unlisted_sim.as_str())
        .unwrap_or_else(|| panic!("the unlisted bucket is reported: {report}"));
    assert_eq!(
        unlisted_bucket["start_time"],
        format!("{first_day}T00:00:00Z")
    );
    assert_eq!(unlisted_bucket["provider_total"], 0);
    assert_eq!(
        unlisted_bucket["ledger_total"],
        daily[&(unlisted_sim.clone(), first_day.clone())]
    );
    assert_eq!(unlisted_bucket["cause"], "unexplained");

    // Pages fetched for one account say nothing of the others: with ACCOUNT_B's records
    // only, ACCOUNT_A's usage is no difference.
    let of_account_b: Vec<Value> = daily
        .iter()
        .filter(|((sim, _), _)| sim.ends_with(['1', '3', '5']))
        .map(|((sim, day), total)| {
            let start = format!("{day}T00:00:00Z");
            let end = z(chrono::DateTime::parse_from_rfc3339(&start)
                .unwrap()
                .with_timezone(&Utc)
                + Duration::days(1));
            json!({"account_sid": ACCOUNT_B, "sim_sid": sim,
                   "period": {"start_time": start, "end_time": end}, "data_total": total})
        })
        .collect();
    let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    write!(file, "{}", json!({"usage_records": of_account_b})).unwrap();
    let run = kore_usage(
        &ledger,
        &[
            "compare",
            "--usage-records",
            file.path().to_str().unwrap(),
            "--as-of",
            &as_of,
            "--format",
            "json",
        ],
    );
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let sims: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sim_sid"].as_str().unwrap())
        .collect();
    assert!(
        sims.iter().all(|sim| sim.ends_with(['1', '3', '5'])),
        "only ACCOUNT_B's SIMs: {report}"
    );
}

/// Issue 21, item 7: records millions of days apart are refused at once, with the reason,
/// rather than read hour by hour.
#[tokio::test]
async fn compare_refuses_records_too_far_apart_at_once() {
    let ledger = fresh_ledger("cli-compare-far").await;
    let record = |start: &str, end: &str| {
        json!({"account_sid": ACCOUNT_A, "sim_sid": format!("HSfar{:029}", 1),
               "period": {"start_time": start, "end_time": end}, "data_total": 1})
    };
    let page = json!({"usage_records": [
        record("2024-11-01T00:00:00Z", "2024-11-01T01:00:00Z"),
        record("9999-11-01T00:00:00Z", "9999-11-01T01:00:00Z"),
    ]});
    let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    write!(file, "{page}").unwrap();
    let started = std::time::Instant::now();
    let run = kore_usage(
        &ledger,
        &["compare", "--usage-records", file.path().to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("days"), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// `send` signs as KORE and Twilio sign (events, a form POST, a GET callback): the webhook
/// of the run's stack (`scripts/test` starts it with these secrets) accepts each and stores
/// it; a wrong secret gets the webhook's 401 and exit 1.
#[tokio::test]
async fn send_signs_requests_the_running_webhook_accepts() {
    let stack = kore_test_support::stack::LocalStack::from_env();
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}: run scripts/test"));
    let first = |name: &str| var(name).split(',').next().unwrap_or_default().to_owned();
    let (kore, twilio, public) = (
        first("KORE_WEBHOOK_SECRETS"),
        first("TWILIO_AUTH_TOKENS"),
        var("WEBHOOK_PUBLIC_URL"),
    );
    let send = |args: &[&str], secret: &str, body: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kore-usage"))
            .args(["send", "--format", "json"])
            .args(args)
            .env("KORE_USAGE_SIGNING_SECRET", secret)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kore-usage send");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("write the body");
        let output = child.wait_with_output().expect("kore-usage send ends");
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: {e}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), answer)
    };
    let sim = format!("HSclisend{:023}", fastrand::u64(..));
    let (samples, body) = kore_batch(2, &sim, &sim[9..17]);
    let events_url = stack.webhook_url("/events");
    let events_signed = format!("{public}/events");

    let signed = ["--sign-url", events_signed.as_str(), events_url.as_str()];
    let (code, answer) = send(&signed, &kore, body.as_bytes());
    assert_eq!(
        (code, &answer["status"]),
        (Some(0), &json!(200)),
        "{answer}"
    );
    let reply: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(reply["accepted"], 2, "{reply}");

    let twilio_body = format!("[{}]", samples[0].twilio_json());
    let as_twilio = [
        "--provider",
        "twilio",
        "--sign-url",
        events_signed.as_str(),
        events_url.as_str(),
    ];
    let (code, answer) = send(&as_twilio, &twilio, twilio_body.as_bytes());
    assert_eq!(code, Some(0), "{answer}");
    let reply: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(reply["duplicates"], 1, "{reply}");

    let form = format!("ApiVersion=v1&SimSid={sim}&SimStatus=inactive&AccountSid=AC1");
    let token = format!("RQclisend{:025}", fastrand::u64(..));
    let token_header = format!("Kore-Idempotency-Token: {token}");
    let sims_url = stack.webhook_url("/callbacks/sims");
    let sims_signed = format!("{public}/callbacks/sims");
    let callback = [
        "--callback",
        "-H",
        token_header.as_str(),
        "--sign-url",
        sims_signed.as_str(),
        sims_url.as_str(),
    ];
    let (code, answer) = send(&callback, &kore, form.as_bytes());
    assert_eq!(code, Some(0), "{answer}");
    assert!(stack.ledger.callback_exists("kore", &token).await.unwrap());
    let status = stack.ledger.sim_status(&sim).await.unwrap().unwrap();
    assert_eq!(status.change.status, "inactive");

    let commands_url = stack.webhook_url("/callbacks/sms-commands");
    let commands_signed = format!("{public}/callbacks/sms-commands");
    let twilio_token = format!("{:08x}-2d4a-4c8e-9a51-0d7e3b1f2a44", fastrand::u32(..));
    let twilio_token_header = format!("I-Twilio-Idempotency-Token: {twilio_token}");
    let get = [
        "--callback",
        "--get",
        "--provider",
        "twilio",
        "-H",
        twilio_token_header.as_str(),
        "--sign-url",
        commands_signed.as_str(),
        commands_url.as_str(),
    ];
    let (code, answer) = send(
        &get,
        &twilio,
        b"Status=received&Command=ping&Direction=from_sim",
    );
    assert_eq!(code, Some(0), "{answer}");
    assert!(
        stack
            .ledger
            .callback_exists("twilio", &twilio_token)
            .await
            .unwrap()
    );

    let (code, answer) = send(&signed, "not-the-secret", body.as_bytes());
    assert_eq!(
        (code, &answer["status"]),
        (Some(1), &json!(401)),
        "{answer}"
    );
}

/// Two SIMs whose day holds 2^63 bytes each: each SIM's figure fits a 64-bit count, the
/// table's total does not.
async fn two_huge_sims(ledger: &UsageLedger) {
    use kore_ingest_aws::ledger::rollup_item;
    use kore_ingest_core::usage::{Booking, BookingNames, HourUsage};
    let day = chrono::NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
    for sim in [
        "HS000000000000000000000000000huge1",
        "HS000000000000000000000000000huge2",
    ] {
        let booking = Booking {
            sim_sid: sim.into(),
            account_sid: Some(ACCOUNT_A.into()),
            fleet_sid: Some(FLEET_1.into()),
            network_sid: None,
            iso_country: None,
        };
        let half = 1u64 << 63;
        let hours = BTreeMap::from([(
            10,
            HourUsage {
                usage: volume(0, half),
                events: 1,
            },
        )]);
        let item = rollup_item(day, &booking, &hours, &BookingNames::default()).unwrap();
        ledger
            .table()
            .client()
            .put_item()
            .table_name(ledger.table_name())
            .set_item(Some(item))
            .send()
            .await
            .expect("load a rollup");
    }
}

#[tokio::test]
async fn table_totals_that_do_not_fit_are_errors_naming_whose_usage_and_the_period() {
    let ledger = fresh_ledger("cli-overflow").await;
    two_huge_sims(&ledger).await;
    // Each SIM's own figure is exact.
    let rows = ok_json(
        &ledger,
        &["report", "--period", "2024-11-03", "--format", "json"],
    );
    assert_eq!(rows[0]["data_total"].as_u64(), Some(1u64 << 63));
    // The table's total line does not fit: an error, never a saturated number.
    let run = kore_usage(&ledger, &["report", "--period", "2024-11-03"]);
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert_one_sentence(&run.stderr);
    assert!(
        run.stderr.contains("the report's total") && run.stderr.contains("2024-11-03"),
        "{}",
        run.stderr
    );
    let run = kore_usage(
        &ledger,
        &[
            "usage",
            "--start",
            "2024-11-03T00:00:00Z",
            "--end",
            "2024-11-04T00:00:00Z",
        ],
    );
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert!(
        run.stderr
            .contains("2024-11-03T00:00:00Z..2024-11-04T00:00:00Z does not fit a 64-bit count"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn export_kind_keeps_only_that_kind_and_refuses_an_unknown_one() {
    let ledger = fresh_ledger("cli-export-kind").await;
    let usage = SampleEvent::usage_update(
        "EZ0000000000000000000000000kind01",
        "HS0000000000000000000000000000kind",
        "2024-11-03T10:00:00Z",
        (10, 20),
    );
    let attached = SampleEvent {
        suffix: "attachment.accepted",
        ..SampleEvent::usage_update(
            "EZ0000000000000000000000000kind02",
            "HS0000000000000000000000000000kind",
            "2024-11-03T09:00:00Z",
            (0, 0),
        )
    };
    let test_event = json!({
        "specversion": "1.0", "type": "com.kore.eventstreams.test.event",
        "source": "kore-events", "id": "3f2b0c1e-8d7a-4c55-9a0e-kindtest0001",
        "time": "2024-11-03T11:00:00Z", "dataschema": "/schemas/test/1",
        "data": {"test_id": "kind-test"},
    })
    .to_string();
    let deliveries = vec![
        (usage.kore_json(), kinesis(1)),
        (attached.kore_json(), kinesis(2)),
        (test_event, kinesis(3)),
    ];
    store_deliveries(&ledger, &deliveries).await;
    let range = [
        "--start",
        "2024-11-03T00:00:00Z",
        "--end",
        "2024-11-04T00:00:00Z",
    ];
    let export = |kind: &str| {
        let mut args = vec!["export"];
        args.extend(range);
        args.extend(["--format", "jsonl", "--kind", kind]);
        let lines: Vec<Value> = ok(&ledger, &args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
            .iter()
            .map(|l| l["event_sid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(export("test"), ["3f2b0c1e-8d7a-4c55-9a0e-kindtest0001"]);
    assert_eq!(export("data-session.updated"), [usage.event_sid.as_str()]);
    assert_eq!(export("attachment.accepted"), [attached.event_sid.as_str()]);
    assert!(export("data-session.ended").is_empty());
    let mut args = vec!["export"];
    args.extend(range);
    args.extend(["--format", "jsonl", "--kind", "data-session.paused"]);
    let run = kore_usage(&ledger, &args);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("data-session.updated"),
        "{}",
        run.stderr
    );
}

/// Stores a SIM-update callback through the port, sent (`Date`) and received at the times given.
async fn sim_update(
    ledger: &UsageLedger,
    sim: &str,
    status: &str,
    token: &str,
    date: Option<&str>,
    received: &str,
) {
    let mut headers = http::HeaderMap::new();
    headers.insert("kore-idempotency-token", token.parse().unwrap());
    if let Some(date) = date {
        headers.insert("date", date.parse().unwrap());
    }
    let form = format!("SimSid={sim}&SimStatus={status}&AccountSid={ACCOUNT_A}");
    let callback =
        kore_ingest_core::callback::parse_callback(CallbackKind::Sims, form.as_bytes(), &headers)
            .unwrap();
    let delivery = Delivery {
        received_at: chrono::DateTime::parse_from_rfc3339(received)
            .unwrap()
            .to_utc(),
        ..webhook(token)
    };
    ledger
        .record_callback(&callback, form.as_bytes(), &delivery)
        .await
        .unwrap();
}

#[tokio::test]
async fn sims_status_history_and_active_answer_their_contracts() {
    let ledger = fresh_ledger("cli-sims").await;
    let sim = "HS0000000000000000000000000000sims";
    // Sent 1 July active, 3 July inactive; the inactive arrives first, the active is retried
    // late and replayed with a fresh token: none of it rolls the status back.
    sim_update(
        &ledger,
        sim,
        "inactive",
        "RQ2",
        Some("2024-07-03T12:00:00Z"),
        "2024-07-03T12:00:05Z",
    )
    .await;
    sim_update(
        &ledger,
        sim,
        "active",
        "RQ1",
        Some("Mon, 01 Jul 2024 08:00:00 GMT"),
        "2024-07-04T00:00:00Z",
    )
    .await;
    sim_update(
        &ledger,
        sim,
        "active",
        "RQ1b",
        Some("2024-07-01T08:00:00Z"),
        "2024-07-05T00:00:00Z",
    )
    .await;
    // A SIM whose only update has no Date: sent when it arrived, and said so.
    let other = "HS0000000000000000000000000000nodt";
    sim_update(
        &ledger,
        other,
        "active",
        "RQ3",
        None,
        "2024-07-02T06:00:00Z",
    )
    .await;

    let status = ok_json(&ledger, &["sims", "status", "--format", "json"]);
    assert_eq!(
        status,
        json!([
            {"sim_sid": other, "account_sid": ACCOUNT_A, "status": "active",
             "as_of": "2024-07-02T06:00:00Z", "received_at": "2024-07-02T06:00:00Z",
             "provider": "kore", "sent_at_source": "arrival:no-date-header"},
            {"sim_sid": sim, "account_sid": ACCOUNT_A, "status": "inactive",
             "as_of": "2024-07-03T12:00:00Z", "received_at": "2024-07-03T12:00:05Z",
             "provider": "kore", "sent_at_source": "date-header"},
        ])
    );
    let one = ok_json(
        &ledger,
        &["sims", "status", "--sim", sim, "--format", "json"],
    );
    assert_eq!(one.as_array().unwrap().len(), 1);
    let other_account = ok_json(
        &ledger,
        &["sims", "status", "--account", ACCOUNT_B, "--format", "json"],
    );
    assert_eq!(other_account, json!([]));

    let history = ok_json(
        &ledger,
        &["sims", "history", "--sim", sim, "--format", "json"],
    );
    let changes: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap(),
                c["sent_at"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("active", "2024-07-01T08:00:00Z"),
            ("inactive", "2024-07-03T12:00:00Z")
        ]
    );

    let range = [
        "--start",
        "2024-07-01T00:00:00Z",
        "--end",
        "2024-07-06T00:00:00Z",
    ];
    let active = ok_json(
        &ledger,
        &[&["sims", "active", "--format", "json"][..], &range].concat(),
    );
    assert_eq!(
        active,
        json!([
            {"sim_sid": other, "account_sid": ACCOUNT_A, "active_days": 4, "active_at_end": true},
            {"sim_sid": sim, "account_sid": ACCOUNT_A, "active_days": 3, "active_at_end": false},
        ])
    );
    let csv = ok(
        &ledger,
        &[&["sims", "active", "--format", "csv"][..], &range].concat(),
    );
    assert_eq!(
        csv.lines().next(),
        Some("sim_sid,account_sid,active_days,active_at_end")
    );
    // Before any status was sent: not known, so not listed.
    let before = ok_json(
        &ledger,
        &[
            "sims",
            "active",
            "--start",
            "2024-06-01T00:00:00Z",
            "--end",
            "2024-06-02T00:00:00Z",
            "--format",
            "json",
        ],
    );
    assert_eq!(before, json!([]));
    let partial = kore_usage(
        &ledger,
        &[
            "sims",
            "active",
            "--start",
            "2024-07-01T06:00:00Z",
            "--end",
            "2024-07-02T00:00:00Z",
        ],
    );
    assert_eq!(partial.code, 2, "{}", partial.stderr);
}

#[tokio::test]
async fn callbacks_redrive_puts_the_kept_callbacks_on_the_bus_once_and_empties_the_list() {
    let ledger = fresh_ledger("cli-callbacks").await;
    let (bus, queue) = kore_test_support::bus::BusQueue::fresh("cli-redrive").await;
    sim_update(
        &ledger,
        "HS1redrive",
        "active",
        "RQredrive1",
        None,
        "2024-07-02T06:00:00Z",
    )
    .await;
    let id = "kore#RQredrive1";
    ledger
        .callbacks()
        .keep_unforwarded(id, "PutEvents failed (ResourceNotFoundException): no bus")
        .await
        .unwrap();
    ledger
        .callbacks()
        .keep_unforwarded("kore#RQgone", "PutEvents failed")
        .await
        .unwrap();
    let listed = ok_json(&ledger, &["callbacks", "unforwarded", "--format", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // One kept callback is not in the ledger: the rest still go, and the run exits 1.
    let run = kore_usage(&ledger, &["callbacks", "redrive", "--event-bus", &bus]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("kore#RQgone"), "{}", run.stderr);
    assert_one_sentence(&run.stderr);
    let events = queue.drain(std::time::Duration::from_secs(2)).await;
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["detail"]["id"].as_str())
        .collect();
    assert_eq!(ids, [id]);
    let left = ok_json(&ledger, &["callbacks", "unforwarded", "--format", "json"]);
    assert_eq!(left[0]["id"], "kore#RQgone");

    ledger.callbacks().forwarded("kore#RQgone").await.unwrap();
    let run = kore_usage(&ledger, &["callbacks", "redrive", "--event-bus", &bus]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        queue
            .drain(std::time::Duration::from_secs(2))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn alerts_apply_rules_and_list_answer_their_contracts() {
    use kore_ingest_core::alerts::{Alert, AlertKind};
    let ledger = fresh_ledger("cli-alerts").await;
    let file = |text: &str| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    };
    let rules = format!(
        r#"{{"rules": [
          {{"id": "fleet-a-monthly", "kind": "usage", "fleet": "{FLEET_1}", "per": "sim",
            "period": "month", "thresholds": [800000000, 1000000000]}},
          {{"id": "acct-daily", "kind": "usage", "account": "{ACCOUNT_A}", "per": "total",
            "period": "day", "thresholds": [50000000000]}},
          {{"id": "silent", "kind": "silence", "fleet": "{FLEET_1}", "after_minutes": 180}},
          {{"id": "quality", "kind": "quality"}}
        ]}}"#
    );
    let good = file(&rules);
    let path = good.path().to_str().unwrap();
    assert!(ok(&ledger, &["alerts", "apply", path]).starts_with("4 rules applied"));
    // `rules --format json` gives back a file `apply` takes: the same rules.
    let applied = ok_json(&ledger, &["alerts", "rules", "--format", "json"]);
    let expected: Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(applied, expected);
    let table = ok(&ledger, &["alerts", "rules"]);
    assert!(table.contains("each SIM's month reaches"), "{table}");

    // A bad file is refused whole, naming the field and the reason; the rules stay.
    let bad = file(&rules.replace("[800000000, 1000000000]", "[800000000, 800000000]"));
    let run = kore_usage(&ledger, &["alerts", "apply", bad.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_one_sentence(&run.stderr);
    assert!(
        run.stderr
            .contains("rules[0].thresholds[1]: must be greater than the threshold before it"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ok_json(&ledger, &["alerts", "rules", "--format", "json"]),
        expected
    );
    // A rule id keeps its definition: another period under the same id is refused too.
    let redefined = file(&rules.replace(r#""period": "day""#, r#""period": "month""#));
    let run = kore_usage(
        &ledger,
        &["alerts", "apply", redefined.path().to_str().unwrap()],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("rules[1]: rule `acct-daily` was applied before as"),
        "{}",
        run.stderr
    );

    // The list: by period start, one rule or all, the record's fields.
    let alert = |rule: &str, start: &str, threshold: u64| Alert {
        rule_id: rule.into(),
        kind: AlertKind::Usage,
        subject: "HS1".into(),
        period_start: start.into(),
        threshold: Some(threshold),
        value: threshold + 5,
        crossed_by: Some("EZ1".into()),
        raised_at: "2024-11-20T08:00:00.000Z".into(),
    };
    for a in [
        alert("fleet-a-monthly", "2024-11-01T00:00:00.000Z", 800_000_000),
        alert("acct-daily", "2024-11-03T00:00:00.000Z", 50_000_000_000),
        alert("acct-daily", "2024-12-01T00:00:00.000Z", 50_000_000_000),
    ] {
        ledger.alerts().raise(&a).await.unwrap();
    }
    let november = [
        "alerts",
        "list",
        "--start",
        "2024-11-01T00:00:00Z",
        "--end",
        "2024-12-01T00:00:00Z",
        "--format",
        "json",
    ];
    let listed = ok_json(&ledger, &november);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["rule_id"], "fleet-a-monthly");
    for field in [
        "rule_id",
        "kind",
        "subject",
        "period_start",
        "threshold",
        "value",
        "crossed_by",
        "raised_at",
    ] {
        assert!(!listed[1][field].is_null(), "{field} in {}", listed[1]);
    }
    let mut one_rule = november.to_vec();
    one_rule.extend(["--rule", "acct-daily"]);
    let listed = ok_json(&ledger, &one_rule);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["period_start"], "2024-11-03T00:00:00.000Z");
    let table = ok(&ledger, &november[..6]);
    assert!(table.contains("2 alerts"), "{table}");
}
