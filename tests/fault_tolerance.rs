//! Exact totals under faults. 5,000 events over 100 SIMs, from both providers, through both
//! paths (the consumer's handler with Kinesis batches, the webhook's with signed batches),
//! each delivered one to three times in shuffled order, while DynamoDB Local is paused
//! (SIGSTOP) and resumed and a share of requests is throttled. The test retries as Lambda
//! (from the lowest failed sequence number) and the senders (on 503) would; afterwards every
//! rollup equals the independent total, every poison input is quarantined, and nothing is
//! counted twice.
//!
//! Then a second phase (issue 13): DynamoDB Local is paused for 20 s while signed webhook
//! batches keep arriving at a webhook that spills to a (kinesalite) stream. Every request
//! must get 200, and once DynamoDB is back and the consumer has read the stream, every rollup
//! of those events must be exact. Its own test binary: it pauses the DynamoDB Local the whole
//! run shares.
//!
//! Between the two, each day of the first phase's traffic is sealed into a folder archive and
//! checked against the ledger (issue 25's acceptance).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use kinesis_consumer::process_batch;
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};
use kore_ingest_core::config::Env;
use kore_ingest_core::metrics::InvocationMetrics;
use kore_ingest_core::quarantine::QuarantineKind;
use kore_ingest_core::quarantine::quarantine_id;
use kore_ingest_core::signature::kore_signature;
use kore_test_support::faults::{
    KINESIS_CONSUMER, Throttle, WEBHOOK, as_function, throttled_client,
};
use kore_test_support::*;
use webhook::{Webhook, WebhookConfig};

const PUBLIC_URL: &str = "https://hooks.example.com";
const KORE_SECRET: &str = "fault-kore-secret";
const TWILIO_TOKEN: &str = "fault-twilio-token";
const EVENTS: u64 = 5_000;
const SIMS: u64 = 100;
/// A batch that keeps failing this often means something is wrong, not unlucky.
const MAX_ATTEMPTS: usize = 60;

/// Pauses DynamoDB Local for `pause` every `every` until dropped, and resumes it however
/// the test ends. The lock makes "not stopped yet, so pause" one step: once `drop` has run,
/// no pause can start, and the server cannot stay frozen for the rest of the suite.
struct Pauser {
    pid: String,
    stopped: Arc<Mutex<bool>>,
}

impl Pauser {
    fn start(pid: String, every: Duration, pause: Duration) -> Self {
        let stopped = Arc::new(Mutex::new(false));
        let (task_pid, task_stopped) = (pid.clone(), stopped.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                {
                    let stopped = task_stopped.lock().unwrap_or_else(|e| e.into_inner());
                    if *stopped {
                        return;
                    }
                    signal(&task_pid, "-STOP");
                }
                tokio::time::sleep(pause).await;
                signal(&task_pid, "-CONT");
            }
        });
        Pauser { pid, stopped }
    }
}

impl Pauser {
    /// Pauses DynamoDB Local now, until dropped.
    fn hold(pid: String) -> Self {
        signal(&pid, "-STOP");
        Pauser {
            pid,
            stopped: Arc::new(Mutex::new(true)),
        }
    }
}

impl Drop for Pauser {
    fn drop(&mut self) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        signal(&self.pid, "-CONT");
    }
}

fn signal(pid: &str, signal: &str) {
    let _ = Command::new("kill").args([signal, pid]).status();
}

