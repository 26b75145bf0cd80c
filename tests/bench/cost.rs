//! What the ledger costs on traffic shaped like production: write and read units, requests
//! and CPU time per record through the kinesis-consumer's handler, and the month query over
//! 10,000 SIMs.
//!
//! **How write units are measured.** DynamoDB Local sizes a multi-item transaction by its
//! items' combined size, where AWS bills every item on its own (each started kilobyte, twice
//! in a transaction). So after each run every item the run wrote (event records, booking
//! lists, rollups) is written again into an empty copy of the table, one item per
//! transaction, and what DynamoDB Local reports for those is added up: a rollup counts once
//! per commit that touched it (its version), at its final size, which is an upper bound.
//! Single-item writes (deliveries added to stored events) are measured as they happen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, ReturnConsumedCapacity, TransactWriteItem, WriteRequest,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{Duration as Span, NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use integration_tests::{SampleEvent, dynamodb_endpoint, kinesis_event};
use kore_ingest_shared::event::DataVolume;
use kore_ingest_shared::ledger::{LedgerConfig, Outcome, UsageLedger, keys, rollup_item, table};
use kore_ingest_shared::usage::{
    Booking, BookingNames, Granularity, GroupBy, HourUsage, UsageFilters, UsageQuery,
};

use super::row;

/// On-demand prices in us-east-1 since November 2024, dollars per million request units.
const DOLLARS_PER_MILLION_WRITE_UNITS: f64 = 0.625;
const DOLLARS_PER_MILLION_READ_UNITS: f64 = 0.125;

const BATCH: usize = 100;

/// Requests sent, by operation.
#[derive(Debug, Clone, Default)]
struct Requests(Arc<Mutex<BTreeMap<String, u64>>>);

