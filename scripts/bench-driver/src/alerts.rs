//! What alerts cost: the alerts function's write and read units per usage event with one
//! `per: sim` and one `per: total` rule, on production-shaped traffic (one event per SIM per
//! batch), and the reads of the scheduled silence check over 10,000 SIMs.
//!
//! Write units as AWS bills them: the function's transactions (each batch's mark and the
//! `per: total` sums it adds to) are written again one item per transaction into an empty
//! table (`billed_units_of`), each item as often as the run wrote it; its single-item
//! writes are what DynamoDB Local reports for them.

use alerts::{Evaluator, check_silence, evaluate_batch};
use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Datelike, Duration as Span, TimeZone, Utc};
use futures::StreamExt;
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger, keys};
use kore_ingest_core::alerts::Rules;
use kore_ingest_core::delivery::Outcome;
use kore_test_support::streams::stream_record;
use serde_json::json;

use crate::measured::{
    BATCH, HashItem, billed_units_of, consume, counted_client, counted_ledger, fleet_windows,
};
use crate::rows::row;

const SIMS: usize = 300;
const WINDOWS: usize = 10;
const SILENT_SIMS: usize = 10_000;

fn key(pk: String, sk: &str) -> HashItem {
    HashItem::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

async fn apply(ledger: &UsageLedger, rules: &Rules) -> Result<(), String> {
    ledger
        .alerts()
        .apply(rules)
        .await
        .map_err(|e| e.to_string())
}

/// The ledger's table as the alerts function sees it: its own client, counted.
fn evaluator_of(ledger: &UsageLedger) -> (Evaluator, crate::measured::Requests, UsageLedger) {
    let (client, requests) = counted_client();
    let own = UsageLedger::new(client, LedgerConfig::new(ledger.table_name()));
    (
        Evaluator {
            alerts: own.alerts(),
        },
        requests,
        own,
    )
}

pub async fn alert_rows() -> Result<(), String> {
    let (ledger, _) = counted_ledger("alerts").await?;
    let fleet = fleet_windows("al", SIMS, WINDOWS);
    let rules = Rules::parse(&format!(
        r#"{{"rules": [
          {{"id": "fleet-monthly", "kind": "usage", "fleet": "{}", "per": "sim", "period": "month",
            "thresholds": [1000000000]}},
          {{"id": "account-daily", "kind": "usage", "account": "{}", "per": "total", "period": "day",
            "thresholds": [50000000000]}}
        ]}}"#,
        fleet[0].fleet_sid, fleet[0].account_sid
    ))
    .map_err(|e| e.to_string())?;
    apply(&ledger, &rules).await?;
    let records: Vec<Vec<u8>> = fleet.iter().map(|e| e.twilio_json().into_bytes()).collect();
    consume(&ledger, &records, |o| matches!(o, Outcome::New)).await?;

    // The inserts as the table's stream carries them, in the order they were stored.
    let mut inserts = Vec::with_capacity(fleet.len());
    for (n, event) in fleet.iter().enumerate() {
        let item = ledger
            .table()
            .get(key(format!("EVENT#{}", event.event_sid), keys::SINGLE))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} is not stored", event.event_sid))?;
        inserts.push(stream_record("INSERT", &item, 1_000 + n as u64));
    }
    let (evaluator, requests, own) = evaluator_of(&ledger);
    // Evaluated as in production: shortly after the last window, on the same UTC day.
    let now = fleet.iter().map(|e| e.time).max().unwrap_or_else(Utc::now) + Span::minutes(5);
    let mut batches = 0u64;
    let mut first_records = Vec::new();
    for batch in inserts.chunks(BATCH) {
        let event: Event =
            serde_json::from_value(json!({ "Records": batch })).map_err(|e| e.to_string())?;
        let first = event.records[0].event_id.clone();
        first_records.push(first);
        let report = evaluate_batch(&evaluator, &event.records, now)
            .await
            .map_err(|e| e.to_string())?;
        if !report.raised.is_empty() {
            return Err(format!(
                "the bench's thresholds are not to be reached: {:?}",
                report.raised
            ));
        }
        batches += 1;
    }
    let n = fleet.len() as f64;
    let transactions = requests.of("TransactWriteItems");
    // Each transaction: the batch's mark and the one account-day sum.
    let mut written: Vec<(HashItem, u64)> = Vec::new();
    for first in &first_records {
        if let Some(mark) = own
            .table()
            .get(key(keys::alert_batch_pk(first), keys::SINGLE))
            .await
            .map_err(|e| e.to_string())?
        {
            written.push((mark, 1));
        }
    }
    let day = fleet[0].time.date_naive();
    let sum = own
        .table()
        .get(key(
            keys::alert_sum_pk("account-daily", &fleet[0].account_sid, day),
            keys::SINGLE,
        ))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the account's day sum is not stored")?;
    written.push((sum, transactions));
    let billed_transactions = billed_units_of(written).await?;
    // The single writes: each SIM's month checkpoint, written when a day it lacks was read.
    // `billed_units_of` bills a transaction's put, twice a single write's units.
    let single_writes = requests.of("PutItem") + requests.of("UpdateItem");
    let month = chrono::NaiveDate::from_ymd_opt(day.year(), day.month(), 1).ok_or("a month")?;
    let mut checkpoints = Vec::new();
    for sim in fleet
        .iter()
        .map(|e| &e.sim_sid)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let pk = keys::alert_sim_sum_pk("fleet-monthly", sim, month);
        if let Some(item) = own
            .table()
            .get(key(pk, keys::SINGLE))
            .await
            .map_err(|e| e.to_string())?
        {
            checkpoints.push((item, 1));
        }
    }
    if checkpoints.len() as u64 != single_writes {
        return Err(format!(
            "{single_writes} single writes for {} checkpoints: the bench no longer measures them all",
            checkpoints.len()
        ));
    }
    let billed = billed_transactions + billed_units_of(checkpoints).await? / 2.0;
    let reads = own.table().consumed_read_units();
    row(
        &format!(
            "alerts: WCU per usage event, one `per: sim` (month) and one `per: total` (day) rule ({} events, {SIMS} SIMs, stream batches of {BATCH})",
            fleet.len()
        ),
        &format!(
            "{:.3} ({transactions} transactions of a batch mark and a sum for {batches} batches: {:.3}; {single_writes} month checkpoints, one per SIM and day: {:.3})",
            billed / n,
            billed_transactions / n,
            (billed - billed_transactions) / n
        ),
        "< 0.5",
    );
    // Every read is consistent and every item read is under 4 KB: AWS bills one unit per
    // Query, GetItem and BatchGetItem key (here one key per BatchGetItem: the batch's sum),
    // found or not. DynamoDB Local reports less for queries that find nothing.
    let billed_reads = requests.of("Query") + requests.of("GetItem") + requests.of("BatchGetItem");
    row(
        "alerts: read units per usage event, same run (the SIM's month: its checkpoint and the day the event is booked on)",
        &format!(
            "{:.2} as AWS bills them ({} Query, {} GetItem, {} BatchGetItem; {:.2} as DynamoDB Local reports them)",
            billed_reads as f64 / n,
            requests.of("Query"),
            requests.of("GetItem"),
            requests.of("BatchGetItem"),
            reads / n,
        ),
        "",
    );
    silence_rows().await
}