enum Via {
    Kinesis,
    Webhook,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_under_pauses_throttling_and_redelivery() {
    let table = fresh_ledger("faults").await;
    let throttle = Throttle::random(0.01);
    let ledger = UsageLedger::new(
        throttled_client(&throttle),
        LedgerConfig::new(table.table_name()),
    );
    let webhook = Webhook {
        ledger: ledger.clone(),
        config: WebhookConfig::from_env(&Env::from_fn(move |name| match name {
            "KORE_WEBHOOK_SECRETS" => Some(KORE_SECRET.into()),
            "TWILIO_AUTH_TOKENS" => Some(TWILIO_TOKEN.into()),
            "WEBHOOK_PUBLIC_URL" => Some(PUBLIC_URL.into()),
            "TIME_BUDGET_MS" => Some("3000".into()),
            _ => None,
        }))
        .unwrap(),
    };

    // The unique events and their independent totals.
    let mut rng = fastrand::Rng::with_seed(8_192_024);
    let start = Utc.with_ymd_and_hms(2024, 10, 20, 0, 0, 0).unwrap();
    let unique: Vec<SampleEvent> = (0..EVENTS)
        .map(|i| {
            let at = start + chrono::Duration::seconds(rng.i64(0..21 * 24 * 3600));
            let mut e = SampleEvent::usage_update(
                &format!("EZfault{i:027}"),
                &format!("HSfault{:025}", i % SIMS),
                &at.to_rfc3339(),
                (rng.u64(0..40_000), rng.u64(0..400_000)),
            );
            e.session_sid = format!("PIfault{:025}", i / 8);
            e
        })
        .collect();
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for e in &unique {
        for period in [
            e.time.format("%Y-%m-%d").to_string(),
            e.time.format("%Y-%m").to_string(),
        ] {
            let entry = expected.entry((e.sim_sid.clone(), period)).or_default();
            entry.0 += e.window.0 + e.window.1;
            entry.1 += 1;
        }
    }

    // Every delivery: which copy (KORE or Twilio envelope) through which path, shuffled.
    let mut kinesis_records: Vec<Vec<u8>> = Vec::new();
    let mut kore_events: Vec<String> = Vec::new();
    let mut twilio_events: Vec<String> = Vec::new();
    let mut deliveries: Vec<(Via, bool, usize)> = Vec::new();
    for (i, _) in unique.iter().enumerate() {
        for _ in 0..rng.usize(1..=3) {
            let via = if rng.bool() {
                Via::Kinesis
            } else {
                Via::Webhook
            };
            deliveries.push((via, rng.bool(), i));
        }
    }
    rng.shuffle(&mut deliveries);
    for (via, from_kore, i) in &deliveries {
        let json = if *from_kore {
            unique[*i].kore_json()
        } else {
            unique[*i].twilio_json()
        };
        match via {
            Via::Kinesis => kinesis_records.push(json.into_bytes()),
            Via::Webhook if *from_kore => kore_events.push(json),
            Via::Webhook => twilio_events.push(json),
        }
    }
    // Poison among them: records that are not JSON, a signed webhook body that is not JSON.
    let poison_records: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("poison record {i}").into_bytes())
        .collect();
    for (n, poison) in poison_records.iter().enumerate() {
        kinesis_records.insert(n * 300 + 7, poison.clone());
    }
    let poison_body = "[{\"not\": \"json\"".to_owned();

    let pid = std::fs::read_to_string(
        std::env::var("DYNAMODB_PIDFILE").expect("DYNAMODB_PIDFILE (scripts/test sets it)"),
    )
    .expect("DynamoDB Local's pid")
    .trim()
    .to_owned();
    let pauser = Pauser::start(pid, Duration::from_millis(3000), Duration::from_millis(500));

    let kinesis = async {
        // One shard, batches of 100 records, re-sent from the lowest failed sequence number.
        let mut retries = 0;
        for (chunk_index, chunk) in kinesis_records.chunks(100).enumerate() {
            let numbered: Vec<(u64, Vec<u8>)> = chunk
                .iter()
                .enumerate()
                .map(|(n, data)| ((chunk_index * 100 + n) as u64, data.clone()))
                .collect();
            let mut from = 0;
            for attempt in 0.. {
                assert!(
                    attempt < MAX_ATTEMPTS,
                    "kinesis batch {chunk_index} kept failing"
                );
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                let report = as_function(
                    KINESIS_CONSUMER,
                    process_batch(&ledger, kinesis_event(&numbered[from..]), Some(deadline)),
                )
                .await
                .expect("a batch with sequence numbers");
                let Some(failed) = report.response.batch_item_failures.first() else {
                    break;
                };
                retries += 1;
                let failed = failed.item_identifier.clone().expect("an identifier");
                from = numbered
                    .iter()
                    .position(|(n, _)| sequence_number(*n) == failed)
                    .expect("a sequence number of this batch");
            }
        }
        retries
    };