impl Requests {
    fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    fn of(&self, operation: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(operation).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Intercept for Requests {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or("unknown")
            .to_owned();
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// A fresh ledger whose client counts its requests.
async fn counted_ledger(name: &str) -> Result<(UsageLedger, Requests), String> {
    let requests = Requests::default();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .interceptor(requests.clone())
        .build();
    let client = Client::from_conf(config);
    let table = format!("b-{name}-{}", fastrand::u32(..));
    table::create_table(&client, &table)
        .await
        .map_err(|e| format!("create table: {e}"))?;
    Ok((UsageLedger::new(client, LedgerConfig::new(table)), requests))
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// `windows` usage windows of 15 minutes for each of `sims` SIMs on 3 November 2024, window
/// by window.
fn fleet_windows(prefix: &str, sims: usize, windows: usize) -> Vec<SampleEvent> {
    let start = Utc.with_ymd_and_hms(2024, 11, 3, 6, 0, 0).unwrap();
    let mut events = Vec::with_capacity(sims * windows);
    for window in 0..windows {
        for sim in 0..sims {
            let end =
                start + Span::minutes(15 * window as i64 + 1) + Span::seconds(sim as i64 % 50);
            let mut e = SampleEvent::usage_update(
                &format!("EZ{prefix}{sim:05}{window:05}{:020}", 0),
                &format!("HS{prefix}{sim:030}"),
                &end.to_rfc3339(),
                (1_000 + sim as u64, 20_000 + window as u64),
            );
            e.window_start = Some(end - Span::minutes(15));
            e.sim_unique_name = Some(format!("tracker-{sim:05}"));
            e.session_sid = format!("PI{prefix}{sim:030}");
            events.push(e);
        }
    }
    events
}

/// Runs records through the consumer's handler in batches of 100; every outcome must be
/// one of `allowed`.
async fn consume(
    ledger: &UsageLedger,
    records: &[Vec<u8>],
    allowed: fn(&Outcome) -> bool,
) -> Result<(), String> {
    for (b, batch) in records.chunks(BATCH).enumerate() {
        let numbered: Vec<(u64, Vec<u8>)> = batch
            .iter()
            .enumerate()
            .map(|(i, r)| ((b * BATCH + i) as u64, r.clone()))
            .collect();
        let report = kinesis_consumer::process_batch(ledger, kinesis_event(&numbered), None)
            .await
            .map_err(|e| format!("the consumer failed: {e}"))?;
        if let Some((_, outcome)) = report.outcomes.iter().find(|(_, o)| !allowed(o)) {
            return Err(format!("batch {b}: unexpected outcome {outcome:?}"));
        }
    }
    Ok(())
}

/// What a run left in a table, written again one item per transaction into an empty copy:
/// the write units AWS bills for it (see the module documentation).
async fn billed_write_units(
    ledger: &UsageLedger,
    events: &[SampleEvent],
    days: &[NaiveDate],
) -> Result<f64, String> {
    let client = ledger.client();
    let table = ledger.table_name();
    let mut items: Vec<(HashItem, u64)> = Vec::new();
    let gets = events.iter().map(|e| {
        client
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(format!("EVENT#{}", e.event_sid)))
            .key("sk", AttributeValue::S("#".into()))
            .send()
    });
    let mut gets = futures::stream::iter(gets.collect::<Vec<_>>()).buffer_unordered(32);
    while let Some(got) = gets.next().await {
        if let Some(item) = got.map_err(|e| format!("get: {e}"))?.item {
            items.push((item, 1));
        }
    }
    let sims: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.sim_sid.as_str()).collect();
    let mut partitions: Vec<(String, Option<&str>)> = sims
        .iter()
        .map(|sim| (keys::sim_pk(sim), Some("BOOKED#")))
        .collect();
    for day in days {
        let day = day.format("%Y-%m-%d").to_string();
        partitions.extend((0..keys::USAGE_SHARDS).map(|shard| (keys::usage_pk(&day, shard), None)));
    }
    for (pk, prefix) in partitions {
        let mut query = client
            .query()
            .table_name(table)
            .expression_attribute_values(":pk", AttributeValue::S(pk));
        query = match prefix {
            Some(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":p", AttributeValue::S(prefix.into())),
            None => query.key_condition_expression("pk = :pk"),
        };
        let found: Vec<HashItem> = query
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| format!("query: {e}"))?;
        for item in found {
            // A rollup was written once per commit that touched it: its version.
            let writes = match item.get("v") {
                Some(AttributeValue::N(v)) => v.parse().unwrap_or(1),
                _ => 1,
            };
            items.push((item, writes));
        }
    }

    let (scratch, _) = counted_ledger("billed").await?;
    let writes = items.into_iter().map(|(item, times)| {
        let request = scratch
            .client()
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(scratch.table_name())
                            .set_item(Some(item))
                            .build()
                            .expect("a put"),
                    )
                    .build(),
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
            .send();
        async move {
            let output = request.await.map_err(|e| format!("re-put: {e}"))?;
            let units: f64 = output
                .consumed_capacity()
                .iter()
                .filter_map(|c| c.capacity_units())
                .sum();
            Ok::<f64, String>(units * times as f64)
        }
    });
    let mut writes = futures::stream::iter(writes.collect::<Vec<_>>()).buffer_unordered(32);
    let mut total = 0.0;
    while let Some(units) = writes.next().await {
        total += units?;
    }
    Ok(total)
}

type HashItem = std::collections::HashMap<String, AttributeValue>;

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}

