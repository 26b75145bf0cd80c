//! The exactly-once usage ledger on DynamoDB.
//!
//! Every event is one item keyed on its dedupe key, written with a conditional put. A new
//! usage event is written in one transaction with its share of the usage rollups and the
//! booking list that lets it be found again, so a usage count can never be applied twice or
//! lost, even if the process dies between calls. A batch's new usage events share those
//! transactions ([`plan`], [`commit`]). Copies of an event that arrive again (retries, the
//! other provider) are found by one batched consistent read before anything is written and
//! only add their provider and path to the event's `deliveries`; a copy whose `data`
//! differs is a conflict and is quarantined.
//!
//! Nothing received is dropped: what cannot be parsed or stored goes to the quarantine with
//! its reason, and what failed for a passing reason is reported as retryable.

mod access;
pub mod callbacks;
pub mod closes;
mod commit;
mod items;
pub mod keys;
mod plan;
pub mod port;
pub mod quarantine;
pub mod rebuild;
pub mod reports;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::warn;

pub use crate::delivery::{Delivery, Origin, Outcome, OutcomeCounts};
use crate::event::{ConnectionEvent, DedupeKey, ParsedItem};
use items::StoredDigest;
pub use items::{StoredEvent, rollup_item};
use plan::{Pending, Verdict};
pub use quarantine::{QuarantineEntry, QuarantineKind, QuarantinedPayload};

pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("DynamoDB {operation} failed for a passing reason ({message}); retry")]
    Retryable {
        operation: &'static str,
        /// The service's error code (`ThrottlingException`...), when it answered with one.
        code: Option<String>,
        message: String,
    },
    #[error("DynamoDB {operation} rejected the request: {message}")]
    Rejected {
        operation: &'static str,
        code: Option<String>,
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

    /// The service's error code, if DynamoDB answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            LedgerError::Retryable { code, .. } | LedgerError::Rejected { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }

    pub(crate) fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = aws_sdk_dynamodb::error::DisplayErrorContext(&error).to_string();
        let (code, retryable) = match &error {
            SdkError::ServiceError(service) => {
                let code = service.err().code().map(str::to_owned);
                let retryable = code
                    .as_deref()
                    .is_none_or(|c| c.is_empty() || RETRYABLE_CODES.contains(&c));
                (code, retryable)
            }
            SdkError::ConstructionFailure(_) => (None, false),
            // Timeouts, connection failures and unreadable responses: the request may or may
            // not have been applied, which the conditional writes make safe to repeat.
            _ => (None, true),
        };
        if retryable {
            LedgerError::Retryable {
                operation,
                code,
                message,
            }
        } else {
            LedgerError::Rejected {
                operation,
                code,
                message,
            }
        }
    }
}

/// Configuration of a [`UsageLedger`].
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub table_name: String,
    /// How many writes one batch runs at once (`MAX_CONCURRENT_WRITES`).
    pub max_concurrent_writes: usize,
    /// How long a process trusts its copy of the closed periods (`CLOSED_PERIODS_TTL_MS`).
    pub closed_periods_ttl: Duration,
}

impl LedgerConfig {
    pub const DEFAULT_MAX_CONCURRENT_WRITES: usize = 32;
    pub const DEFAULT_CLOSED_PERIODS_TTL: Duration = Duration::from_secs(30);

    pub fn new(table_name: impl Into<String>) -> Self {
        LedgerConfig {
            table_name: table_name.into(),
            max_concurrent_writes: Self::DEFAULT_MAX_CONCURRENT_WRITES,
            closed_periods_ttl: Self::DEFAULT_CLOSED_PERIODS_TTL,
        }
    }

