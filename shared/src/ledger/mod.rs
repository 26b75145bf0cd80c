//! The exactly-once usage ledger on DynamoDB.
//!
//! Every event is one item keyed on its dedupe key, written with a conditional put. A
//! usage-bearing event is written in one transaction with its SIM's day and month rollups and
//! its data session's window sums, so a usage count can never be applied twice or lost, even
//! if the process dies between calls. In a batch, a SIM's new usage events share those
//! transactions, up to 25 events with their merged sums in each ([`group`]). Copies of an event that arrive again (retries, the
//! other provider) are recognized by the failed condition and only add their delivery to the
//! event's `deliveries` set; a copy whose `data` differs is a conflict and is quarantined.
//!
//! Nothing received is dropped: what cannot be parsed or stored goes to the quarantine with
//! its reason, and what failed for a passing reason is reported as retryable.

pub mod callbacks;
mod group;
mod items;
pub mod keys;
pub mod quarantine;
pub mod reports;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, Put, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;

use crate::event::{ConnectionEvent, DedupeKey, ParsedItem, Provider};
pub use quarantine::{QuarantineEntry, QuarantineKind, QuarantinedPayload};

pub type Item = HashMap<String, AttributeValue>;

/// How an input reached us. Stored with every event and quarantined payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Kinesis {
        shard_id: String,
        sequence_number: String,
    },
    Webhook {
        request_id: String,
    },
    /// `kore-usage replay` or a quarantine redrive by an operator.
    Replay {
        source: String,
    },
}

impl Origin {
    /// The delivery path: `kinesis`, `webhook` or `replay`.
    pub fn path(&self) -> &'static str {
        match self {
            Origin::Kinesis { .. } => "kinesis",
            Origin::Webhook { .. } => "webhook",
            Origin::Replay { .. } => "replay",
        }
    }

    /// Where exactly: `shard/sequence`, the request id, or the replayed source.
    pub fn locator(&self) -> String {
        match self {
            Origin::Kinesis {
                shard_id,
                sequence_number,
            } => format!("{shard_id}/{sequence_number}"),
            Origin::Webhook { request_id } => request_id.clone(),
            Origin::Replay { source } => source.clone(),
        }
    }
}

/// One delivery of a payload: where from, and when it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub origin: Origin,
    pub received_at: DateTime<Utc>,
    /// Known from the request (webhook headers) even when the payload cannot be parsed.
    pub provider_hint: Option<Provider>,
}

impl Delivery {
    pub fn now(origin: Origin) -> Self {
        Delivery {
            origin,
            received_at: Utc::now(),
            provider_hint: None,
        }
    }
}

/// What happened to one input. Every input ends in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// First time seen: stored, and its usage counted.
    New,
    /// Seen before with the same data: nothing counted again. `new_delivery` is true when
    /// this provider and path had not delivered it before (now recorded).
    Duplicate { new_delivery: bool },
    /// Seen before with different data: the first is kept, this copy quarantined.
    Conflict { quarantine_id: String },
    /// Unusable input, kept in the quarantine with the reason.
    Quarantined {
        quarantine_id: String,
        reason: String,
    },
    /// Not stored for a passing reason (throttling, timeout, server error, deadline): the
    /// caller must have it delivered again.
    Retry { reason: String },
}

impl Outcome {
    pub fn is_retry(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("DynamoDB {operation} failed for a passing reason ({message}); retry")]
    Retryable {
        operation: &'static str,
        message: String,
    },
    #[error("DynamoDB {operation} rejected the request: {message}")]
    Rejected {
        operation: &'static str,
        message: String,
    },
    #[error("table definition: {0}")]
    Definition(String),
    #[error("stored item {pk} is malformed: {reason}")]
    CorruptItem { pk: String, reason: String },
    #[error("cannot store event: {0}")]
    Invalid(String),
}

/// DynamoDB error codes after which the same request can succeed.
const RETRYABLE_CODES: [&str; 8] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
];

impl LedgerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, LedgerError::Retryable { .. })
    }

    pub(crate) fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = aws_sdk_dynamodb::error::DisplayErrorContext(&error).to_string();
        let retryable = match &error {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or_default();
                RETRYABLE_CODES.contains(&code) || code.is_empty()
            }
            SdkError::ConstructionFailure(_) => false,
            // Timeouts, connection failures and unreadable responses: the request may or may
            // not have been applied, which the conditional writes make safe to repeat.
            _ => true,
        };
        if retryable {
            LedgerError::Retryable { operation, message }
        } else {
            LedgerError::Rejected { operation, message }
        }
    }
}