/// The cost rows of the table.
pub async fn cost_rows() -> Result<(), String> {
    let days = [day(2024, 11, 3)];

    // 1. New usage events, one per SIM per batch: 3,000 events over 300 SIMs.
    let (ledger, requests) = counted_ledger("one-per-sim").await?;
    let fleet = fleet_windows("a", 300, 10);
    let twilio: Vec<Vec<u8>> = fleet.iter().map(|e| e.twilio_json().into_bytes()).collect();
    let cpu = cpu_time();
    let started = Instant::now();
    consume(&ledger, &twilio, |o| matches!(o, Outcome::New)).await?;
    let (new_cpu, new_wall) = (cpu_time() - cpu, started.elapsed());
    let reported = ledger.consumed_write_units();
    let new_requests = requests.total();
    let billed = billed_write_units(&ledger, &fleet, &days).await?;
    let per_new = billed / fleet.len() as f64;
    row(
        "WCU per new usage event, one per SIM per batch (3,000 events, 300 SIMs, batches of 100)",
        &format!(
            "{per_new:.2} as AWS bills it ({:.2} as DynamoDB Local reports transactions); {:.3} requests per event",
            reported / fleet.len() as f64,
            new_requests as f64 / fleet.len() as f64
        ),
        "≤ 6",
    );

    // 2. The same records again, through the same provider and path.
    let (writes, reads, sent) = (
        ledger.consumed_write_units(),
        ledger.consumed_read_units(),
        requests.total(),
    );
    let cpu = cpu_time();
    consume(&ledger, &twilio, |o| {
        matches!(
            o,
            Outcome::Duplicate {
                new_delivery: false
            }
        )
    })
    .await?;
    let duplicate_cpu = cpu_time() - cpu;
    let n = twilio.len() as f64;
    row(
        "same-path duplicate: WCU / read units / requests",
        &format!(
            "{:.2} / {:.2} / {:.3} ({} BatchGetItem for {} records)",
            (ledger.consumed_write_units() - writes) / n,
            (ledger.consumed_read_units() - reads) / n,
            (requests.total() - sent) as f64 / n,
            requests.total() - sent,
            twilio.len()
        ),
        "0 / ≤ 1 / a batched lookup only",
    );

    // 3. The other provider's copies (KORE through the same stream).
    let kore: Vec<Vec<u8>> = fleet.iter().map(|e| e.kore_json().into_bytes()).collect();
    let (writes, sent, updates) = (
        ledger.consumed_write_units(),
        requests.total(),
        requests.of("UpdateItem"),
    );
    consume(&ledger, &kore, |o| {
        matches!(o, Outcome::Duplicate { new_delivery: true })
    })
    .await?;
    let per_copy = (ledger.consumed_write_units() - writes) / n;
    row(
        "copy from the other provider: WCU / requests",
        &format!(
            "{per_copy:.2} / {:.3} ({} UpdateItem)",
            (requests.total() - sent) as f64 / n,
            requests.of("UpdateItem") - updates
        ),
        "≤ 2",
    );
    // AWS bills every key of a consistent read, found or not (one unit under 4 KB);
    // DynamoDB Local reports nothing for a key it did not find: the new events' lookups.
    let reported_reads = ledger.consumed_read_units();
    let reads_per_delivery = (reported_reads + n) / (3.0 * n);
    row(
        "read units per delivery (the consistent duplicate check)",
        &format!(
            "{reads_per_delivery:.2} as AWS bills it ({:.2} as DynamoDB Local reports: nothing for keys not found)",
            reported_reads / (3.0 * n)
        ),
        "≤ 1",
    );
    // Per million events, each delivered by both providers: one new write, one copy.
    let dollars = (per_new + per_copy) * DOLLARS_PER_MILLION_WRITE_UNITS
        + 2.0 * reads_per_delivery * DOLLARS_PER_MILLION_READ_UNITS;
    row(
        "dollars per million events, migration traffic (each event from both providers), on-demand us-east-1",
        &format!(
            "${dollars:.2} ({:.2} WCU + {:.2} RCU per event at $0.625 / $0.125 per million)",
            per_new + per_copy,
            2.0 * reads_per_delivery
        ),
        "",
    );
    row(
        "kinesis-consumer CPU per record: new (one per SIM) / same-path duplicate",
        &format!(
            "{:.3} ms / {:.3} ms ({:.1} s wall for the 3,000 new)",
            new_cpu.as_secs_f64() * 1000.0 / n,
            duplicate_cpu.as_secs_f64() * 1000.0 / n,
            new_wall.as_secs_f64()
        ),
        "",
    );

    // 4. Twenty-five events per SIM per batch: 3,000 events over 120 SIMs.
    let (ledger, _) = counted_ledger("per-sim").await?;
    let mut grouped = fleet_windows("b", 120, 25);
    // Batches of four SIMs' 25 windows each.
    grouped.sort_by(|a, b| a.sim_sid.cmp(&b.sim_sid).then(a.time.cmp(&b.time)));
    let records: Vec<Vec<u8>> = grouped
        .iter()
        .map(|e| e.twilio_json().into_bytes())
        .collect();
    consume(&ledger, &records, |o| matches!(o, Outcome::New)).await?;
    let billed = billed_write_units(&ledger, &grouped, &days).await?;
    row(
        "WCU per new usage event, 25 per SIM per batch (3,000 events, 120 SIMs)",
        &format!(
            "{:.2} as AWS bills it ({:.2} as DynamoDB Local reports transactions)",
            billed / grouped.len() as f64,
            ledger.consumed_write_units() / grouped.len() as f64
        ),
        "≤ 3",
    );

    // 5. Migration traffic: every event from both providers plus a retry, shuffled.
    let (ledger, _) = counted_ledger("migration").await?;
    let fleet = fleet_windows("c", 300, 10);
    let mut rng = fastrand::Rng::with_seed(2024);
    let mut records = Vec::with_capacity(fleet.len() * 3);
    for window in fleet.chunks(300) {
        let mut deliveries: Vec<Vec<u8>> = Vec::with_capacity(900);
        for e in window {
            deliveries.push(e.twilio_json().into_bytes());
            deliveries.push(e.kore_json().into_bytes());
            deliveries.push(e.twilio_json().into_bytes());
        }
        rng.shuffle(&mut deliveries);
        records.extend(deliveries);
    }
    let cpu = cpu_time();
    let started = Instant::now();
    consume(&ledger, &records, |o| {
        matches!(o, Outcome::New | Outcome::Duplicate { .. })
    })
    .await?;
    let spent = cpu_time() - cpu;
    row(
        "kinesis-consumer CPU per record, migration traffic (9,000 records: each of 3,000 events from both providers and once more, shuffled, batches of 100)",
        &format!(
            "{:.3} ms ({:.1} s CPU, {:.1} s wall)",
            spent.as_secs_f64() * 1000.0 / records.len() as f64,
            spent.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
        "≤ 0.3 ms",
    );
    Ok(())
}

/// A month of rollups for 10,000 SIMs (every hour of every day with usage), loaded
/// directly, then the month's usage grouped by SIM.
pub async fn month_query_row() -> Result<(), String> {
    const SIMS: usize = 10_000;
    let (ledger, _) = counted_ledger("month").await?;
    let days: Vec<NaiveDate> = (1..=30).map(|d| day(2024, 11, d)).collect();
    let hours: BTreeMap<u32, HourUsage> = (0..24)
        .map(|h| {
            let usage = DataVolume {
                upload: 12_345 + u64::from(h),
                download: 234_567,
                total: 246_912 + u64::from(h),
            };
            (h, HourUsage { usage, events: 4 })
        })
        .collect();
    let loaded = Instant::now();
    // One SIM's month at a time: 30 items, in batches of 25, built when written.
    let month_of = |sim: usize| -> Result<Vec<HashItem>, String> {
        let booking = Booking {
            sim_sid: format!("HS{sim:032}"),
            account_sid: Some("AC0a1b2c3d4e5f60718293a4b5c6d7e8f9".into()),
            fleet_sid: Some("HF99998888777766665555444433332222".into()),
            network_sid: Some("HWa1b2c3d4e5f60718293a4b5c6d7e8f90".into()),
            iso_country: Some("DE".into()),
        };
        let names = BookingNames {
            sim_iccid: Some(format!("8988307000{sim:010}")),
            sim_unique_name: Some(format!("tracker-{sim:05}")),
            network_name: Some("Telekom.de".into()),
        };
        days.iter()
            .map(|d| rollup_item(*d, &booking, &hours, &names).map_err(|e| e.to_string()))
            .collect()
    };
    let total_items = SIMS * days.len();
    let client = ledger.client().clone();
    let table = ledger.table_name().to_owned();
    let writes = (0..SIMS).map(|sim| {
        let (client, table, items) = (client.clone(), table.clone(), month_of(sim));
        async move {
            for chunk in items?.chunks(25) {
                let mut pending: Vec<WriteRequest> = chunk
                    .iter()
                    .map(|item| {
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder()
                                    .set_item(Some(item.clone()))
                                    .build()
                                    .expect("a put"),
                            )
                            .build()
                    })
                    .collect();
                while !pending.is_empty() {
                    let output = client
                        .batch_write_item()
                        .request_items(&table, pending)
                        .send()
                        .await
                        .map_err(|e| format!("load: {e}"))?;
                    pending = output
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&table))
                        .unwrap_or_default();
                }
            }
            Ok::<(), String>(())
        }
    });
    let mut writes = futures::stream::iter(writes).buffer_unordered(32);
    while let Some(done) = writes.next().await {
        done?;
    }
    let load_time = loaded.elapsed();

    let start = Utc.with_ymd_and_hms(2024, 11, 1, 0, 0, 0).unwrap();
    let query = UsageQuery::new(
        start,
        Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0).unwrap(),
        Granularity::All,
        Some(GroupBy::Sim),
        UsageFilters::default(),
    )
    .map_err(|e| e.to_string())?;
    let reads = ledger.consumed_read_units();
    let started = Instant::now();
    let records = ledger.usage(&query).await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if records.len() != SIMS || records.iter().any(|r| r.usage_events != 30 * 24 * 4) {
        return Err(format!(
            "the month query returned {} records, or wrong counts",
            records.len()
        ));
    }
    row(
        "usage --group sim for a month of 10,000 SIMs (300,000 day rollups, every hour used; loaded in advance)",
        &format!(
            "{:.1} s, {:.0} read units ({total_items} items loaded in {:.0} s)",
            elapsed.as_secs_f64(),
            ledger.consumed_read_units() - reads,
            load_time.as_secs_f64()
        ),
        "< 30 s",
    );
    Ok(())
}

