//! The table's primitives, in one place: the conditional put that makes a write happen once,
//! consistent reads, queries page by page, batched reads that ask again for what DynamoDB
//! left unprocessed, transactions and the one back-off their retries use. Every call adds
//! the capacity it was charged to the table's count, which the benchmark reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConsumedCapacity, KeysAndAttributes,
    ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use futures::StreamExt;
use kore_ingest_core::port::LedgerError;

use super::config::LedgerConfig;
use super::error::{build_error, condition_failed, from_sdk};
use super::items::attrs::Item;

/// What [`Table::put_if_absent`] found.
pub enum PutIfAbsent {
    Created,
    /// The key was taken; the stored item, when DynamoDB returned it.
    Exists(Option<Item>),
}

/// What a batched read does with keys DynamoDB leaves unprocessed (under throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprocessed {
    /// Ask for them again, backing off, and fail if they stay: a report must be whole.
    AskAgain,
    /// Leave them out after one round: the duplicate pre-check only saves writes (the write
    /// conditions still catch what it misses) and must not hold a batch up.
    LeaveOut,
}

/// How often keys DynamoDB leaves unprocessed are asked for again before giving up.
const BATCH_GET_ROUNDS: u64 = 10;

/// A query: the index (`None`: the table), the key condition with its string values, and
/// what to read of each item (`None`: everything).
pub struct Query<'a> {
    pub index: Option<&'a str>,
    pub condition: &'a str,
    pub values: Vec<(&'a str, String)>,
    pub consistent: bool,
    pub projection: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Every item of the partition `pk`.
    pub fn partition(pk: String) -> Self {
        Query {
            index: None,
            condition: "pk = :pk",
            values: vec![(":pk", pk)],
            consistent: false,
            projection: None,
        }
    }

    /// Every item of the partition `pk` whose sort key begins with `prefix`.
    pub fn prefix(pk: String, prefix: impl Into<String>) -> Self {
        Query {
            index: None,
            condition: "pk = :pk AND begins_with(sk, :prefix)",
            values: vec![(":pk", pk), (":prefix", prefix.into())],
            consistent: false,
            projection: None,
        }
    }

    /// Every item of the partition `pk` whose sort key lies in `[low, high]`.
    pub fn between(pk: String, low: String, high: String) -> Self {
        Query {
            index: None,
            condition: "pk = :pk AND sk BETWEEN :low AND :high",
            values: vec![(":pk", pk), (":low", low), (":high", high)],
            consistent: false,
            projection: None,
        }
    }

    pub fn consistent(mut self, consistent: bool) -> Self {
        self.consistent = consistent;
        self
    }

    pub fn projection(mut self, projection: Option<&'a str>) -> Self {
        self.projection = projection;
        self
    }
}

/// How one transaction ended.
pub enum Sent {
    Committed,
    /// Cancelled: the reason of every action, in order.
    Cancelled(Vec<CancellationReason>),
    Failed(LedgerError),
}

/// Why DynamoDB cancelled one action of a transaction: the reason codes it documents, kept
/// as values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelCode {
    /// This action was fine; another one failed.
    None,
    ConditionalCheckFailed,
    TransactionConflict,
    ThrottlingError,
    ProvisionedThroughputExceeded,
    RequestLimitExceeded,
    Other(String),
}

impl CancelCode {
    pub fn of(reason: Option<&CancellationReason>) -> Self {
        match reason.and_then(CancellationReason::code) {
            None | Some("None") => CancelCode::None,
            Some("ConditionalCheckFailed") => CancelCode::ConditionalCheckFailed,
            Some("TransactionConflict") => CancelCode::TransactionConflict,
            Some("ThrottlingError") => CancelCode::ThrottlingError,
            Some("ProvisionedThroughputExceeded") => CancelCode::ProvisionedThroughputExceeded,
            Some("RequestLimitExceeded") => CancelCode::RequestLimitExceeded,
            Some(other) => CancelCode::Other(other.to_owned()),
        }
    }

    /// Every action's code of a cancelled transaction of `actions` actions.
    pub fn all(reasons: &[CancellationReason], actions: usize) -> Vec<CancelCode> {
        (0..actions.max(reasons.len()))
            .map(|i| CancelCode::of(reasons.get(i)))
            .collect()
    }

    /// The same transaction can succeed later.
    pub fn passing(&self) -> bool {
        !matches!(
            self,
            CancelCode::ConditionalCheckFailed | CancelCode::Other(_)
        )
    }