/// Configuration of a [`UsageLedger`].
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub table_name: String,
    /// How many writes one batch runs at once (`MAX_CONCURRENT_WRITES`).
    pub max_concurrent_writes: usize,
}

impl LedgerConfig {
    pub const DEFAULT_MAX_CONCURRENT_WRITES: usize = 32;

    pub fn new(table_name: impl Into<String>) -> Self {
        LedgerConfig {
            table_name: table_name.into(),
            max_concurrent_writes: Self::DEFAULT_MAX_CONCURRENT_WRITES,
        }
    }

    /// `TABLE_NAME` (required) and `MAX_CONCURRENT_WRITES` (default 32, 1 to 1000).
    pub fn from_env() -> Result<Self, String> {
        let table_name = std::env::var("TABLE_NAME")
            .map_err(|_| "TABLE_NAME is not set: name the DynamoDB table".to_owned())?;
        let mut config = LedgerConfig::new(table_name);
        if let Ok(value) = std::env::var("MAX_CONCURRENT_WRITES") {
            config.max_concurrent_writes = value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    format!(
                        "MAX_CONCURRENT_WRITES must be a whole number from 1 to 1000, not `{value}`"
                    )
                })?;
        }
        Ok(config)
    }
}

/// What [`UsageLedger::put_if_absent`] found.
pub(crate) enum PutIfAbsent {
    Created,
    /// The key was taken; the stored item, when DynamoDB returned it.
    Exists(Option<Item>),
}

/// The ledger: cheap to clone, build it once per process.
#[derive(Debug, Clone)]
pub struct UsageLedger {
    client: Client,
    config: Arc<LedgerConfig>,
    /// Write capacity DynamoDB reported, in thousandths of a WCU.
    consumed_milli_wcu: Arc<AtomicU64>,
}

/// Transactions that collide with another writer of the same items are retried this often
/// before the input is reported as retryable.
const TRANSACTION_ATTEMPTS: u32 = 6;

