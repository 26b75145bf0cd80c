//! What the ledger stores per usage event, as DynamoDB bills storage: each item's size
//! (attribute names and values, which DynamoDB Local reports as the table's size) plus 100
//! bytes of overhead per item. Usage events are not in the time index, so the table is all
//! of it. Split into what `LEDGER_RETENTION_DAYS` lets expire (the items carrying
//! `expires_at`: event records, booking lists) and what is kept (rollups): the kept items
//! are copied into an empty table and measured there.

use aws_sdk_dynamodb::Client;
use futures::StreamExt;
use kore_ingest_aws::ledger::UsageLedger;

use crate::figures;
use crate::measured::{HashItem, counted_ledger};
use crate::rows::row;

/// DynamoDB's storage overhead per item (indexing), billed with the item.
const ITEM_OVERHEAD_BYTES: u64 = 100;

/// Reports the bytes per usage event of `ledger`, which holds `events` of them.
pub async fn stored_row(ledger: &UsageLedger, events: u64) -> Result<(), String> {
    let client = ledger.table().client();
    let all = billed_bytes(client, ledger.table_name()).await?;
    let kept_items: Vec<HashItem> = client
        .scan()
        .table_name(ledger.table_name())
        .filter_expression("attribute_not_exists(expires_at)")
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| format!("scan the kept items: {e}"))?;
    let (copy, _) = counted_ledger("kept").await?;
    let puts = kept_items.into_iter().map(|item| {
        copy.table()
            .client()
            .put_item()
            .table_name(copy.table_name())
            .set_item(Some(item))
            .send()
    });
    let mut puts = futures::stream::iter(puts.collect::<Vec<_>>()).buffer_unordered(32);
    while let Some(put) = puts.next().await {
        put.map_err(|e| format!("copy a kept item: {e}"))?;
    }
    let kept = billed_bytes(client, copy.table_name()).await?;
    let per_event = |bytes: u64| bytes as f64 / events as f64;
    let (expiring, kept) = (per_event(all.saturating_sub(kept)), per_event(kept));
    figures::record(figures::LEDGER_BYTES_EXPIRING, expiring);
    figures::record(figures::LEDGER_BYTES_KEPT, kept);
    row(
        "ledger storage per usage event as DynamoDB bills it (the 100,000 events, with `expires_at`)",
        &format!(
            "{:.0} bytes: {expiring:.0} in event records and booking lists (they expire), {kept:.0} in rollups (kept)",
            expiring + kept
        ),
        "",
    );
    Ok(())
}

/// The table's size as DynamoDB bills it: the size DynamoDB Local reports, plus the
/// overhead of each item.
async fn billed_bytes(client: &Client, table: &str) -> Result<u64, String> {
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| format!("describe {table}: {e}"))?;
    let table = described
        .table()
        .ok_or_else(|| format!("describe {table}: no table"))?;
    // A figure DynamoDB Local leaves out would make storage look free: an error instead.
    let count = |name: &str, value: Option<i64>| {
        value
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| format!("describe {}: no {name}", table.table_name().unwrap_or("?")))
    };
    let size = count("TableSizeBytes", table.table_size_bytes())?;
    let items = count("ItemCount", table.item_count())?;
    Ok(size + items * ITEM_OVERHEAD_BYTES)
}