    /// `transaction cancelled: None, ThrottlingError`: every action's code, in order.
    pub fn message(codes: &[CancelCode]) -> String {
        let names: Vec<&str> = codes.iter().map(CancelCode::name).collect();
        format!("transaction cancelled: {}", names.join(", "))
    }

    pub fn name(&self) -> &str {
        match self {
            CancelCode::None => "None",
            CancelCode::ConditionalCheckFailed => "ConditionalCheckFailed",
            CancelCode::TransactionConflict => "TransactionConflict",
            CancelCode::ThrottlingError => "ThrottlingError",
            CancelCode::ProvisionedThroughputExceeded => "ProvisionedThroughputExceeded",
            CancelCode::RequestLimitExceeded => "RequestLimitExceeded",
            CancelCode::Other(code) => code,
        }
    }

    /// The error of a transaction cancelled with `codes`: retryable when every code passes.
    pub fn error(codes: &[CancelCode]) -> LedgerError {
        let code = Some("TransactionCanceledException".to_owned());
        let message = CancelCode::message(codes);
        if codes.iter().all(CancelCode::passing) {
            LedgerError::Retryable {
                operation: "TransactWriteItems",
                code,
                message,
            }
        } else {
            LedgerError::Rejected {
                operation: "TransactWriteItems",
                code,
                message,
            }
        }
    }
}

/// The one retry policy of transactions that collide with another writer or are throttled:
/// at most [`Self::ATTEMPTS`] attempts, with exponential back-off and jitter from 25 ms.
#[derive(Debug, Default)]
pub struct TransactionRetries {
    attempt: u32,
}

impl TransactionRetries {
    pub const ATTEMPTS: u32 = 6;

    /// Waits before the next attempt; `false` when the attempts are spent.
    pub async fn wait(&mut self) -> bool {
        self.attempt += 1;
        if self.attempt >= Self::ATTEMPTS {
            return false;
        }
        let base = 25u64 << self.attempt.min(6);
        tokio::time::sleep(Duration::from_millis(base + fastrand_u64() % base)).await;
        true
    }
}

/// A number that differs from call to call (and process to process), for jitter.
fn fastrand_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    nanos
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Capacity DynamoDB reported, in thousandths of a unit.
#[derive(Debug, Default)]
struct Capacity {
    write: AtomicU64,
    read: AtomicU64,
    /// Failed conditions: DynamoDB reports nothing for them, AWS bills them.
    failed_writes: AtomicU64,
}

/// The ledger's table: cheap to clone, build it once per process.
#[derive(Debug, Clone)]
pub struct Table {
    client: Client,
    config: Arc<LedgerConfig>,
    capacity: Arc<Capacity>,
}

impl Table {
    pub fn new(client: Client, config: LedgerConfig) -> Self {
        Table {
            client,
            config: Arc::new(config),
            capacity: Arc::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn name(&self) -> &str {
        &self.config.table_name
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// How many requests a batch runs at once.
    pub fn concurrency(&self) -> usize {
        self.config.max_concurrent_writes.max(1)
    }

    /// Write units so far: what DynamoDB reported for successful writes, plus the one unit
    /// per failed conditional write (two per action of a cancelled transaction) that AWS
    /// bills but DynamoDB does not report.
    pub fn consumed_write_units(&self) -> f64 {
        let c = &self.capacity;
        (c.write.load(Ordering::Relaxed) + c.failed_writes.load(Ordering::Relaxed)) as f64 / 1000.0
    }

    /// Read units DynamoDB reported so far.
    pub fn consumed_read_units(&self) -> f64 {
        self.capacity.read.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn count(&self, capacity: Option<&ConsumedCapacity>, write: bool) {
        let Some(units) = capacity.and_then(ConsumedCapacity::capacity_units) else {
            return;
        };
        let counter = match write {
            true => &self.capacity.write,
            false => &self.capacity.read,
        };
        counter.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    fn count_failed_writes(&self, units: u64) {
        self.capacity
            .failed_writes
            .fetch_add(units * 1000, Ordering::Relaxed);
    }

    /// An unconditional put.
    pub async fn put(&self, item: Item) -> Result<(), LedgerError> {
        let output = self
            .client
            .put_item()
            .table_name(self.name())
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk("PutItem", e))?;
        self.count(output.consumed_capacity(), true);
        Ok(())
    }

    /// A put that only creates: `attribute_not_exists(pk)`, with the existing item returned
    /// (at no read cost) when the key is taken.
    pub async fn put_if_absent(&self, item: Item) -> Result<PutIfAbsent, LedgerError> {
        let result = self
            .client
            .put_item()
            .table_name(self.name())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.count(output.consumed_capacity(), true);
                Ok(PutIfAbsent::Created)
            }
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    PutItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                self.count_failed_writes(1);
                let old = match service.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                Ok(PutIfAbsent::Exists(old))
            }
            Err(error) => Err(from_sdk("PutItem", error)),
        }
    }

    /// One item by key, read consistently.
    pub async fn get(&self, key: Item) -> Result<Option<Item>, LedgerError> {
        let output = self
            .client
            .get_item()
            .table_name(self.name())
            .set_key(Some(key))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk("GetItem", e))?;
        self.count(output.consumed_capacity(), false);
        Ok(output.item)
    }