/// The silence check over 10,000 SIMs a rule has seen: its reads, and its time.
async fn silence_rows() -> Result<(), String> {
    let (ledger, _) = counted_ledger("silence").await?;
    let rules =
        Rules::parse(r#"{"rules": [{"id": "silent", "kind": "silence", "after_minutes": 180}]}"#)
            .map_err(|e| e.to_string())?;
    apply(&ledger, &rules).await?;
    let seen_at = Utc.with_ymd_and_hms(2024, 11, 3, 6, 0, 0).unwrap();
    let writes = (0..SILENT_SIMS).map(|i| {
        let alerts = ledger.alerts();
        async move {
            alerts
                .seen(
                    "silent",
                    &format!("HS{i:032}"),
                    seen_at,
                    &format!("EZ{i:032}"),
                )
                .await
        }
    });
    let mut writes = futures::stream::iter(writes.collect::<Vec<_>>()).buffer_unordered(32);
    while let Some(done) = writes.next().await {
        done.map_err(|e| e.to_string())?;
    }
    let (evaluator, requests, own) = evaluator_of(&ledger);
    // A check while every SIM is still within its 180 minutes: reads only.
    let started = std::time::Instant::now();
    let report = check_silence(&evaluator, seen_at + Span::minutes(60))
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if report.sims_checked != SILENT_SIMS || !report.raised.is_empty() {
        return Err(format!(
            "the silence check saw {} SIMs",
            report.sims_checked
        ));
    }
    row(
        &format!("alerts: scheduled silence check, {SILENT_SIMS} SIMs seen by one rule"),
        &format!(
            "{:.1} read units ({} Query requests over {} partitions, no Scan), {:.2} s",
            own.table().consumed_read_units(),
            requests.of("Query"),
            keys::SHARDS,
            elapsed.as_secs_f64()
        ),
        "",
    );
    Ok(())
}
