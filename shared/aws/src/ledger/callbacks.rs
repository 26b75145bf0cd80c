//! Callbacks: one item per provider and idempotency token, written with a conditional put; a
//! SIM update's status also becomes the SIM's latest status, in the same transaction.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use kore_ingest_core::callback::{Callback, CallbackKind};
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::port::{CallbackOutcome, LedgerError};

use super::error::build_error;
use super::items::attrs::Item;
use super::items::callback::{callback_item, sim_status_key, sim_status_update};
use super::table::{CancelCode, PutIfAbsent, Sent, Table, TransactionRetries};

/// The callbacks of one ledger table.
#[derive(Debug, Clone)]
pub struct Callbacks {
    table: Table,
}

impl Callbacks {
    pub fn new(table: Table) -> Self {
        Callbacks { table }
    }

    /// Stores a callback once per provider and idempotency token.
    pub async fn record(
        &self,
        callback: &Callback,
        payload: &[u8],
        delivery: &Delivery,
    ) -> Result<CallbackOutcome, LedgerError> {
        let item = callback_item(callback, payload, delivery);
        match (callback.kind, &callback.sim_sid, &callback.status) {
            (CallbackKind::Sims, Some(sim_sid), Some(status)) => {
                self.put_with_status(item, sim_sid, status, delivery).await
            }
            _ => Ok(match self.table.put_if_absent(item).await? {
                PutIfAbsent::Created => CallbackOutcome::New,
                PutIfAbsent::Exists(_) => CallbackOutcome::Duplicate,
            }),
        }
    }

    async fn put_with_status(
        &self,
        item: Item,
        sim_sid: &str,
        status: &str,
        delivery: &Delivery,
    ) -> Result<CallbackOutcome, LedgerError> {
        let put = Put::builder()
            .table_name(self.table.name())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let (expression, values) = sim_status_update(sim_sid, status, delivery);
        let update = Update::builder()
            .table_name(self.table.name())
            .set_key(Some(sim_status_key(sim_sid)))
            .update_expression(expression)
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(build_error)?;
        let actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        // The one transaction path's send (capacity, client request token), cancellation
        // codes and retries; a callback is one put and one update, never split.
        let mut retries = TransactionRetries::default();
        loop {
            let reasons = match self.table.transact(actions.clone()).await {
                Sent::Committed => return Ok(CallbackOutcome::New),
                Sent::Failed(error) => return Err(error),
                Sent::Cancelled(reasons) => reasons,
            };
            let codes = CancelCode::all(&reasons, actions.len());
            if codes.first() == Some(&CancelCode::ConditionalCheckFailed) {
                return Ok(CallbackOutcome::Duplicate);
            }
            // Throttling or another writer of the same SIM status: the same transaction can
            // succeed, so the sender must be asked to retry, never told the payload is bad.
            let error = CancelCode::error(&codes);
            if !error.is_retryable() || !retries.wait().await {
                return Err(error);
            }
        }
    }
}