    /// Deletes an item; the item as it was, if it existed.
    pub async fn delete(&self, key: Item) -> Result<Option<Item>, LedgerError> {
        let output = self
            .client
            .delete_item()
            .table_name(self.name())
            .set_key(Some(key))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteItem", e))?;
        self.count(output.consumed_capacity(), true);
        Ok(output.attributes)
    }

    /// `UpdateItem` of `key` with `expression` and `values` (and `names` for reserved words).
    pub async fn update(
        &self,
        key: Item,
        expression: &str,
        names: &[(&str, &str)],
        values: Item,
    ) -> Result<(), LedgerError> {
        self.update_where(key, expression, None, names, values)
            .await
            .map(|_| ())
    }

    /// An update that only happens while `condition` holds: `false` when it did not (the
    /// item changed since it was read). `names` and `values` serve both expressions.
    pub async fn update_if(
        &self,
        key: Item,
        expression: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Item,
    ) -> Result<bool, LedgerError> {
        self.update_where(key, expression, Some(condition), names, values)
            .await
    }

    async fn update_where(
        &self,
        key: Item,
        expression: &str,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: Item,
    ) -> Result<bool, LedgerError> {
        let mut request = self
            .client
            .update_item()
            .table_name(self.name())
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values(Some(values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        for (name, value) in names {
            request = request.expression_attribute_names(*name, *value);
        }
        let sent = request.send().await;
        self.conditional("UpdateItem", sent.map(|o| o.consumed_capacity))
    }

    /// A delete that only happens while `condition` holds: `false` when it did not.
    pub async fn delete_if(
        &self,
        key: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Item,
    ) -> Result<bool, LedgerError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(self.name())
            .set_key(Some(key))
            .condition_expression(condition)
            // DynamoDB refuses an empty map of values.
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        for (name, value) in names {
            request = request.expression_attribute_names(*name, *value);
        }
        let sent = request.send().await;
        self.conditional("DeleteItem", sent.map(|o| o.consumed_capacity))
    }

    /// A conditional write's answer: `true` when it happened (its capacity counted),
    /// `false` when its condition did not hold (billed all the same).
    fn conditional<E, R>(
        &self,
        operation: &'static str,
        sent: Result<Option<ConsumedCapacity>, SdkError<E, R>>,
    ) -> Result<bool, LedgerError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match sent {
            Ok(capacity) => {
                self.count(capacity.as_ref(), true);
                Ok(true)
            }
            Err(error) if condition_failed(&error) => {
                self.count_failed_writes(1);
                Ok(false)
            }
            Err(error) => Err(from_sdk(operation, error)),
        }
    }

