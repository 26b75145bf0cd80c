//! Ledgers the bench measures: a fresh table whose requests are counted by operation, the
//! process's CPU time, a fleet's usage windows, the consumer's handler over them, and the
//! write units AWS would bill for what a run left.
//!
//! **How write units are measured.** DynamoDB Local sizes a multi-item transaction by its
//! items' combined size, where AWS bills every item on its own (each started kilobyte, twice
//! in a transaction). So after each run every item the run wrote (event records, booking
//! lists, rollups) is written again into an empty copy of the table, one item per
//! transaction, and what DynamoDB Local reports for those is added up: a rollup counts once
//! per commit that touched it (its version), at its final size, which is an upper bound.
//! Single-item writes (deliveries added to stored events) are measured as they happen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use chrono::{Duration as Span, NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger, create_table, keys};
use kore_ingest_core::delivery::Outcome;
use kore_test_support::{SampleEvent, dynamodb_endpoint, kinesis_event};

/// Records per batch, as the consumer gets them.
pub const BATCH: usize = 100;

/// Requests sent, by operation, and the `ConditionCheck` actions of the transactions among
/// them (each commit checks the markers of the days it books into): they write nothing, so
/// `billed_write_units` cannot see them.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    by_operation: Arc<Mutex<BTreeMap<String, u64>>>,
    condition_checks: Arc<AtomicU64>,
}

impl Requests {
    pub fn total(&self) -> u64 {
        self.by_operation
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    pub fn of(&self, operation: &str) -> u64 {
        self.by_operation
            .lock()
            .map(|m| m.get(operation).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// `ConditionCheck` actions sent in transactions so far.
    pub fn condition_checks(&self) -> u64 {
        self.condition_checks.load(Ordering::Relaxed)
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
        if operation == "TransactWriteItems"
            && let Some(body) = context.request().body().bytes()
        {
            let checks = String::from_utf8_lossy(body)
                .matches("\"ConditionCheck\"")
                .count();
            self.condition_checks
                .fetch_add(checks as u64, Ordering::Relaxed);
        }
        if let Ok(mut counts) = self.by_operation.lock() {
            *counts.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// A client of the bench's DynamoDB Local that counts its requests.
pub fn counted_client() -> (Client, Requests) {
    let requests = Requests::default();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .interceptor(requests.clone())
        .build();
    (Client::from_conf(config), requests)
}

/// A fresh ledger whose client counts its requests, keeping what it stores forever.
pub async fn counted_ledger(name: &str) -> Result<(UsageLedger, Requests), String> {
    counted_ledger_kept(name, None).await
}

/// A fresh ledger whose client counts its requests; with `retention_days`, its event
/// records and booking lists carry `expires_at` (`LEDGER_RETENTION_DAYS`).
pub async fn counted_ledger_kept(
    name: &str,
    retention_days: Option<u64>,
) -> Result<(UsageLedger, Requests), String> {
    let (client, requests) = counted_client();
    let table = format!("b-{name}-{}", fastrand::u32(..));
    create_table(&client, &table)
        .await
        .map_err(|e| format!("create table: {e}"))?;
    let mut config = LedgerConfig::new(table);
    config.retention.ledger_days = retention_days;
    Ok((UsageLedger::new(client, config), requests))
}

/// Process CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
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
pub fn fleet_windows(prefix: &str, sims: usize, windows: usize) -> Vec<SampleEvent> {
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
pub async fn consume(
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
pub async fn billed_write_units(
    ledger: &UsageLedger,
    events: &[SampleEvent],
    days: &[NaiveDate],
) -> Result<f64, String> {
    let client = ledger.table().client();
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
        partitions.extend((0..keys::USAGE_SHARDS).map(|shard| (keys::usage_pk(*day, shard), None)));
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

    billed_units_of(items).await
}

/// Items written again into an empty copy of the table, one per transaction, each as many
/// times as given: the write units AWS bills for having written them in transactions.
pub async fn billed_units_of(items: Vec<(HashItem, u64)>) -> Result<f64, String> {
    let (scratch, _) = counted_ledger("billed").await?;
    let writes = items.into_iter().map(|(item, times)| {
        let request = scratch
            .table()
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

pub type HashItem = std::collections::HashMap<String, AttributeValue>;

pub fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a date")
}
