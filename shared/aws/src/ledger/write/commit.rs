//! The one transaction path: new usage events, with their rollup counts and booking lists,
//! stored together or not at all. A single event is a transaction of one unit of one.
//!
//! When DynamoDB cancels a transaction, the reason of each action says what to do: an
//! event whose condition failed is stored already (it leaves the transaction and takes the
//! duplicate path, with the stored item DynamoDB returned); conflicts and throttling are
//! retried with back-off; anything else (an item DynamoDB refuses) splits the transaction
//! until the event that cannot be stored is alone, and that one is quarantined.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    CancellationReason, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use kore_ingest_core::closes::closable;
use kore_ingest_core::delivery::Outcome;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::quarantine::{DEADLINE_REASON, past};
use kore_ingest_core::usage::Booking;
use tokio::time::Instant;

use super::plan::{Unit, Waves};
use super::stored::{Stored, existing_or_fetch, refused};
use crate::ledger::error::build_error;
use crate::ledger::items::attrs::Item;
use crate::ledger::items::booking_list::booking_list_item;
use crate::ledger::items::close::{adjustment_item, closed_day_key, unclosed_condition};
use crate::ledger::items::event::event_item;
use crate::ledger::items::rollup::update_of;
use crate::ledger::quarantine::QuarantineStore;
use crate::ledger::table::{CancelCode, Sent, Table, TransactionRetries};

/// A transaction's actions, the input index of each event put, each action's unit (the
/// day markers' belong to none), and the day of each check of a day's marker.
struct Transaction {
    actions: Vec<TransactWriteItem>,
    puts: Vec<Option<usize>>,
    unit_of: Vec<usize>,
    marker_days: Vec<Option<NaiveDate>>,
}

/// Where a group of units stands after a cancelled transaction.
enum AfterCancel<'a> {
    /// Send these again (at once, or after the back-off already waited).
    Again(Vec<Unit<'a>>),
    /// Every event of the group has an outcome or went back to the queue.
    Settled,
}

/// The commits of one wave's transaction: the table, the quarantine for what it refuses, the deadline, the queue of unit groups still to
/// send, and the outcomes so far.
struct Commits<'r, 'a> {
    table: &'r Table,
    quarantine: &'r QuarantineStore,
    deadline: Option<Instant>,
    queue: Vec<Vec<Unit<'a>>>,
    results: Committed,
}

/// What the commits of a batch did: each event's write, and the events not written because
/// a close of their booking day was registered after the batch read the closes (planned
/// again with the closes read afresh, they are adjustments of that close).
#[derive(Debug, Default)]
pub(super) struct Committed {
    pub stored: Vec<(usize, Stored)>,
    pub closed_meanwhile: Vec<usize>,
}

/// Sends the waves one after another, the transactions of a wave at once.
pub(super) async fn commit_waves(
    table: &Table,
    quarantine: &QuarantineStore,
    waves: Waves<'_>,
    deadline: Option<Instant>,
) -> Committed {
    let mut results = Committed::default();
    for wave in waves {
        let commits = wave.into_iter().map(|units| {
            let commits = Commits {
                table,
                quarantine,
                deadline,
                queue: vec![units],
                results: Committed::default(),
            };
            commits.run()
        });
        let mut done = futures::stream::iter(commits.collect::<Vec<_>>())
            .buffer_unordered(table.concurrency());
        while let Some(outcomes) = done.next().await {
            results.stored.extend(outcomes.stored);
            results.closed_meanwhile.extend(outcomes.closed_meanwhile);
        }
    }
    results
}

impl<'r, 'a> Commits<'r, 'a> {
    /// Every unit group in the queue, until every event has an outcome.
    async fn run(mut self) -> Committed {
        while let Some(units) = self.queue.pop() {
            self.settle(units).await;
        }
        self.results
    }

    /// Sends one group of units until each of its events has an outcome or went back to
    /// the queue.
    async fn settle(&mut self, mut units: Vec<Unit<'a>>) {
        let mut retries = TransactionRetries::default();
        while !units.is_empty() {
            if past(self.deadline) {
                self.fail_all(&units, DEADLINE_REASON);
                return;
            }
            let mut transaction = match self.transaction(&units) {
                Ok(built) => built,
                Err(error) => return self.split(units, error).await,
            };
            let actions = std::mem::take(&mut transaction.actions);
            match self.table.transact(actions).await {
                Sent::Committed => {
                    let stored = units.iter().flat_map(|u| &u.events);
                    self.results
                        .stored
                        .extend(stored.map(|p| (p.index, Stored::New)));
                    return;
                }
                Sent::Cancelled(reasons) => {
                    let after = self
                        .after_cancel(units, &reasons, &transaction, &mut retries)
                        .await;
                    match after {
                        AfterCancel::Again(rest) => units = rest,
                        AfterCancel::Settled => return,
                    }
                }
                Sent::Failed(error) if error.is_retryable() => {
                    self.fail_all(&units, &error.to_string());
                    return;
                }
                Sent::Failed(error) => return self.split(units, error).await,
            }
        }
    }