    /// `TABLE_NAME` (required), `MAX_CONCURRENT_WRITES` (default 32, 1 to 1000) and
    /// `CLOSED_PERIODS_TTL_MS` (default 30000, at most 300000).
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
        if let Ok(value) = std::env::var("CLOSED_PERIODS_TTL_MS") {
            config.closed_periods_ttl = value
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= 300_000)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    format!(
                        "CLOSED_PERIODS_TTL_MS must be a whole number of milliseconds up to 300000, not `{value}`"
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

/// Capacity DynamoDB reported, in thousandths of a unit.
#[derive(Debug, Default)]
struct Capacity {
    write: AtomicU64,
    read: AtomicU64,
    /// Failed conditions: DynamoDB reports nothing for them, AWS bills them.
    failed_writes: AtomicU64,
}

/// The ledger: cheap to clone, build it once per process.
#[derive(Debug, Clone)]
pub struct UsageLedger {
    client: Client,
    config: Arc<LedgerConfig>,
    capacity: Arc<Capacity>,
    closes_cache: Arc<closes::ClosesCache>,
}

/// Transactions that collide with another writer of the same items are retried this often
/// before the input is reported as retryable.
const TRANSACTION_ATTEMPTS: u32 = 6;

pub(crate) const DEADLINE_REASON: &str = "invocation deadline reached before this write started";

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

impl UsageLedger {
    pub fn new(client: Client, config: LedgerConfig) -> Self {
        UsageLedger {
            client,
            config: Arc::new(config),
            capacity: Arc::default(),
            closes_cache: Arc::default(),
        }
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

    fn add_capacity(&self, capacity: Option<&ConsumedCapacity>, write: bool) {
        let Some(units) = capacity.and_then(ConsumedCapacity::capacity_units) else {
            return;
        };
        let counter = if write {
            &self.capacity.write
        } else {
            &self.capacity.read
        };
        counter.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }

    /// Write capacity of a successful write.
    fn add_consumed(&self, capacity: Option<&ConsumedCapacity>) {
        self.add_capacity(capacity, true);
    }

    fn add_failed_writes(&self, units: u64) {
        self.capacity
            .failed_writes
            .fetch_add(units * 1000, Ordering::Relaxed);
    }

    /// Records one parsed element: a valid event is stored, a rejected one quarantined.
    pub async fn record(&self, item: &ParsedItem, delivery: &Delivery) -> Outcome {
        let inputs = [(item.clone(), delivery.clone())];
        self.record_all(&inputs, None).await.remove(0)
    }

    /// Stores one event exactly once: a batch of one.
    pub async fn record_event(&self, event: &ConnectionEvent, delivery: &Delivery) -> Outcome {
        self.record(&Ok(event.clone()), delivery).await
    }

    /// Records many inputs; outcomes in input order. The first copy of an event in the
    /// input is the one stored; the others are duplicates or conflicts of it. Once
    /// `deadline` has passed no new write starts: what is left gets `Retry`.
    pub async fn record_all(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> Vec<Outcome> {
        let chains = plan::chains(inputs);
        let heads: Vec<(usize, &ConnectionEvent)> = chains
            .iter()
            .filter_map(|chain| match &inputs[chain[0]].0 {
                Ok(event) => Some((chain[0], event)),
                Err(_) => None,
            })
            .collect();
        let rejected: Vec<usize> = chains
            .iter()
            .filter(|chain| inputs[chain[0]].0.is_err())
            .map(|chain| chain[0])
            .collect();

        // What is stored already, read before anything is written: duplicates then cost no
        // write and no request of their own. If the read fails, the conditions still tell.
        let keys: Vec<&DedupeKey> = heads.iter().map(|(_, e)| &e.key).collect();
        let (stored, quarantined) = tokio::join!(
            self.stored_digests(&keys),
            self.quarantine_rejected(inputs, &rejected, deadline)
        );
        let mut stored = stored.unwrap_or_else(|error| {
            warn!(%error, "duplicate pre-check failed; relying on the write conditions");
            HashMap::new()
        });

        // Usage booked into a closed period is also an adjustment of it: the functions learn
        // the closes from a copy at most `closed_periods_ttl` old. Without it, no usage event
        // can be written (it might belong to a close).
        let needs_closes = heads
            .iter()
            .any(|(_, e)| e.usage.is_some() && !stored.contains_key(&e.key));
        let closes = match needs_closes {
            true => Some(self.cached_closes().await),
            false => None,
        };
        let mut new_usage = Vec::new();
        let mut new_plain = Vec::new();
        let mut unknown_closes: Vec<(usize, commit::Stored)> = Vec::new();
        for &(index, event) in &heads {
            if stored.contains_key(&event.key) {
                continue;
            }
            let mut pending = Pending {
                index,
                event,
                delivery: &inputs[index].1,
                close: None,
            };
            if event.usage.is_none() {
                new_plain.push(pending);
                continue;
            }
            match &closes {
                Some(Ok(closes)) => {
                    pending.close = closes
                        .iter()
                        .find(|c| c.covers(event.account_sid.as_deref(), event.billing_day));
                    new_usage.push(pending);
                }
                Some(Err(error)) => {
                    let reason = format!("the closed periods could not be read: {error}");
                    unknown_closes.push((index, commit::Stored::Failed(Outcome::Retry { reason })));
                }
                None => {}
            }
        }
        let (committed, put) = tokio::join!(
            self.commit_waves(plan::plan_commits(&new_usage), deadline),
            self.put_plain_events(&new_plain, deadline)
        );

        let mut outcomes: Vec<Option<Outcome>> = vec![None; inputs.len()];
        for (index, outcome) in quarantined {
            outcomes[index] = Some(outcome);
        }
        let mut written: HashMap<usize, commit::Stored> = committed
            .into_iter()
            .chain(put)
            .chain(unknown_closes)
            .collect();

        // Every chain: the head's outcome, then its copies against what is stored.
        let mut tags: Vec<(usize, String)> = Vec::new();
        let mut conflicts: Vec<(usize, String)> = Vec::new();
        let mut refused: Vec<(usize, String)> = Vec::new();
        for chain in &chains {
            let head = chain[0];
            let Ok(event) = &inputs[head].0 else {
                continue;
            };
            let (mut digest, copies) = match written.remove(&head) {
                Some(commit::Stored::New) => {
                    outcomes[head] = Some(Outcome::New);
                    let digest = StoredDigest {
                        data_hash: Some(event.data_hash),
                        deliveries: vec![crate::delivery::delivery_tag(
                            event.provider,
                            &inputs[head].1.origin,
                        )],
                    };
                    (digest, &chain[1..])
                }
                Some(commit::Stored::Existing(digest)) => (digest, &chain[..]),
                Some(commit::Stored::Failed(outcome)) => {
                    for &copy in &chain[1..] {
                        match &outcome {
                            // Refused for good (the same data would be refused again):
                            // quarantined too, never retried forever.
                            Outcome::Quarantined { reason, .. } => refused.push((
                                copy,
                                format!(
                                    "an earlier copy in this batch could not be stored: {reason}"
                                ),
                            )),
                            _ => {
                                outcomes[copy] = Some(Outcome::Retry {
                                    reason: "an earlier copy of this event was not stored".into(),
                                });
                            }
                        }
                    }
                    outcomes[head] = Some(outcome);
                    continue;
                }
                None => match stored.remove(&event.key) {
                    Some(digest) => (digest, &chain[..]),
                    None => continue,
                },
            };
            for &copy in copies {
                let Ok(copy_event) = &inputs[copy].0 else {
                    continue;
                };
                match plan::classify(&mut digest, copy_event, &inputs[copy].1) {
                    Verdict::Duplicate { new_tag: None } => {
                        outcomes[copy] = Some(Outcome::Duplicate {
                            new_delivery: false,
                        });
                    }
                    Verdict::Duplicate { new_tag: Some(tag) } => tags.push((copy, tag)),
                    Verdict::Conflict { stored_hash } => conflicts.push((
                        copy,
                        format!(
                            "conflict: event {} was first stored with data hash {}, this copy's data hashes to {}",
                            copy_event.key,
                            stored_hash.map_or_else(|| "(none)".to_owned(), |h| h.to_hex()),
                            copy_event.data_hash.to_hex()
                        ),
                    )),
                }
            }
        }

        let copies = Copies {
            tags,
            conflicts,
            refused,
        };
        for (index, outcome) in self.write_copies(inputs, copies, deadline).await {
            outcomes[index] = Some(outcome);
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

    /// The stored hash and deliveries of each key that exists (consistent batched reads, one
    /// round: keys DynamoDB leaves unprocessed count as not stored).
    pub(crate) async fn stored_digests(
        &self,
        keys: &[&DedupeKey],
    ) -> Result<HashMap<DedupeKey, StoredDigest>, LedgerError> {
        let mut stored = HashMap::new();
        for item in self
            .event_records(
                keys,
                Some(items::DIGEST_PROJECTION),
                access::Unprocessed::LeaveOut,
            )
            .await?
        {
            let Some(sid) = items::string_attr(&item, "pk")
                .and_then(|pk| pk.strip_prefix(keys::EVENT_PK_PREFIX))
            else {
                continue;
            };
            if let Ok(key) = DedupeKey::new(sid, "pk") {
                stored.insert(key, StoredDigest::of(&item));
            }
        }
        Ok(stored)
    }

    fn concurrency(&self) -> usize {
        self.config.max_concurrent_writes.max(1)
    }

    async fn quarantine_rejected(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        rejected: &[usize],
        deadline: Option<Instant>,
    ) -> Vec<(usize, Outcome)> {
        let writes = rejected.iter().filter_map(|&index| {
            let (Err(rejected), delivery) = &inputs[index] else {
                return None;
            };
            Some(async move {
                let entry = QuarantineEntry {
                    kind: QuarantineKind::Event,
                    payload: rejected.raw.as_bytes(),
                    reason: rejected.error.to_string(),
                    delivery,
                    related_event: None,
                };
                (index, self.quarantine_or_retry(entry, deadline).await)
            })
        });
        futures::stream::iter(writes.collect::<Vec<_>>())
            .buffer_unordered(self.concurrency())
            .collect()
            .await
    }

    /// New events without usage: one conditional put each (no rollup to share a
    /// transaction with).
    async fn put_plain_events(
        &self,
        events: &[Pending<'_>],
        deadline: Option<Instant>,
    ) -> Vec<(usize, commit::Stored)> {
        let writes = events.iter().map(|pending| async move {
            if past(deadline) {
                let retry = Outcome::Retry {
                    reason: DEADLINE_REASON.into(),
                };
                return (pending.index, commit::Stored::Failed(retry));
            }
            let item = items::event_item(pending.event, pending.delivery);
            let result = match self.put_if_absent(item).await {
                Ok(PutIfAbsent::Created) => Ok(commit::Stored::New),
                Ok(PutIfAbsent::Exists(old)) => self
                    .existing_or_fetch(old, &pending.event.key)
                    .await
                    .map(|item| commit::Stored::Existing(StoredDigest::of(&item))),
                Err(error) => Err(error),
            };
            let stored = match result {
                Ok(stored) => stored,
                Err(error) => commit::Stored::Failed(self.refused(pending, error, deadline).await),
            };
            (pending.index, stored)
        });
        futures::stream::iter(writes.collect::<Vec<_>>())
            .buffer_unordered(self.concurrency())
            .collect()
            .await
    }

    /// A write of one event failed: retry for a passing reason, else the quarantine.
    pub(crate) async fn refused(
        &self,
        pending: &Pending<'_>,
        error: LedgerError,
        deadline: Option<Instant>,
    ) -> Outcome {
        if error.is_retryable() {
            return Outcome::Retry {
                reason: error.to_string(),
            };
        }
        // DynamoDB refused the item itself (e.g. over 400 KB): keep it in the quarantine.
        self.quarantine_or_retry(
            QuarantineEntry {
                kind: QuarantineKind::Event,
                payload: pending.event.raw.as_bytes(),
                reason: error.to_string(),
                delivery: pending.delivery,
                related_event: Some(&pending.event.key),
            },
            deadline,
        )
        .await
    }

    /// Copies of stored events: new deliveries are added (one update per event, all its new
    /// tags at once); conflicting copies, and copies of an event DynamoDB refused, are
    /// quarantined.
    async fn write_copies(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        copies: Copies,
        deadline: Option<Instant>,
    ) -> Vec<(usize, Outcome)> {
        let Copies {
            tags,
            conflicts,
            refused,
        } = copies;
        let mut by_key: Vec<(&DedupeKey, Vec<usize>, Vec<String>)> = Vec::new();
        for (index, tag) in tags {
            let Ok(event) = &inputs[index].0 else {
                continue;
            };
            match by_key.iter_mut().find(|(key, _, _)| **key == event.key) {
                Some((_, indexes, tags)) => {
                    indexes.push(index);
                    tags.push(tag);
                }
                None => by_key.push((&event.key, vec![index], vec![tag])),
            }
        }
        let additions = by_key.into_iter().map(|(key, indexes, tags)| async move {
            let outcome = if past(deadline) {
                Outcome::Retry {
                    reason: DEADLINE_REASON.into(),
                }
            } else {
                match self.add_deliveries(key, tags).await {
                    Ok(()) => Outcome::Duplicate { new_delivery: true },
                    Err(error) => Outcome::Retry {
                        reason: error.to_string(),
                    },
                }
            };
            indexes
                .into_iter()
                .map(|index| (index, outcome.clone()))
                .collect::<Vec<_>>()
        });
        let to_quarantine = conflicts
            .into_iter()
            .map(|(index, reason)| (index, reason, QuarantineKind::Conflict))
            .chain(
                refused
                    .into_iter()
                    .map(|(index, reason)| (index, reason, QuarantineKind::Event)),
            );
        let quarantines = to_quarantine.map(|(index, reason, kind)| async move {
            let (Ok(event), delivery) = &inputs[index] else {
                return vec![];
            };
            let conflict = kind == QuarantineKind::Conflict;
            let entry = QuarantineEntry {
                kind,
                payload: event.raw.as_bytes(),
                reason,
                delivery,
                related_event: Some(&event.key),
            };
            let outcome = match self.quarantine_or_retry(entry, deadline).await {
                Outcome::Quarantined { quarantine_id, .. } if conflict => {
                    Outcome::Conflict { quarantine_id }
                }
                other => other,
            };
            vec![(index, outcome)]
        });
        let additions = futures::stream::iter(additions.collect::<Vec<_>>())
            .buffer_unordered(self.concurrency())
            .collect::<Vec<_>>();
        let quarantines = futures::stream::iter(quarantines.collect::<Vec<_>>())
            .buffer_unordered(self.concurrency())
            .collect::<Vec<_>>();
        let (additions, quarantines) = tokio::join!(additions, quarantines);
        additions.into_iter().chain(quarantines).flatten().collect()
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
                self.add_capacity(output.consumed_capacity(), true);
                Ok(PutIfAbsent::Created)
            }
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    PutItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                self.add_failed_writes(1);
                let old = match service.into_err() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                Ok(PutIfAbsent::Exists(old))
            }
            Err(error) => Err(LedgerError::from_sdk("PutItem", error)),
        }
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
            code: None,
            message: format!("event {key} failed its condition but was not found"),
        })
    }

    async fn add_deliveries(&self, key: &DedupeKey, tags: Vec<String>) -> Result<(), LedgerError> {
        let output = self
            .client
            .update_item()
            .table_name(self.table_name())
            .set_key(Some(items::key(keys::event_pk(key), keys::SINGLE)))
            .update_expression("ADD #deliveries :tags")
            .expression_attribute_names("#deliveries", items::DELIVERIES)
            .expression_attribute_values(":tags", AttributeValue::Ss(tags))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("UpdateItem", e))?;
        self.add_capacity(output.consumed_capacity(), true);
        Ok(())
    }

    async fn quarantine_or_retry(
        &self,
        entry: QuarantineEntry<'_>,
        deadline: Option<Instant>,
    ) -> Outcome {
        if past(deadline) {
            return Outcome::Retry {
                reason: DEADLINE_REASON.into(),
            };
        }
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

/// What the copies of stored events need written.
struct Copies {
    /// New provider-and-path tags to add to the deliveries.
    tags: Vec<(usize, String)>,
    /// Copies with other data, and why.
    conflicts: Vec<(usize, String)>,
    /// Copies of an event DynamoDB refused to store, and why.
    refused: Vec<(usize, String)>,
}

/// Exponential back-off with jitter, 25 ms doubling, for transaction conflicts.
fn backoff(attempt: u32) -> Duration {
    let base = 25u64 << attempt.min(6);
    Duration::from_millis(base + nonce() % base.max(1))
}

/// A number that differs from call to call (and process to process), for jitter.
fn nonce() -> u64 {
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

/// RFC 3339 in UTC with milliseconds: sorts as text.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