/// `kore-usage export` of 100,000 events, and of a tenth of them, as a child process: its
/// peak resident memory (the kernel's count, `ru_maxrss`) must not grow with the events.
pub async fn export_memory_row(kore_usage: &str) -> Result<(), String> {
    const SIMS: usize = 1_000;
    const WINDOWS: usize = 100;
    let (ledger, _) = counted_ledger("export").await?;
    let fleet = fleet_windows("x", SIMS, WINDOWS);
    let loaded = Instant::now();
    for batch in fleet.chunks(BATCH) {
        let inputs: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    integration_tests::parse_item(&e.twilio_json()),
                    integration_tests::kinesis(i as u64),
                )
            })
            .collect();
        let outcomes = ledger.record_all(&inputs, None).await;
        if let Some(o) = outcomes.iter().find(|o| !matches!(o, Outcome::New)) {
            return Err(format!("loading the export's events: {o:?}"));
        }
    }
    let load_time = loaded.elapsed();
    // The windows end from 06:01 on 3 November, 15 minutes apart: 100 windows reach into
    // the 4th. A tenth of the range holds a tenth of the events.
    // The child's own high-water mark (VmHWM), sampled while it runs: it starts again at
    // the exec, where the rusage counts would include the parent's pages it was forked with.
    let measure = |start: &str, end: &str| -> Result<(u64, usize, Duration), String> {
        let started = Instant::now();
        let mut child = std::process::Command::new(kore_usage)
            .args([
                "--table",
                ledger.table_name(),
                "export",
                "--start",
                start,
                "--end",
                end,
                "--format",
                "jsonl",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {kore_usage}: {e}"))?;
        let status_file = format!("/proc/{}/status", child.id());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut peak_kib = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    });
                    peak_kib = peak_kib.max(hwm.unwrap_or(0));
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak_kib
            })
        };
        let mut lines = 0;
        if let Some(stdout) = child.stdout.take() {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).split(b'\n') {
                line.map_err(|e| format!("reading the export: {e}"))?;
                lines += 1;
            }
        }
        let status = child.wait().map_err(|e| format!("export: {e}"))?;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak_kib = sampler.join().unwrap_or(0);
        if !status.success() {
            return Err(format!("export failed ({status})"));
        }
        Ok((peak_kib, lines, started.elapsed()))
    };
    let (small_kib, small_lines, _) = measure("2024-11-03T06:00:00Z", "2024-11-03T08:00:00Z")?;
    let (large_kib, large_lines, large_time) =
        measure("2024-11-03T00:00:00Z", "2024-11-05T00:00:00Z")?;
    if large_lines != SIMS * WINDOWS {
        return Err(format!(
            "export wrote {large_lines} lines, not {}",
            SIMS * WINDOWS
        ));
    }
    row(
        "kore-usage export: peak RSS for 100,000 events (and for 8,000)",
        &format!(
            "{:.1} MiB ({:.1} MiB for {small_lines} events); {:.1} s; events loaded in {:.0} s",
            large_kib as f64 / 1024.0,
            small_kib as f64 / 1024.0,
            large_time.as_secs_f64(),
            load_time.as_secs_f64()
        ),
        "bounded",
    );
    Ok(())
}
