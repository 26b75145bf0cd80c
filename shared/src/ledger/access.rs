//! The table's read primitives, in one place: queries page by page, batched reads that ask
//! again for what DynamoDB left unprocessed, the time index, and the one way a failed
//! condition is recognised. Every read adds the capacity it was charged to the ledger's
//! count.

use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;

use super::items::{key, string_attr};
use super::{Item, LedgerError, UsageLedger, keys, timestamp};
use crate::event::DedupeKey;

/// How often keys DynamoDB leaves unprocessed are asked for again before giving up.
const BATCH_GET_ROUNDS: u64 = 10;

/// What a batched read does with keys DynamoDB leaves unprocessed (under throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unprocessed {
    /// Ask for them again, backing off, and fail if they stay: a report must be whole.
    AskAgain,
    /// Leave them out after one round: the duplicate pre-check only saves writes (the write
    /// conditions still catch what it misses) and must not hold a batch up.
    LeaveOut,
}

/// Whether a write failed its condition: the error code, whatever the operation.
pub(crate) fn condition_failed<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    matches!(error, SdkError::ServiceError(service)
        if service.err().code() == Some("ConditionalCheckFailedException"))
}

impl UsageLedger {
    pub(crate) async fn query_all(
        &self,
        index: Option<&str>,
        key_condition: &str,
        values: &[(&str, String)],
        consistent: bool,
    ) -> Result<Vec<Item>, LedgerError> {
        self.query_items(index, key_condition, values, consistent, None)
            .await
    }

    /// Every item of the partition `pk` whose sort key begins with `prefix`.
    pub(crate) async fn query_prefix(
        &self,
        pk: String,
        prefix: &str,
        consistent: bool,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, LedgerError> {
        self.query_items(
            None,
            "pk = :pk AND begins_with(sk, :prefix)",
            &[(":pk", pk), (":prefix", prefix.to_owned())],
            consistent,
            projection,
        )
        .await
    }

    /// Every item a query finds, page by page; `projection` names the attributes to read.
    pub(crate) async fn query_items(
        &self,
        index: Option<&str>,
        key_condition: &str,
        values: &[(&str, String)],
        consistent: bool,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, LedgerError> {
        let mut query = self
            .client
            .query()
            .table_name(self.table_name())
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(key_condition)
            .set_projection_expression(projection.map(str::to_owned))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if consistent {
            query = query.consistent_read(true);
        }
        for (name, value) in values {
            query = query.expression_attribute_values(*name, AttributeValue::S(value.clone()));
        }
        let mut pages = query.into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| LedgerError::from_sdk("Query", e))?;
            self.add_capacity(page.consumed_capacity(), false);
            items.extend(page.items.unwrap_or_default());
        }
        Ok(items)
    }

    /// The event records of `keys` that exist, by consistent `BatchGetItem`s of 100 keys, at
    /// most `max_concurrent_writes` at once; keys left unprocessed as `unprocessed` says.
    pub(crate) async fn event_records(
        &self,
        keys: &[&DedupeKey],
        projection: Option<&str>,
        unprocessed: Unprocessed,
    ) -> Result<Vec<Item>, LedgerError> {
        let rounds = match unprocessed {
            Unprocessed::AskAgain => BATCH_GET_ROUNDS,
            Unprocessed::LeaveOut => 1,
        };
        let lookups = keys.chunks(100).map(|chunk| async move {
            let mut pending: Vec<Item> = chunk
                .iter()
                .map(|k| key(keys::event_pk(k), keys::SINGLE))
                .collect();
            let mut found = Vec::new();
            for round in 1..=rounds {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .set_projection_expression(projection.map(str::to_owned))
                    .build()
                    .map_err(|e| LedgerError::Invalid(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(self.table_name(), request)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(|e| LedgerError::from_sdk("BatchGetItem", e))?;
                for capacity in output.consumed_capacity() {
                    self.add_capacity(Some(capacity), false);
                }
                found.extend(
                    output
                        .responses
                        .and_then(|mut r| r.remove(self.table_name()))
                        .unwrap_or_default(),
                );
                pending = output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(self.table_name()))
                    .map(|left| left.keys)
                    .unwrap_or_default();
                if pending.is_empty() || unprocessed == Unprocessed::LeaveOut {
                    return Ok(found);
                }
                if round < rounds {
                    tokio::time::sleep(Duration::from_millis(20 * round)).await;
                }
            }
            Err(LedgerError::Retryable {
                operation: "BatchGetItem",
                code: None,
                message: format!("keys stayed unprocessed after {BATCH_GET_ROUNDS} rounds"),
            })
        });
        let mut results =
            futures::stream::iter(lookups.collect::<Vec<_>>()).buffer_unordered(self.concurrency());
        let mut items = Vec::with_capacity(keys.len());
        while let Some(found) = results.next().await {
            items.extend(found?);
        }
        Ok(items)
    }

    /// The time index's entries of one day (by event time) in `[from, to)`, every shard:
    /// `(event time, event key, item)`.
    pub(crate) async fn time_index(
        &self,
        day: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, DedupeKey, Item)>, LedgerError> {
        let day = day.format("%Y-%m-%d").to_string();
        let (low, high) = (timestamp(from), timestamp(to));
        let mut entries = Vec::new();
        for shard in 0..keys::SHARDS {
            let items = self
                .query_all(
                    Some("gsi1"),
                    "gsi1pk = :pk AND gsi1sk BETWEEN :low AND :high",
                    &[
                        (":pk", keys::events_by_day_pk(&day, shard)),
                        (":low", low.clone()),
                        (":high", high.clone()),
                    ],
                    false,
                )
                .await?;
            for item in items {
                let Some((event_time, sid)) = string_attr(&item, "gsi1sk")
                    .and_then(|sk| sk.split_once('#'))
                    .map(|(t, s)| (t.to_owned(), s.to_owned()))
                else {
                    continue;
                };
                // BETWEEN includes `high`; the range does not.
                if event_time >= high {
                    continue;
                }
                if let Ok(key) = DedupeKey::new(&sid, "gsi1sk") {
                    entries.push((event_time, key, item));
                }
            }
        }
        Ok(entries)
    }
}
