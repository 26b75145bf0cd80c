//! Group commit: a batch's new usage events of one SIM go to DynamoDB a chunk per
//! transaction, each chunk's puts with its merged rollup and session deltas. The guarantee is
//! the one-event transaction's (an event and its usage are stored together or not at all),
//! for a fraction of the requests: 25 events of a SIM write 25 puts and 3 updates in one call,
//! where one transaction per event wrote 25 × 4 items in 25 calls that collided on the same
//! rollups.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use std::collections::HashSet;

use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, ReturnConsumedCapacity, TransactWriteItem};
use futures::StreamExt;
use tokio::time::Instant;

use super::{
    Delivery, LedgerError, Outcome, TRANSACTION_ATTEMPTS, UsageLedger, backoff, items, keys,
};
use crate::event::ConnectionEvent;

/// DynamoDB takes up to 100 actions per transaction: an event adds at most 4 (its put, day,
/// month and session deltas), so 25 events always fit.
const MAX_EVENTS_PER_TRANSACTION: usize = 25;
/// A transaction carries at most 4 MB; this leaves room for the attributes around `data`.
const MAX_DATA_BYTES_PER_TRANSACTION: usize = 2 * 1024 * 1024;
const ITEM_OVERHEAD_BYTES: usize = 2 * 1024;

/// A usage event not yet known to be stored, with the index of its input.
pub(super) struct Pending<'a> {
    pub index: usize,
    pub event: &'a ConnectionEvent,
    pub delivery: &'a Delivery,
}

/// Cancellation codes after which the same transaction can succeed.
fn passing(code: &str) -> bool {
    matches!(
        code,
        "None" | "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
    )
}