    let senders = async {
        let mut retries = 0;
        let mut bodies: Vec<(bool, String)> = Vec::new();
        for chunk in kore_events.chunks(50) {
            bodies.push((true, format!("[{}]", chunk.join(","))));
        }
        for chunk in twilio_events.chunks(50) {
            bodies.push((false, format!("[{}]", chunk.join(","))));
        }
        bodies.insert(bodies.len() / 2, (true, poison_body.clone()));
        for (from_kore, body) in &bodies {
            let (query, headers) = if *from_kore {
                let signature = kore_signature(
                    KORE_SECRET.as_bytes(),
                    "POST",
                    &format!("{PUBLIC_URL}/events"),
                    body.as_bytes(),
                );
                (
                    String::new(),
                    vec![
                        ("Content-Type".to_owned(), "application/json".to_owned()),
                        ("Kore-Signature".to_owned(), signature),
                    ],
                )
            } else {
                let (query, signature) = twilio_json_signature(
                    TWILIO_TOKEN,
                    &format!("{PUBLIC_URL}/events"),
                    body.as_bytes(),
                );
                (
                    query,
                    vec![
                        ("Content-Type".to_owned(), "application/json".to_owned()),
                        ("X-Twilio-Signature".to_owned(), signature),
                    ],
                )
            };
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for attempt in 0.. {
                assert!(attempt < MAX_ATTEMPTS, "a webhook batch kept failing");
                let request = function_url_request(
                    "POST",
                    "/events",
                    &query,
                    &headers,
                    Some(body.as_bytes()),
                );
                let mut metrics = InvocationMetrics::new("webhook");
                let response = as_function(
                    WEBHOOK,
                    webhook.respond(&request, "fault-test", &mut metrics),
                )
                .await;
                match response.status_code {
                    200 => break,
                    400 if body == &poison_body => break,
                    503 => retries += 1,
                    other => panic!("unexpected {other}: {:?}", response.body),
                }
            }
        }
        retries
    };

    let (kinesis_retries, webhook_retries) = tokio::join!(kinesis, senders);
    drop(pauser);
    throttle.stop();
    eprintln!(
        "{} deliveries of {EVENTS} events: {} throttled requests, {kinesis_retries} Kinesis re-deliveries, {webhook_retries} webhook retries",
        deliveries.len(),
        throttle.throttled()
    );
    assert!(
        throttle.throttled() > 0,
        "the test must actually inject throttling"
    );
    assert!(
        kinesis_retries + webhook_retries > 0,
        "faults must actually cause retries"
    );

    for ((sim, period), (total, events)) in &expected {
        let rollup = table
            .sim_usage(sim, period)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no rollup for {sim} {period}"));
        assert_eq!(
            (rollup.usage.total, rollup.usage_events),
            (*total, *events),
            "{sim} {period}"
        );
    }
    for poison in &poison_records {
        let id = quarantine_id(&QuarantineKind::Event, "kinesis", poison);
        assert!(
            table.quarantined().get(&id).await.unwrap().is_some(),
            "poison record quarantined"
        );
    }
    let id = quarantine_id(&QuarantineKind::Event, "webhook", poison_body.as_bytes());
    assert!(
        table.quarantined().get(&id).await.unwrap().is_some(),
        "poison body quarantined"
    );

    archive_phase(&table, &unique).await;
    spilled_phase(&ledger, &table).await;
}

