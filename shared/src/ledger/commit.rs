//! The one transaction path: new usage events, with their rollup counts and booking lists,
//! stored together or not at all. A single event is a transaction of one unit of one.
//!
//! When DynamoDB cancels a transaction, the reason of each action says what to do: an
//! event whose condition failed is stored already (it leaves the transaction and takes the
//! duplicate path, with the stored item DynamoDB returned); conflicts and throttling are
//! retried with back-off; anything else (an item DynamoDB refuses) splits the transaction
//! until the event that cannot be stored is alone, and that one is quarantined.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    CancellationReason, Put, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use futures::StreamExt;
use tokio::time::Instant;

use super::closes;
use super::items::{self, StoredDigest};
use super::plan::{Unit, Waves};
use super::{
    DEADLINE_REASON, Item, LedgerError, Outcome, TRANSACTION_ATTEMPTS, UsageLedger, backoff, past,
};
use crate::usage::Booking;

/// What became of one new event's write.
#[derive(Debug, Clone)]
pub(super) enum Stored {
    New,
    /// Already stored (by another copy, another writer): the stored hash and deliveries.
    Existing(StoredDigest),
    /// Not stored: retry, or quarantined for good.
    Failed(Outcome),
}

/// Why DynamoDB cancelled one action of a transaction: the reason codes it documents, kept
/// as values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CancelCode {
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
    pub(super) fn of(reason: Option<&CancellationReason>) -> Self {
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

    /// The same transaction can succeed later.
    pub(super) fn passing(&self) -> bool {
        !matches!(
            self,
            CancelCode::ConditionalCheckFailed | CancelCode::Other(_)
        )
    }

    /// `transaction cancelled: None, ThrottlingError`: every action's code, in order.
    pub(super) fn message(codes: &[CancelCode]) -> String {
        let names: Vec<&str> = codes.iter().map(CancelCode::name).collect();
        format!("transaction cancelled: {}", names.join(", "))
    }

    pub(super) fn name(&self) -> &str {
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
}

/// A transaction's actions, the input index of each event put, and each action's unit.
type Transaction = (Vec<TransactWriteItem>, Vec<Option<usize>>, Vec<usize>);

/// How one transaction ended.
pub(super) enum Sent {
    Committed,
    /// Cancelled: the reason of every action, in order.
    Cancelled(Vec<CancellationReason>),
    Failed(LedgerError),
}

impl UsageLedger {
    /// Sends the waves one after another, the transactions of a wave at once.
    pub(super) async fn commit_waves(
        &self,
        waves: Waves<'_>,
        deadline: Option<Instant>,
    ) -> Vec<(usize, Stored)> {
        let mut results = Vec::new();
        for wave in waves {
            let commits = wave.into_iter().map(|units| self.commit(units, deadline));
            let mut done = futures::stream::iter(commits.collect::<Vec<_>>())
                .buffer_unordered(self.concurrency());
            while let Some(outcomes) = done.next().await {
                results.extend(outcomes);
            }
        }
        results
    }

    /// One transaction of units, until every event has an outcome.
    async fn commit(
        &self,
        units: Vec<Unit<'_>>,
        deadline: Option<Instant>,
    ) -> Vec<(usize, Stored)> {
        let mut results = Vec::new();
        let mut queue = vec![units];
        while let Some(mut units) = queue.pop() {
            let mut attempt = 0;
            while !units.is_empty() {
                if past(deadline) {
                    results.extend(fail_all(&units, DEADLINE_REASON));
                    break;
                }
                let (actions, puts, unit_of) = match self.transaction(&units) {
                    Ok(built) => built,
                    Err(error) => {
                        self.split(units, error, &mut queue, &mut results, deadline)
                            .await;
                        break;
                    }
                };
                match self.send(actions).await {
                    Sent::Committed => {
                        results.extend(
                            units
                                .iter()
                                .flat_map(|u| &u.events)
                                .map(|p| (p.index, Stored::New)),
                        );
                        break;
                    }
                    Sent::Cancelled(reasons) => {
                        let codes: Vec<CancelCode> = (0..puts.len().max(reasons.len()))
                            .map(|i| CancelCode::of(reasons.get(i)))
                            .collect();
                        // Events stored meanwhile leave the transaction; the rest goes again.
                        let mut stored = Vec::new();
                        for (i, code) in codes.iter().enumerate() {
                            let (Some(Some(index)), CancelCode::ConditionalCheckFailed) =
                                (puts.get(i), code)
                            else {
                                continue;
                            };
                            let old = reasons.get(i).and_then(|r| r.item.clone());
                            stored.push((*index, old));
                        }
                        if !stored.is_empty() {
                            let indexes: Vec<usize> = stored.iter().map(|(i, _)| *i).collect();
                            for (index, old) in stored {
                                results.push((index, self.existing(&units, index, old).await));
                            }
                            units = units.iter().filter_map(|u| u.without(&indexes)).collect();
                            continue;
                        }
                        let message = CancelCode::message(&codes);
                        if !codes.iter().all(CancelCode::passing) {
                            let error = LedgerError::Rejected {
                                operation: "TransactWriteItems",
                                code: Some("TransactionCanceledException".into()),
                                message,
                            };
                            self.split(units, error, &mut queue, &mut results, deadline)
                                .await;
                            break;
                        }
                        // Units whose actions all read `None` did nothing wrong: they go on
                        // at once in a transaction of their own; the others wait their turn.
                        let hot: Vec<bool> = (0..units.len())
                            .map(|u| {
                                codes
                                    .iter()
                                    .zip(&unit_of)
                                    .any(|(code, of)| *of == u && *code != CancelCode::None)
                            })
                            .collect();
                        if hot.iter().any(|h| *h) && !hot.iter().all(|h| *h) {
                            let (waiting, innocent): (Vec<_>, Vec<_>) =
                                units.into_iter().zip(&hot).partition(|(_, h)| **h);
                            queue.push(waiting.into_iter().map(|(u, _)| u).collect());
                            units = innocent.into_iter().map(|(u, _)| u).collect();
                            continue;
                        }
                        attempt += 1;
                        if attempt >= TRANSACTION_ATTEMPTS {
                            let error = LedgerError::Retryable {
                                operation: "TransactWriteItems",
                                code: Some("TransactionCanceledException".into()),
                                message,
                            };
                            results.extend(fail_all(&units, &error.to_string()));
                            break;
                        }
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Sent::Failed(error) if error.is_retryable() => {
                        results.extend(fail_all(&units, &error.to_string()));
                        break;
                    }
                    Sent::Failed(error) => {
                        self.split(units, error, &mut queue, &mut results, deadline)
                            .await;
                        break;
                    }
                }
            }
        }
        results
    }

    /// DynamoDB refused a transaction for a reason that will not pass: try its units, then
    /// its events, apart; a single event refused is quarantined with the reason.
    async fn split<'a>(
        &self,
        units: Vec<Unit<'a>>,
        error: LedgerError,
        queue: &mut Vec<Vec<Unit<'a>>>,
        results: &mut Vec<(usize, Stored)>,
        deadline: Option<Instant>,
    ) {
        if units.len() > 1 {
            queue.extend(units.into_iter().map(|unit| vec![unit]));
            return;
        }
        let Some(unit) = units.into_iter().next() else {
            return;
        };
        if unit.events.len() > 1 {
            queue.extend(unit.events.iter().map(|pending| {
                vec![Unit {
                    events: vec![*pending],
                    ..unit.clone()
                }]
            }));
            return;
        }
        for pending in &unit.events {
            let outcome = self.refused(pending, error.clone(), deadline).await;
            results.push((pending.index, Stored::Failed(outcome)));
        }
    }

    /// The stored digest of an event whose condition failed.
    async fn existing(&self, units: &[Unit<'_>], index: usize, old: Option<Item>) -> Stored {
        let Some(pending) = units
            .iter()
            .flat_map(|u| &u.events)
            .find(|p| p.index == index)
        else {
            return Stored::Failed(Outcome::Retry {
                reason: "lost track of an event in a transaction".into(),
            });
        };
        match self.existing_or_fetch(old, &pending.event.key).await {
            Ok(item) => Stored::Existing(StoredDigest::of(&item)),
            Err(error) => Stored::Failed(Outcome::Retry {
                reason: error.to_string(),
            }),
        }
    }

    /// The actions of a transaction (per unit: its event puts, its rollup updates, its
    /// booking list), the input index each action's event put is for, and each action's
    /// unit.
    fn transaction(&self, units: &[Unit<'_>]) -> Result<Transaction, LedgerError> {
        let invalid = |e: aws_sdk_dynamodb::error::BuildError| LedgerError::Invalid(e.to_string());
        let mut actions = Vec::new();
        let mut puts = Vec::new();
        let mut unit_of = Vec::new();
        for (u, unit) in units.iter().enumerate() {
            for pending in &unit.events {
                let put = Put::builder()
                    .table_name(self.table_name())
                    .set_item(Some(items::event_item(pending.event, pending.delivery)))
                    .condition_expression("attribute_not_exists(pk)")
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(invalid)?;
                actions.push(TransactWriteItem::builder().put(put).build());
                puts.push(Some(pending.index));
            }
            for pending in unit.events.iter().filter(|p| p.close.is_some()) {
                let (Some(close), Some(booking)) = (pending.close, Booking::of(pending.event))
                else {
                    continue;
                };
                let adjustment = Put::builder()
                    .table_name(self.table_name())
                    .set_item(Some(closes::adjustment_item(
                        close,
                        pending.event,
                        &booking,
                        pending.delivery.received_at,
                    )))
                    .build()
                    .map_err(invalid)?;
                actions.push(TransactWriteItem::builder().put(adjustment).build());
                puts.push(None);
            }
            for delta in unit.deltas()? {
                let update = delta.into_update()?;
                let update = Update::builder()
                    .table_name(self.table_name())
                    .set_key(Some(update.key))
                    .update_expression(update.expression)
                    .set_expression_attribute_values(Some(update.values))
                    .build()
                    .map_err(invalid)?;
                actions.push(TransactWriteItem::builder().update(update).build());
                puts.push(None);
            }
            let keys: Vec<_> = unit.events.iter().map(|p| &p.event.key).collect();
            let list = Put::builder()
                .table_name(self.table_name())
                .set_item(Some(items::booking_list_item(
                    unit.sim_sid,
                    unit.day,
                    &keys,
                )))
                .build()
                .map_err(invalid)?;
            actions.push(TransactWriteItem::builder().put(list).build());
            puts.push(None);
            unit_of.resize(actions.len(), u);
        }
        Ok((actions, puts, unit_of))
    }

    /// Sends one transaction. The SDK gives every `TransactWriteItems` a client request
    /// token of its own and keeps it across its retries, so a retry of a commit that
    /// succeeded succeeds again instead of failing its conditions and reporting the events
    /// as duplicates of themselves (`an_sdk_retry_of_a_commit_that_succeeded_reports_new`).
    pub(super) async fn send(&self, actions: Vec<TransactWriteItem>) -> Sent {
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
                    self.add_capacity(Some(capacity), true);
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
                self.add_failed_writes(2 * count);
                match service.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        Sent::Cancelled(cancelled.cancellation_reasons.unwrap_or_default())
                    }
                    other => Sent::Failed(LedgerError::Invalid(other.to_string())),
                }
            }
            Err(error) => Sent::Failed(LedgerError::from_sdk("TransactWriteItems", error)),
        }
    }
}

fn fail_all(units: &[Unit<'_>], reason: &str) -> Vec<(usize, Stored)> {
    units
        .iter()
        .flat_map(|u| &u.events)
        .map(|p| {
            (
                p.index,
                Stored::Failed(Outcome::Retry {
                    reason: reason.to_owned(),
                }),
            )
        })
        .collect()
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
    }
}