/// How many of `events` the next transaction takes.
fn chunk_len(events: &[Pending<'_>]) -> usize {
    let mut bytes = 0;
    let mut len = 0;
    for pending in events.iter().take(MAX_EVENTS_PER_TRANSACTION) {
        bytes += pending.event.data.len() + ITEM_OVERHEAD_BYTES;
        if len > 0 && bytes > MAX_DATA_BYTES_PER_TRANSACTION {
            break;
        }
        len += 1;
    }
    len
}

impl UsageLedger {
    /// Records the first copies of distinct usage events of one SIM, in input order, one
    /// chunk after another (chunks of a SIM share its rollups, so they would only collide).
    /// Returns every event's outcome with its input index.
    pub(super) async fn record_usage_group(
        &self,
        events: &[Pending<'_>],
        deadline: Option<Instant>,
    ) -> Vec<(usize, Outcome)> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut rest = events;
        while !rest.is_empty() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                outcomes.extend(rest.iter().map(|p| {
                    (
                        p.index,
                        Outcome::Retry {
                            reason: "invocation deadline reached before this write started".into(),
                        },
                    )
                }));
                break;
            }
            let (chunk, tail) = rest.split_at(chunk_len(rest));
            rest = tail;
            outcomes.extend(self.commit_chunk(chunk).await);
        }
        outcomes
    }

    /// One transaction for the chunk. Events DynamoDB finds already stored leave the chunk
    /// for the one-at-a-time path (a duplicate or a conflict) and the rest is sent again.
    async fn commit_chunk(&self, chunk: &[Pending<'_>]) -> Vec<(usize, Outcome)> {
        let mut outcomes = Vec::with_capacity(chunk.len());
        let mut members: Vec<&Pending<'_>> = chunk.iter().collect();
        let mut attempt = 0;
        while !members.is_empty() {
            let result = match self.chunk_actions(&members) {
                Ok(actions) => {
                    self.client
                        .transact_write_items()
                        .set_transact_items(Some(actions))
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .send()
                        .await
                }
                Err(_) => {
                    // Cannot even be expressed (never for a parsed usage event): one at a
                    // time, each gets its own outcome and reason.
                    outcomes.extend(self.one_at_a_time(&members).await);
                    break;
                }
            };
            let cancelled = match result {
                Ok(output) => {
                    for capacity in output.consumed_capacity() {
                        self.add_consumed(Some(capacity));
                    }
                    outcomes.extend(self.after_commit(&members).await);
                    break;
                }
                Err(SdkError::ServiceError(service))
                    if matches!(
                        service.err(),
                        TransactWriteItemsError::TransactionCanceledException(_)
                    ) =>
                {
                    match service.into_err() {
                        TransactWriteItemsError::TransactionCanceledException(c) => c,
                        _ => unreachable!("matched just above"),
                    }
                }
                Err(error) => {
                    let error = LedgerError::from_sdk("TransactWriteItems", error);
                    if error.is_retryable() {
                        outcomes.extend(retry_all(&members, &error.to_string()));
                    } else {
                        // E.g. a transaction over 4 MB: the single-event path stores what
                        // fits and quarantines what DynamoDB refuses, with the reason.
                        outcomes.extend(self.one_at_a_time(&members).await);
                    }
                    break;
                }
            };

            let reasons = cancelled.cancellation_reasons.unwrap_or_default();
            let code_of = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            let mut stored: Vec<usize> = (0..members.len())
                .filter(|&i| code_of(i) == "ConditionalCheckFailed")
                .collect();
            if !stored.is_empty() {
                // Other members may be stored too without a reason naming them (a first
                // version that trusted the reasons alone crawled on DynamoDB Local): ask,
                // rather than send the transaction again for each.
                let events: Vec<&ConnectionEvent> = members.iter().map(|p| p.event).collect();
                if let Ok(found) = self.already_stored(&events).await {
                    stored = (0..members.len())
                        .filter(|&i| {
                            code_of(i) == "ConditionalCheckFailed"
                                || found.contains(&keys::event_pk(&members[i].event.key))
                        })
                        .collect();
                }
                let mut already = Vec::with_capacity(stored.len());
                for &i in stored.iter().rev() {
                    already.push(members.remove(i));
                }
                already.reverse();
                outcomes.extend(self.one_at_a_time(&already).await);
                continue;
            }
            let codes: Vec<&str> = (0..reasons.len()).map(code_of).collect();
            let message = format!("transaction cancelled: {}", codes.join(", "));
            if !codes.iter().all(|c| passing(c)) {
                outcomes.extend(self.one_at_a_time(&members).await);
                break;
            }
            attempt += 1;
            if attempt >= TRANSACTION_ATTEMPTS {
                outcomes.extend(retry_all(&members, &message));
                break;
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        outcomes
    }

    /// The chunk's puts, then one update per rollup or session item it touches.
    fn chunk_actions(
        &self,
        members: &[&Pending<'_>],
    ) -> Result<Vec<TransactWriteItem>, LedgerError> {
        let mut actions = Vec::with_capacity(members.len() * 2);
        let mut deltas = Vec::with_capacity(members.len() * 3);
        for pending in members {
            let put = Put::builder()
                .table_name(self.table_name())
                .set_item(Some(items::event_item(pending.event, pending.delivery)))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| LedgerError::Invalid(e.to_string()))?;
            actions.push(TransactWriteItem::builder().put(put).build());
            deltas.extend(items::usage_deltas(pending.event)?);
        }
        for delta in items::merge_deltas(deltas) {
            actions.push(
                TransactWriteItem::builder()
                    .update(self.update_action(delta.into_update())?)
                    .build(),
            );
        }
        Ok(actions)
    }

    /// Every member is stored with its usage: raise each session's high-water mark once,
    /// from its highest cumulative total in the chunk (all members share one SIM). If that
    /// fails, the events that carry the mark are reported for re-delivery; they come back as
    /// duplicates and heal it.
    async fn after_commit(&self, members: &[&Pending<'_>]) -> Vec<(usize, Outcome)> {
        let mut outcomes: Vec<(usize, Outcome)> =
            members.iter().map(|p| (p.index, Outcome::New)).collect();
        let mut highest: Vec<(&str, u64, &ConnectionEvent)> = Vec::new();
        for pending in members {
            let Some((session, total)) = session_mark(pending.event) else {
                continue;
            };
            match highest.iter_mut().find(|(s, _, _)| *s == session) {
                Some(top) if top.1 < total => *top = (session, total, pending.event),
                Some(_) => {}
                None => highest.push((session, total, pending.event)),
            }
        }
        for (session, _, event) in highest {
            if let Err(error) = self.raise_session_high_water(event).await {
                let reason = format!("stored, but its session's high-water mark was not: {error}");
                for ((_, outcome), pending) in outcomes.iter_mut().zip(members) {
                    if session_mark(pending.event).is_some_and(|(s, _)| s == session) {
                        *outcome = Outcome::Retry {
                            reason: reason.clone(),
                        };
                    }
                }
            }
        }
        outcomes
    }

    /// The event keys (`pk`) of `events` that are already stored, by consistent
    /// `BatchGetItem`s of 100 keys. A key DynamoDB leaves unprocessed counts as not stored:
    /// the transaction's condition still catches it.
    pub(super) async fn already_stored(
        &self,
        events: &[&ConnectionEvent],
    ) -> Result<HashSet<String>, LedgerError> {
        let lookups = events.chunks(100).map(|chunk| {
            let keys: Vec<_> = chunk
                .iter()
                .map(|e| items::key(keys::event_pk(&e.key), keys::SINGLE))
                .collect();
            async move {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .projection_expression("pk")
                    .build()
                    .map_err(|e| LedgerError::Invalid(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(self.table_name(), request)
                    .send()
                    .await
                    .map_err(|e| LedgerError::from_sdk("BatchGetItem", e))?;
                Ok::<_, LedgerError>(
                    output
                        .responses
                        .and_then(|mut r| r.remove(self.table_name()))
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|item| items::string_attr(item, "pk").map(str::to_owned))
                        .collect::<Vec<_>>(),
                )
            }
        });
        let mut stored = HashSet::new();
        let mut results = futures::stream::iter(lookups)
            .buffer_unordered(self.config.max_concurrent_writes.max(1));
        while let Some(found) = results.next().await {
            stored.extend(found?);
        }
        Ok(stored)
    }

    async fn one_at_a_time(&self, members: &[&Pending<'_>]) -> Vec<(usize, Outcome)> {
        let mut outcomes = Vec::with_capacity(members.len());
        for pending in members {
            outcomes.push((
                pending.index,
                self.record_event(pending.event, pending.delivery).await,
            ));
        }
        outcomes
    }
}

/// The event's data session and the cumulative total it reports, if it reports one.
fn session_mark(event: &ConnectionEvent) -> Option<(&str, u64)> {
    let session = event.session.as_ref()?;
    Some((session.sid.as_str(), session.cumulative?.total))
}

fn retry_all(members: &[&Pending<'_>], reason: &str) -> Vec<(usize, Outcome)> {
    members
        .iter()
        .map(|p| {
            (
                p.index,
                Outcome::Retry {
                    reason: reason.to_owned(),
                },
            )
        })
        .collect()
}