impl UsageLedger {
    pub fn new(client: Client, config: LedgerConfig) -> Self {
        UsageLedger {
            client,
            config: Arc::new(config),
            consumed_milli_wcu: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The ledger of a deployed function or tool: AWS configuration the standard way
    /// (environment, profiles, `AWS_ENDPOINT_URL_DYNAMODB`), [`LedgerConfig::from_env`], and
    /// timeouts that fail a hung call fast enough to report it as retryable.
    pub async fn from_env() -> Result<Self, String> {
        let config = LedgerConfig::from_env()?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(10))
            .build();
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        Ok(UsageLedger::new(Client::new(&aws), config))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table_name(&self) -> &str {
        &self.config.table_name
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Write capacity units DynamoDB reported for this ledger's successful writes so far.
    /// (DynamoDB reports nothing for a write whose condition failed; see the README.)
    pub fn consumed_write_units(&self) -> f64 {
        self.consumed_milli_wcu.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn add_consumed(&self, capacity: Option<&ConsumedCapacity>) {
        if let Some(units) = capacity.and_then(ConsumedCapacity::capacity_units) {
            self.consumed_milli_wcu
                .fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    /// Records one parsed element: a valid event is stored, a rejected one quarantined.
    pub async fn record(&self, item: &ParsedItem, delivery: &Delivery) -> Outcome {
        match item {
            Ok(event) => self.record_event(event, delivery).await,
            Err(rejected) => {
                self.quarantine_or_retry(QuarantineEntry {
                    kind: QuarantineKind::Event,
                    payload: rejected.raw.as_bytes(),
                    reason: rejected.error.to_string(),
                    delivery,
                    related_event: None,
                })
                .await
            }
        }
    }

    /// Records many inputs, outcomes in input order. Copies of one event are written one
    /// after another in input order, so the first copy in the stream is the one kept. The
    /// first copies of a SIM's usage events are committed together (see [`group`]), and
    /// up to `max_concurrent_writes` SIMs or other inputs are written at once. Once
    /// `deadline` has passed no new write starts: the rest get `Retry`.
    pub async fn record_all(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<Outcome> {
        let mut chains: Vec<Vec<usize>> = Vec::with_capacity(inputs.len());
        let mut chain_of_key: HashMap<&DedupeKey, usize> = HashMap::with_capacity(inputs.len());
        for (index, (item, _)) in inputs.iter().enumerate() {
            match item {
                Ok(event) => match chain_of_key.get(&event.key) {
                    Some(&chain) => chains[chain].push(index),
                    None => {
                        chain_of_key.insert(&event.key, chains.len());
                        chains.push(vec![index]);
                    }
                },
                Err(_) => chains.push(vec![index]),
            }
        }

        // Usage events seen before (re-deliveries, the other provider) take the duplicate
        // path at once rather than cancel a group's transaction. If the lookup fails, the
        // transactions' conditions still tell.
        let usage_heads: Vec<&ConnectionEvent> = chains
            .iter()
            .filter_map(|chain| match &inputs[chain[0]].0 {
                Ok(event) if event.usage.is_some() => Some(event),
                _ => None,
            })
            .collect();
        let stored = self.already_stored(&usage_heads).await.unwrap_or_default();

        // Units that may run concurrently: all chains headed by a new-looking usage event of
        // one SIM (they share its rollups), or any other chain alone.
        let mut units: Vec<Unit> = Vec::with_capacity(chains.len());
        let mut unit_of_sim: HashMap<&str, usize> = HashMap::new();
        for chain in chains {
            let sim = match &inputs[chain[0]].0 {
                Ok(event)
                    if event.usage.is_some() && !stored.contains(&keys::event_pk(&event.key)) =>
                {
                    event.sim_sid.as_deref()
                }
                _ => None,
            };
            match sim {
                Some(sim) => match unit_of_sim.get(sim) {
                    Some(&unit) => units[unit].chains.push(chain),
                    None => {
                        unit_of_sim.insert(sim, units.len());
                        units.push(Unit {
                            grouped: true,
                            chains: vec![chain],
                        });
                    }
                },
                None => units.push(Unit {
                    grouped: false,
                    chains: vec![chain],
                }),
            }
        }

        let mut outcomes: Vec<Option<Outcome>> = vec![None; inputs.len()];
        let mut stream = futures::stream::iter(units)
            .map(|unit| async move { self.record_unit(inputs, unit, deadline).await })
            .buffer_unordered(self.config.max_concurrent_writes.max(1));
        while let Some(results) = stream.next().await {
            for (index, outcome) in results {
                outcomes[index] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Retry {
                    reason: "not attempted".into(),
                })
            })
            .collect()
    }

    /// One unit of [`Self::record_all`]: a SIM's group commits its chains' first elements
    /// together; then every other element is recorded one at a time, in order.
    async fn record_unit(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        unit: Unit,
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<(usize, Outcome)> {
        let Unit { grouped, chains } = unit;
        let heads: Vec<group::Pending<'_>> = chains
            .iter()
            .filter_map(|chain| match &inputs[chain[0]] {
                (Ok(event), delivery) if grouped => Some(group::Pending {
                    index: chain[0],
                    event,
                    delivery,
                }),
                _ => None,
            })
            .collect();
        let (mut results, rest_of) = if heads.is_empty() {
            (Vec::new(), 0)
        } else {
            (self.record_usage_group(&heads, deadline).await, 1)
        };
        for chain in &chains {
            for &index in &chain[rest_of..] {
                let (item, delivery) = &inputs[index];
                let outcome = if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    Outcome::Retry {
                        reason: "invocation deadline reached before this write started".into(),
                    }
                } else {
                    self.record(item, delivery).await
                };
                results.push((index, outcome));
            }
        }
        results
    }

    /// Stores one event exactly once. See the module documentation.
    pub async fn record_event(&self, event: &ConnectionEvent, delivery: &Delivery) -> Outcome {
        match self.try_record_event(event, delivery).await {
            Ok(outcome) => outcome,
            Err(error) if error.is_retryable() => Outcome::Retry {
                reason: error.to_string(),
            },
            // DynamoDB refused the item itself (e.g. over 400 KB): keep it in the quarantine.
            Err(error) => {
                self.quarantine_or_retry(QuarantineEntry {
                    kind: QuarantineKind::Event,
                    payload: event.raw.as_bytes(),
                    reason: error.to_string(),
                    delivery,
                    related_event: Some(&event.key),
                })
                .await
            }
        }
    }

    async fn try_record_event(
        &self,
        event: &ConnectionEvent,
        delivery: &Delivery,
    ) -> Result<Outcome, LedgerError> {
        let existing = if event.usage.is_some() {
            self.put_event_with_usage(event, delivery).await?
        } else {
            self.put_event(event, delivery).await?
        };
        let Some(existing) = existing else {
            self.raise_session_high_water(event).await?;
            return Ok(Outcome::New);
        };
        let stored_hash = items::string_attr(&existing, "data_hash");
        if stored_hash != Some(event.data_hash.to_hex().as_str()) {
            let quarantine_id = self
                .quarantine(QuarantineEntry {
                    kind: QuarantineKind::Conflict,
                    payload: event.raw.as_bytes(),
                    reason: format!(
                        "conflict: event {} was first stored with data hash {}, this copy's data hashes to {}",
                        event.key,
                        stored_hash.unwrap_or("(none)"),
                        event.data_hash.to_hex()
                    ),
                    delivery,
                    related_event: Some(&event.key),
                })
                .await?;
            return Ok(Outcome::Conflict { quarantine_id });
        }
        let tag = items::delivery_tag(event.provider, &delivery.origin);
        let already = items::string_set_contains(&existing, "deliveries", &tag);
        if !already {
            self.add_delivery(&event.key, &tag, delivery).await?;
        }
        // Idempotent: heals a high-water mark lost to a crash right after the transaction.
        self.raise_session_high_water(event).await?;
        Ok(Outcome::Duplicate {
            new_delivery: !already,
        })
    }

    /// A conditional put of an event without usage. Returns the stored item if the key exists.
    async fn put_event(
        &self,
        event: &ConnectionEvent,
        delivery: &Delivery,
    ) -> Result<Option<Item>, LedgerError> {
        match self
            .put_if_absent(items::event_item(event, delivery))
            .await?
        {
            PutIfAbsent::Created => Ok(None),
            PutIfAbsent::Exists(old) => self.existing_or_fetch(old, &event.key).await.map(Some),
        }
    }

    /// A put that only creates: `attribute_not_exists(pk)`, with the existing item returned
    /// (at no read cost) when the key is taken.
    pub(crate) async fn put_if_absent(&self, item: Item) -> Result<PutIfAbsent, LedgerError> {
        let result = self
            .client
            .put_item()
            .table_name(self.table_name())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.add_consumed(output.consumed_capacity());
                Ok(PutIfAbsent::Created)
            }
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    PutItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                let old = match service.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                Ok(PutIfAbsent::Exists(old))
            }
            Err(error) => Err(LedgerError::from_sdk("PutItem", error)),
        }
    }

    /// The event, its day and month rollups and its session's window sums, in one
    /// transaction. Returns the stored event if the key exists (nothing was written then).
    async fn put_event_with_usage(
        &self,
        event: &ConnectionEvent,
        delivery: &Delivery,
    ) -> Result<Option<Item>, LedgerError> {
        let mut actions = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(self.table_name())
                        .set_item(Some(items::event_item(event, delivery)))
                        .condition_expression("attribute_not_exists(pk)")
                        .return_values_on_condition_check_failure(
                            ReturnValuesOnConditionCheckFailure::AllOld,
                        )
                        .build()
                        .map_err(|e| LedgerError::Invalid(e.to_string()))?,
                )
                .build(),
        ];
        for delta in items::usage_deltas(event)? {
            actions.push(
                TransactWriteItem::builder()
                    .update(self.update_action(delta.into_update())?)
                    .build(),
            );
        }

        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            let service = match result {
                Ok(output) => {
                    for capacity in output.consumed_capacity() {
                        self.add_consumed(Some(capacity));
                    }
                    return Ok(None);
                }
                Err(SdkError::ServiceError(service))
                    if matches!(
                        service.err(),
                        TransactWriteItemsError::TransactionCanceledException(_)
                    ) =>
                {
                    service.into_err()
                }
                Err(error) => return Err(LedgerError::from_sdk("TransactWriteItems", error)),
            };
            let TransactWriteItemsError::TransactionCanceledException(cancelled) = service else {
                return Err(LedgerError::Invalid("unexpected transaction error".into()));
            };
            let reasons = cancelled.cancellation_reasons.unwrap_or_default();
            let code_of = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            if code_of(0) == "ConditionalCheckFailed" {
                let old = reasons.first().and_then(|r| r.item.clone());
                return self.existing_or_fetch(old, &event.key).await.map(Some);
            }
            let codes: Vec<&str> = (0..reasons.len()).map(code_of).collect();
            let passing = codes.iter().all(|c| {
                matches!(
                    *c,
                    "None"
                        | "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                )
            });
            let message = format!("transaction cancelled: {}", codes.join(", "));
            if !passing {
                return Err(LedgerError::Rejected {
                    operation: "TransactWriteItems",
                    message,
                });
            }
            if attempt >= TRANSACTION_ATTEMPTS {
                return Err(LedgerError::Retryable {
                    operation: "TransactWriteItems",
                    message,
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    fn update_action(&self, update: items::UpdateSpec) -> Result<Update, LedgerError> {
        Update::builder()
            .table_name(self.table_name())
            .set_key(Some(update.key))
            .update_expression(update.expression)
            .set_expression_attribute_values(Some(update.values))
            .build()
            .map_err(|e| LedgerError::Invalid(e.to_string()))
    }

    /// The old item from the failed condition, or, if DynamoDB did not return it, a
    /// strongly consistent read.
    async fn existing_or_fetch(
        &self,
        old: Option<Item>,
        key: &DedupeKey,
    ) -> Result<Item, LedgerError> {
        if let Some(old) = old {
            return Ok(old);
        }
        let output = self
            .client
            .get_item()
            .table_name(self.table_name())
            .set_key(Some(items::key(keys::event_pk(key), keys::SINGLE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("GetItem", e))?;
        output.item.ok_or_else(|| LedgerError::Retryable {
            operation: "GetItem",
            message: format!("event {key} failed its condition but was not found"),
        })
    }

    async fn add_delivery(
        &self,
        key: &DedupeKey,
        tag: &str,
        delivery: &Delivery,
    ) -> Result<(), LedgerError> {
        let output = self
            .client
            .update_item()
            .table_name(self.table_name())
            .set_key(Some(items::key(keys::event_pk(key), keys::SINGLE)))
            .update_expression("ADD deliveries :tag SET last_delivered_at = :at")
            .expression_attribute_values(":tag", AttributeValue::Ss(vec![tag.to_owned()]))
            .expression_attribute_values(":at", AttributeValue::S(timestamp(delivery.received_at)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("UpdateItem", e))?;
        self.add_consumed(output.consumed_capacity());
        Ok(())
    }

    /// Keeps the highest cumulative session totals seen. A maximum is idempotent, so this
    /// runs outside the transaction, after it, and again for every duplicate.
    async fn raise_session_high_water(&self, event: &ConnectionEvent) -> Result<(), LedgerError> {
        let Some(update) = items::session_high_water(event) else {
            return Ok(());
        };
        let result = self
            .client
            .update_item()
            .table_name(self.table_name())
            .set_key(Some(update.key))
            .update_expression(update.expression)
            .condition_expression(
                "attribute_not_exists(cumulative_total) OR cumulative_total < :total",
            )
            .set_expression_attribute_values(Some(update.values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(output) => {
                self.add_consumed(output.consumed_capacity());
                Ok(())
            }
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(LedgerError::from_sdk("UpdateItem", error)),
        }
    }

    async fn quarantine_or_retry(&self, entry: QuarantineEntry<'_>) -> Outcome {
        let reason = entry.reason.clone();
        match self.quarantine(entry).await {
            Ok(quarantine_id) => Outcome::Quarantined {
                quarantine_id,
                reason,
            },
            Err(error) => Outcome::Retry {
                reason: format!("could not quarantine ({reason}): {error}"),
            },
        }
    }
}

/// Inputs that [`UsageLedger::record_all`] writes in one task: the chains (copies of one key,
/// in input order) of one SIM's new-looking usage events, committed as a group, or one other
/// chain.
struct Unit {
    grouped: bool,
    chains: Vec<Vec<usize>>,
}

/// Exponential back-off with jitter, 25 ms doubling, for transaction conflicts.
fn backoff(attempt: u32) -> Duration {
    let base = 25u64 << attempt.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    ) % base.max(1);
    Duration::from_millis(base + jitter)
}

/// RFC 3339 in UTC with milliseconds: sorts as text.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