    /// Every item a query finds, page by page.
    pub async fn query(&self, query: Query<'_>) -> Result<Vec<Item>, LedgerError> {
        let mut request = self
            .client
            .query()
            .table_name(self.name())
            .set_index_name(query.index.map(str::to_owned))
            .key_condition_expression(query.condition)
            .set_projection_expression(query.projection.map(str::to_owned))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if query.consistent {
            request = request.consistent_read(true);
        }
        for (name, value) in query.values {
            request = request.expression_attribute_values(name, AttributeValue::S(value));
        }
        let mut pages = request.into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("Query", e))?;
            self.count(page.consumed_capacity(), false);
            items.extend(page.items.unwrap_or_default());
        }
        Ok(items)
    }

    /// At most `limit` items of an index partition, newest (highest sort key) first.
    pub async fn newest(
        &self,
        index: &str,
        pk_name: &str,
        pk: &str,
        limit: usize,
    ) -> Result<Vec<Item>, LedgerError> {
        let mut pages = self
            .client
            .query()
            .table_name(self.name())
            .index_name(index)
            .key_condition_expression(format!("{pk_name} = :pk"))
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .scan_index_forward(false)
            .into_paginator()
            .items()
            .send();
        let mut items: Vec<Item> = Vec::new();
        while items.len() < limit {
            match pages.next().await {
                Some(item) => items.push(item.map_err(|e| from_sdk("Query", e))?),
                None => break,
            }
        }
        Ok(items)
    }

    /// The items of `keys` that exist, by consistent `BatchGetItem`s of 100 keys, at most
    /// [`Self::concurrency`] at once; keys left unprocessed as `unprocessed` says.
    pub async fn batch_get(
        &self,
        keys: Vec<Item>,
        projection: Option<&str>,
        unprocessed: Unprocessed,
    ) -> Result<Vec<Item>, LedgerError> {
        self.batch_get_read(keys, projection, unprocessed, true)
            .await
    }

    /// [`Table::batch_get`], with strongly consistent reads or not (half the read units).
    pub async fn batch_get_read(
        &self,
        keys: Vec<Item>,
        projection: Option<&str>,
        unprocessed: Unprocessed,
        consistent: bool,
    ) -> Result<Vec<Item>, LedgerError> {
        let rounds = match unprocessed {
            Unprocessed::AskAgain => BATCH_GET_ROUNDS,
            Unprocessed::LeaveOut => 1,
        };
        let count = keys.len();
        let mut keys = keys.into_iter();
        let chunks = std::iter::from_fn(|| {
            let chunk: Vec<Item> = keys.by_ref().take(100).collect();
            (!chunk.is_empty()).then_some(chunk)
        });
        let lookups = chunks
            .map(|chunk| self.batch_get_chunk(chunk, projection, rounds, unprocessed, consistent));
        let mut results =
            futures::stream::iter(lookups.collect::<Vec<_>>()).buffer_unordered(self.concurrency());
        let mut items = Vec::with_capacity(count);
        while let Some(found) = results.next().await {
            items.extend(found?);
        }
        Ok(items)
    }

    async fn batch_get_chunk(
        &self,
        mut pending: Vec<Item>,
        projection: Option<&str>,
        rounds: u64,
        unprocessed: Unprocessed,
        consistent: bool,
    ) -> Result<Vec<Item>, LedgerError> {
        let mut found = Vec::new();
        for round in 1..=rounds {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(consistent)
                .set_projection_expression(projection.map(str::to_owned))
                .build()
                .map_err(build_error)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(self.name(), request)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| from_sdk("BatchGetItem", e))?;
            for capacity in output.consumed_capacity() {
                self.count(Some(capacity), false);
            }
            found.extend(
                output
                    .responses
                    .and_then(|mut r| r.remove(self.name()))
                    .unwrap_or_default(),
            );
            pending = output
                .unprocessed_keys
                .and_then(|mut u| u.remove(self.name()))
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
    }

    /// Sends one transaction. The SDK gives every `TransactWriteItems` a client request
    /// token of its own and keeps it across its retries, so a retry of a commit that
    /// succeeded succeeds again instead of failing its conditions and reporting the events
    /// as duplicates of themselves (`an_sdk_retry_of_a_commit_that_succeeded_reports_new`).
    pub async fn transact(&self, actions: Vec<TransactWriteItem>) -> Sent {
        let count = actions.len() as u64;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                for capacity in output.consumed_capacity() {
                    self.count(Some(capacity), true);
                }
                Sent::Committed
            }
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    TransactWriteItemsError::TransactionCanceledException(_)
                ) =>
            {
                // AWS bills a cancelled transaction; DynamoDB reports nothing for it.
                self.count_failed_writes(2 * count);
                match service.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        Sent::Cancelled(cancelled.cancellation_reasons.unwrap_or_default())
                    }
                    other => Sent::Failed(LedgerError::Invalid(other.to_string())),
                }
            }
            Err(error) => Sent::Failed(from_sdk("TransactWriteItems", error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_codes_are_values_and_only_passing_ones_retry() {
        let reason = |code: &str| CancellationReason::builder().code(code).build();
        assert_eq!(CancelCode::of(None), CancelCode::None);
        assert_eq!(CancelCode::of(Some(&reason("None"))), CancelCode::None);
        for passing in [
            "None",
            "TransactionConflict",
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
        ] {
            assert!(
                CancelCode::of(Some(&reason(passing))).passing(),
                "{passing}"
            );
        }
        assert!(!CancelCode::of(Some(&reason("ConditionalCheckFailed"))).passing());
        let other = CancelCode::of(Some(&reason("ValidationError")));
        assert_eq!(other, CancelCode::Other("ValidationError".into()));
        assert!(!other.passing());
        assert_eq!(other.name(), "ValidationError");
        assert!(CancelCode::error(&[CancelCode::None, CancelCode::ThrottlingError]).is_retryable());
        assert!(!CancelCode::error(&[other]).is_retryable());
    }
}