/// The archive over this traffic (issue 25): each day sealed holds exactly the ledger's
/// events, once each however often and by whom they were delivered, and `verify` finds no
/// difference; sealing again writes the same bytes; a seal cut short and run again leaves
/// the same manifest and no extra object.
async fn archive_phase(table: &UsageLedger, unique: &[SampleEvent]) {
    use kore_ingest_aws::archive::{ArchiveStore, Archiver, manifest_key};
    use kore_test_support::archive::files_under;

    let folder = std::env::temp_dir().join(format!("faults-archive-{:08x}", fastrand::u32(..)));
    let store = ArchiveStore::Folder(folder.clone());
    let archiver = Archiver {
        ledger: table,
        store: &store,
    };
    let mut per_day: BTreeMap<chrono::NaiveDate, u64> = BTreeMap::new();
    for e in unique {
        *per_day.entry(e.time.date_naive()).or_default() += 1;
    }
    for (day, events) in &per_day {
        let manifest = archiver.seal(*day).await.unwrap();
        assert_eq!(
            (manifest.usage_events.rows, manifest.distinct_event_sids),
            (*events, *events),
            "{day}: each event once"
        );
        assert_eq!(archiver.verify(*day).await.unwrap(), Vec::<String>::new());
    }
    let sealed = files_under(&folder);
    for day in per_day.keys() {
        archiver.seal(*day).await.unwrap();
    }
    assert!(
        files_under(&folder) == sealed,
        "sealed again: the same bytes"
    );

    // A seal killed after its first part: no manifest, the rollups' part missing.
    let (day, _) = per_day.first_key_value().unwrap();
    let manifest = archiver.manifest(*day).await.unwrap().unwrap();
    let rollups = &manifest.usage_rollups.parts[0].name;
    std::fs::remove_file(folder.join(format!("usage_rollups/day={day}/{rollups}"))).unwrap();
    std::fs::remove_file(folder.join(manifest_key(*day))).unwrap();
    archiver.seal(*day).await.unwrap();
    assert!(
        files_under(&folder) == sealed,
        "run again: the same objects, no more"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

/// The request headers (and query, for Twilio) a signed webhook body is sent with.
fn signed(from_kore: bool, body: &str) -> (String, Vec<(String, String)>) {
    let json = ("Content-Type".to_owned(), "application/json".to_owned());
    if from_kore {
        let signature = kore_signature(
            KORE_SECRET.as_bytes(),
            "POST",
            &format!("{PUBLIC_URL}/events"),
            body.as_bytes(),
        );
        (
            String::new(),
            vec![json, ("Kore-Signature".to_owned(), signature)],
        )
    } else {
        let (query, signature) = twilio_json_signature(
            TWILIO_TOKEN,
            &format!("{PUBLIC_URL}/events"),
            body.as_bytes(),
        );
        (
            query,
            vec![json, ("X-Twilio-Signature".to_owned(), signature)],
        )
    }
}

/// DynamoDB Local paused for 20 s while 40 signed batches (1,500 events, some from both
/// providers) arrive at a webhook that spills: all get 200; afterwards the consumer stores
/// the stream and every rollup of those events is exact.
async fn spilled_phase(ledger: &UsageLedger, table: &UsageLedger) {
    const PAUSE: Duration = Duration::from_secs(20);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_KINESIS")
        .expect("AWS_ENDPOINT_URL_KINESIS (scripts/test sets it)");
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "tests",
        ))
        .endpoint_url(&endpoint)
        .http_client(kore_test_support::faults::recording_http_client())
        .load()
        .await;
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let stream = format!("fault-spill-{}-{}", std::process::id(), fastrand::u32(..));
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(1)
        .send()
        .await
        .expect("a stream on kinesalite");
    let webhook = Webhook {
        ledger: ledger.clone(),
        config: WebhookConfig {
            spill_stream: Some(stream.clone()),
            kinesis: Some(kinesis.clone()),
            ..WebhookConfig::from_env(&Env::from_fn(move |name| match name {
                "KORE_WEBHOOK_SECRETS" => Some(KORE_SECRET.into()),
                "TWILIO_AUTH_TOKENS" => Some(TWILIO_TOKEN.into()),
                "WEBHOOK_PUBLIC_URL" => Some(PUBLIC_URL.into()),
                "TIME_BUDGET_MS" => Some("3000".into()),
                _ => None,
            }))
            .unwrap()
        },
    };

    let mut rng = fastrand::Rng::with_seed(20_000);
    let start = Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0).unwrap();
    let unique: Vec<SampleEvent> = (0..1_500u64)
        .map(|i| {
            let at = start + chrono::Duration::seconds(rng.i64(0..10 * 24 * 3600));
            SampleEvent::usage_update(
                &format!("EZspill{i:027}"),
                &format!("HSfault{:025}", i % SIMS),
                &at.to_rfc3339(),
                (rng.u64(0..40_000), rng.u64(0..400_000)),
            )
        })
        .collect();
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for e in &unique {
        // December is this phase's alone: its month rollups must be exact too.
        for period in [
            e.time.format("%Y-%m-%d").to_string(),
            e.time.format("%Y-%m").to_string(),
        ] {
            let entry = expected.entry((e.sim_sid.clone(), period)).or_default();
            entry.0 += e.window.0 + e.window.1;
            entry.1 += 1;
        }
    }
    // KORE delivers every event; Twilio a third of them again.
    let mut bodies: Vec<(bool, String)> = unique
        .chunks(50)
        .map(|c| {
            (
                true,
                format!(
                    "[{}]",
                    c.iter()
                        .map(SampleEvent::kore_json)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            )
        })
        .collect();
    bodies.extend(
        unique
            .iter()
            .step_by(3)
            .collect::<Vec<_>>()
            .chunks(50)
            .map(|c| {
                (
                    false,
                    format!(
                        "[{}]",
                        c.iter()
                            .map(|e| e.twilio_json())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                )
            }),
    );
    assert_eq!(bodies.len(), 40);

    let pid = std::fs::read_to_string(
        std::env::var("DYNAMODB_PIDFILE").expect("DYNAMODB_PIDFILE (scripts/test sets it)"),
    )
    .expect("DynamoDB Local's pid")
    .trim()
    .to_owned();
    let paused = Pauser::hold(pid);
    let started = std::time::Instant::now();
    let mut spilled = 0;
    // Waves of eight concurrent requests, as senders deliver, all while it is paused.
    for wave in bodies.chunks(8) {
        let replies = futures::future::join_all(wave.iter().map(|(from_kore, body)| {
            let webhook = &webhook;
            async move {
                let (query, headers) = signed(*from_kore, body);
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let request = function_url_request(
                    "POST",
                    "/events",
                    &query,
                    &headers,
                    Some(body.as_bytes()),
                );
                let mut metrics = InvocationMetrics::new("webhook");
                let response = as_function(
                    WEBHOOK,
                    webhook.respond(&request, "fault-spill", &mut metrics),
                )
                .await;
                (response.status_code, response.body.unwrap_or_default())
            }
        }))
        .await;
        for (status, body) in replies {
            assert_eq!(status, 200, "while DynamoDB is paused: {body}");
            let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
            spilled += reply["spilled"].as_u64().expect("spilled");
        }
    }
    let answered = started.elapsed();
    tokio::time::sleep(PAUSE.saturating_sub(started.elapsed())).await;
    drop(paused);
    assert_eq!(
        spilled, 2_000,
        "every event of every request went to the stream"
    );

    // DynamoDB is back: the consumer reads the stream, re-sent from the lowest failure.
    let shard = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_owned();
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator;
    let mut records: Vec<Vec<u8>> = Vec::new();
    while let Some(current) = iterator.take() {
        let page = kinesis
            .get_records()
            .shard_iterator(current)
            .send()
            .await
            .unwrap();
        if page.records().is_empty() {
            break;
        }
        records.extend(page.records().iter().map(|r| r.data().as_ref().to_vec()));
        iterator = page.next_shard_iterator;
    }
    assert_eq!(records.len(), 40, "one record per request");
    let numbered: Vec<(u64, Vec<u8>)> = records
        .into_iter()
        .enumerate()
        .map(|(n, r)| (n as u64, r))
        .collect();
    let mut from = 0;
    for attempt in 0.. {
        assert!(attempt < MAX_ATTEMPTS, "the spilled records kept failing");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let report = as_function(
            KINESIS_CONSUMER,
            process_batch(ledger, kinesis_event(&numbered[from..]), Some(deadline)),
        )
        .await
        .expect("a batch with sequence numbers");
        let Some(failed) = report.response.batch_item_failures.first() else {
            break;
        };
        let failed = failed.item_identifier.clone().expect("an identifier");
        from = numbered
            .iter()
            .position(|(n, _)| sequence_number(*n) == failed)
            .expect("ours");
    }
    for ((sim, period), (total, events)) in &expected {
        let rollup = table
            .sim_usage(sim, period)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no rollup for {sim} {period} after the spill"));
        assert_eq!(
            (rollup.usage.total, rollup.usage_events),
            (*total, *events),
            "{sim} {period}"
        );
    }
    eprintln!(
        "spill phase: 40 requests (2,000 deliveries of 1,500 events) all answered 200 within {answered:?}, DynamoDB Local paused for {PAUSE:?}; every rollup exact after the consumer read the stream"
    );
}
