//! Callbacks: one item per provider and idempotency token, written with a conditional put.
//! A SIM-update callback also adds its status to the SIM's history and, when it was sent
//! later than the status the SIM has, becomes the SIM's current status: all in the one
//! transaction, so a callback is never stored without its status or the other way round.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use chrono::Utc;
use futures::StreamExt;
use kore_ingest_core::callback::{Callback, CallbackKind};
use kore_ingest_core::delivery::Delivery;
use kore_ingest_core::excerpt::bounded_reason;
use kore_ingest_core::forward::StoredCallback;
use kore_ingest_core::port::{CallbackOutcome, LedgerError};
use kore_ingest_core::sim_status::StatusChange;
use kore_ingest_core::time::timestamp;

use super::error::build_error;
use super::items::attrs::{Item, key, s, string_attr};
use super::items::callback::{
    SentAt, SimStatusEntry, callback_item, current_status_key, current_status_update, history_item,
    status_entry_of_item, stored_callback_of,
};
use super::keys;
use super::table::{CancelCode, PutIfAbsent, Query, Sent, Table, TransactionRetries};

/// A callback kept for redrive: it is in the ledger, not yet on the event bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unforwarded {
    pub id: String,
    pub reason: String,
    pub kept_at: String,
}

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
        let (at, source) = callback.sent_at(delivery.received_at);
        let item = callback_item(callback, payload, delivery, SentAt { at, source });
        match (callback.kind, &callback.sim_sid, &callback.status) {
            (CallbackKind::Sims, Some(sim_sid), Some(status)) => {
                let entry = SimStatusEntry {
                    sim_sid: sim_sid.clone(),
                    account_sid: callback.account_sid.clone(),
                    change: StatusChange {
                        status: status.clone(),
                        sent_at: at,
                        sent_at_source: source,
                        received_at: delivery.received_at,
                        provider: callback.provider,
                    },
                };
                let id = keys::callback_id(callback.provider.as_str(), &callback.idempotency_token);
                self.put_with_status(item, &entry, &id).await
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
        entry: &SimStatusEntry,
        callback_id: &str,
    ) -> Result<CallbackOutcome, LedgerError> {
        let put = Put::builder()
            .table_name(self.table.name())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let history = Put::builder()
            .table_name(self.table.name())
            .set_item(Some(history_item(entry, callback_id)))
            .build()
            .map_err(build_error)?;
        let status = current_status_update(entry);
        let update = Update::builder()
            .table_name(self.table.name())
            .set_key(Some(current_status_key(&entry.sim_sid)))
            .update_expression(status.expression)
            .condition_expression(status.condition)
            .set_expression_attribute_names(Some(status.names))
            .set_expression_attribute_values(Some(status.values))
            .build()
            .map_err(build_error)?;
        let mut actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().put(history).build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        // The one transaction path's send (capacity, client request token), cancellation
        // codes and retries.
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
            // The SIM has a status sent later: this one joins the history only. Not an
            // attempt spent: nothing failed.
            if actions.len() == 3 && codes.get(2) == Some(&CancelCode::ConditionalCheckFailed) {
                actions.truncate(2);
                continue;
            }
            // Throttling or another writer of the same SIM: the same transaction can
            // succeed, so the sender must be asked to retry, never told the payload is bad.
            let error = CancelCode::error(&codes);
            if !error.is_retryable() || !retries.wait().await {
                return Err(error);
            }
        }
    }

    /// A SIM's current status.
    pub async fn status(&self, sim_sid: &str) -> Result<Option<SimStatusEntry>, LedgerError> {
        self.table
            .get(current_status_key(sim_sid))
            .await?
            .map(|item| status_entry_of_item(&item))
            .transpose()
    }

    /// Every SIM's current status, by SIM.
    pub async fn statuses(&self) -> Result<Vec<SimStatusEntry>, LedgerError> {
        let reads = (0..keys::SHARDS).map(|shard| {
            self.table
                .query(Query::partition(keys::sim_status_shard_pk(shard)))
        });
        let mut results = futures::stream::iter(reads.collect::<Vec<_>>())
            .buffer_unordered(self.table.concurrency());
        let mut statuses = BTreeMap::new();
        while let Some(items) = results.next().await {
            for item in items? {
                let entry = status_entry_of_item(&item)?;
                statuses.insert(entry.sim_sid.clone(), entry);
            }
        }
        Ok(statuses.into_values().collect())
    }

    /// A stored callback by its id (`<provider>#<token>`).
    pub async fn stored(&self, id: &str) -> Result<Option<StoredCallback>, LedgerError> {
        let key = key(keys::callback_pk_of_id(id), keys::SINGLE);
        self.table
            .get(key)
            .await?
            .map(|item| stored_callback_of(&item))
            .transpose()
    }

    /// Keeps a callback the forwarder could not put on the event bus, for redrive; a
    /// callback kept again keeps its latest reason.
    pub async fn keep_unforwarded(&self, id: &str, reason: &str) -> Result<(), LedgerError> {
        let mut item = key(keys::UNFORWARDED_PK, id);
        item.insert("reason".into(), s(bounded_reason(reason)));
        item.insert("kept_at".into(), s(timestamp(Utc::now())));
        self.table.put(item).await
    }

    /// The callbacks kept for redrive, by id.
    pub async fn unforwarded(&self) -> Result<Vec<Unforwarded>, LedgerError> {
        Ok(self
            .table
            .query(Query::partition(keys::UNFORWARDED_PK.to_owned()))
            .await?
            .iter()
            .map(|item| Unforwarded {
                id: string_attr(item, "sk").unwrap_or_default().to_owned(),
                reason: string_attr(item, "reason").unwrap_or_default().to_owned(),
                kept_at: string_attr(item, "kept_at").unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// A kept callback is on the bus now: off the redrive list.
    pub async fn forwarded(&self, id: &str) -> Result<(), LedgerError> {
        self.table.delete(key(keys::UNFORWARDED_PK, id)).await?;
        Ok(())
    }

    /// Every status a SIM's update callbacks carried, oldest first by send time, then
    /// arrival (see `kore_ingest_core::sim_status` for what is a change).
    pub async fn history(&self, sim_sid: &str) -> Result<Vec<SimStatusEntry>, LedgerError> {
        self.table
            .query(Query::prefix(keys::sim_pk(sim_sid), keys::STATUS_SK_PREFIX))
            .await?
            .iter()
            .map(status_entry_of_item)
            .collect()
    }
}