    /// A cancelled transaction: events stored meanwhile leave it, a reason that will not pass
    /// splits it, units that did nothing wrong go on at once, and the rest waits its turn.
    async fn after_cancel(
        &mut self,
        units: Vec<Unit<'a>>,
        reasons: &[CancellationReason],
        transaction: &Transaction,
        retries: &mut TransactionRetries,
    ) -> AfterCancel<'a> {
        let (puts, unit_of) = (&transaction.puts, &transaction.unit_of);
        let codes = CancelCode::all(reasons, puts.len());
        // A day closed since the batch read the closes: its units go back to be planned
        // again as late usage; the others go on.
        let closed: Vec<NaiveDate> = codes
            .iter()
            .zip(&transaction.marker_days)
            .filter_map(|(code, day)| {
                (*code == CancelCode::ConditionalCheckFailed).then_some(*day)?
            })
            .collect();
        if !closed.is_empty() {
            let (replan, rest): (Vec<_>, Vec<_>) = units
                .into_iter()
                .partition(|unit| closed.contains(&unit.day));
            let events = replan.iter().flat_map(|unit| &unit.events);
            self.results
                .closed_meanwhile
                .extend(events.map(|p| p.index));
            return AfterCancel::Again(rest);
        }
        let mut stored = Vec::new();
        for (i, code) in codes.iter().enumerate() {
            if let (Some(Some(index)), CancelCode::ConditionalCheckFailed) = (puts.get(i), code) {
                stored.push((*index, reasons.get(i).and_then(|r| r.item.clone())));
            }
        }
        if !stored.is_empty() {
            let indexes: Vec<usize> = stored.iter().map(|(i, _)| *i).collect();
            for (index, old) in stored {
                let outcome = self.existing(&units, index, old).await;
                self.results.stored.push((index, outcome));
            }
            return AfterCancel::Again(units.iter().filter_map(|u| u.without(&indexes)).collect());
        }
        if !codes.iter().all(CancelCode::passing) {
            self.split(units, CancelCode::error(&codes)).await;
            return AfterCancel::Settled;
        }
        // Units whose actions all read `None` did nothing wrong: they go on at once in a
        // transaction of their own; the others wait their turn.
        let hot: Vec<bool> = (0..units.len())
            .map(|u| {
                codes
                    .iter()
                    .zip(unit_of)
                    .any(|(code, of)| *of == u && *code != CancelCode::None)
            })
            .collect();
        if hot.iter().any(|h| *h) && !hot.iter().all(|h| *h) {
            let (waiting, innocent): (Vec<_>, Vec<_>) =
                units.into_iter().zip(&hot).partition(|(_, h)| **h);
            self.queue
                .push(waiting.into_iter().map(|(u, _)| u).collect());
            return AfterCancel::Again(innocent.into_iter().map(|(u, _)| u).collect());
        }
        if !retries.wait().await {
            self.fail_all(&units, &CancelCode::error(&codes).to_string());
            return AfterCancel::Settled;
        }
        AfterCancel::Again(units)
    }

    /// DynamoDB refused a transaction for a reason that will not pass: try its units, then
    /// its events, apart; a single event refused is quarantined with the reason.
    async fn split(&mut self, units: Vec<Unit<'a>>, error: LedgerError) {
        if units.len() > 1 {
            self.queue.extend(units.into_iter().map(|unit| vec![unit]));
            return;
        }
        let Some(unit) = units.into_iter().next() else {
            return;
        };
        if unit.events.len() > 1 {
            self.queue.extend(unit.events.iter().map(|pending| {
                vec![Unit {
                    events: vec![*pending],
                    ..unit.clone()
                }]
            }));
            return;
        }
        for pending in &unit.events {
            let outcome = refused(self.quarantine, pending, error.clone(), self.deadline).await;
            self.results
                .stored
                .push((pending.index, Stored::Failed(outcome)));
        }
    }

    fn fail_all(&mut self, units: &[Unit<'_>], reason: &str) {
        let events = units.iter().flat_map(|u| &u.events);
        self.results.stored.extend(events.map(|p| {
            let retry = Outcome::Retry {
                reason: reason.to_owned(),
            };
            (p.index, Stored::Failed(retry))
        }));
    }

    /// The stored digest of an event whose condition failed: the item DynamoDB returned, or
    /// a consistent read of it.
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
        match existing_or_fetch(self.table, old, &pending.event.key).await {
            Ok(digest) => Stored::Existing(digest),
            Err(error) => Stored::Failed(Outcome::Retry {
                reason: error.to_string(),
            }),
        }
    }

    /// The actions of a transaction: per unit, its event puts, the adjustments of closed
    /// periods, its rollup updates and its booking list.
    fn transaction(&self, units: &[Unit<'_>]) -> Result<Transaction, LedgerError> {
        let table = self.table.name();
        let retention = &self.table.config().retention;
        let mut built = Transaction {
            actions: Vec::new(),
            puts: Vec::new(),
            unit_of: Vec::new(),
            marker_days: Vec::new(),
        };
        let push = |built: &mut Transaction, action: TransactWriteItem, put: Option<usize>| {
            built.actions.push(action);
            built.puts.push(put);
        };
        // The accounts of the usage not known to be late, per booking day a close could
        // cover by the time the transaction lands (recent usage cannot be in one yet).
        let now = Utc::now();
        let mut unknown: BTreeMap<NaiveDate, Vec<Option<&str>>> = BTreeMap::new();
        for (u, unit) in units.iter().enumerate() {
            for pending in &unit.events {
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(event_item(pending.event, pending.delivery, retention)))
                    .condition_expression("attribute_not_exists(pk)")
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(build_error)?;
                push(
                    &mut built,
                    TransactWriteItem::builder().put(put).build(),
                    Some(pending.index),
                );
            }
            for pending in &unit.events {
                let (Some(close), Some(booking)) = (pending.close, Booking::of(pending.event))
                else {
                    continue;
                };
                let received_at = pending.delivery.received_at;
                let item = adjustment_item(close, pending.event, &booking, received_at, now);
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .build();
                push(
                    &mut built,
                    TransactWriteItem::builder()
                        .put(put.map_err(build_error)?)
                        .build(),
                    None,
                );
            }
            let deltas = unit.deltas()?;
            for delta in &deltas {
                let spec = update_of(delta)?;
                let update = Update::builder()
                    .table_name(table)
                    .set_key(Some(spec.key))
                    .update_expression(spec.expression)
                    .set_expression_attribute_values(Some(spec.values))
                    .build()
                    .map_err(build_error)?;
                push(
                    &mut built,
                    TransactWriteItem::builder().update(update).build(),
                    None,
                );
            }
            let closable = closable(unit.day, now);
            for pending in unit.events.iter().filter(|p| closable && p.close.is_none()) {
                let accounts = unknown.entry(unit.day).or_default();
                accounts.push(pending.event.account_sid.as_deref());
            }
            let keys: Vec<_> = unit.events.iter().map(|p| &p.event.key).collect();
            // The list goes no earlier than the last of its events.
            let expires_at = unit
                .events
                .iter()
                .filter_map(|p| retention.expires_at(unit.day, p.delivery.received_at))
                .max();
            let list = Put::builder()
                .table_name(table)
                .set_item(Some(booking_list_item(
                    unit.sim_sid,
                    unit.day,
                    &keys,
                    expires_at,
                )))
                .build()
                .map_err(build_error)?;
            push(
                &mut built,
                TransactWriteItem::builder().put(list).build(),
                None,
            );
            built.unit_of.resize(built.actions.len(), u);
        }
        built.marker_days.resize(built.actions.len(), None);
        // Each day's marker, checked where the write happens: a close registered since
        // the batch read the closes cancels the transaction rather than let usage of its
        // period land in neither its snapshot nor its adjustments.
        for (day, accounts) in unknown {
            let (condition, values) = unclosed_condition(accounts);
            let check = ConditionCheck::builder()
                .table_name(table)
                .set_key(Some(closed_day_key(day)))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(build_error)?;
            push(
                &mut built,
                TransactWriteItem::builder().condition_check(check).build(),
                None,
            );
            built.unit_of.push(units.len());
            built.marker_days.push(Some(day));
        }
        Ok(built)
    }
}
