//! Callbacks: one item per provider and idempotency token, written with a conditional put;
//! a SIM update's status also becomes the SIM's latest status, in the same transaction.

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::commit::{CancelCode, Sent};
use super::items::{key, string_attr};
use super::{
    Delivery, Item, LedgerError, PutIfAbsent, TRANSACTION_ATTEMPTS, UsageLedger, backoff, keys,
    timestamp,
};
use crate::callback::{Callback, CallbackKind, TokenSource};

/// What happened to a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    New,
    Duplicate,
}

/// A SIM's latest status, as the last SIM-update callback reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimStatus {
    pub sim_sid: String,
    pub status: String,
    pub updated_at: String,
}

fn callback_item(callback: &Callback, payload: &[u8], delivery: &Delivery) -> Item {
    let provider = callback.provider.as_str();
    let mut item = key(
        keys::callback_pk(provider, &callback.idempotency_token),
        keys::SINGLE,
    );
    let s = |v: &str| AttributeValue::S(v.to_owned());
    item.insert("callback_kind".into(), s(callback.kind.as_str()));
    item.insert("provider".into(), s(provider));
    item.insert("idempotency_token".into(), s(&callback.idempotency_token));
    let token_source = match callback.token_source {
        TokenSource::Header => "header",
        TokenSource::PayloadHash => "payload-hash",
    };
    item.insert("token_source".into(), s(token_source));
    item.insert("path".into(), s(delivery.origin.path()));
    item.insert("origin".into(), s(&delivery.origin.locator()));
    item.insert("received_at".into(), s(&timestamp(delivery.received_at)));
    // parse_callback only accepts UTF-8 payloads, so the text is lossless.
    item.insert(
        "payload".into(),
        AttributeValue::S(String::from_utf8_lossy(payload).into_owned()),
    );
    let fields = callback
        .fields
        .iter()
        .map(|(name, value)| AttributeValue::L(vec![s(name), s(value)]))
        .collect();
    item.insert("fields".into(), AttributeValue::L(fields));
    for (name, value) in [
        ("sim_sid", &callback.sim_sid),
        ("account_sid", &callback.account_sid),
        ("status", &callback.status),
    ] {
        if let Some(value) = value {
            item.insert(name.into(), s(value));
        }
    }
    item
}

impl UsageLedger {
    /// Stores a callback once per provider and idempotency token.
    pub async fn record_callback(
        &self,
        callback: &Callback,
        payload: &[u8],
        delivery: &Delivery,
    ) -> Result<CallbackOutcome, LedgerError> {
        let item = callback_item(callback, payload, delivery);
        match (callback.kind, &callback.sim_sid, &callback.status) {
            (CallbackKind::Sims, Some(sim_sid), Some(status)) => {
                self.put_callback_with_status(item, sim_sid, status, delivery)
                    .await
            }
            _ => self.put_callback(item).await,
        }
    }

    async fn put_callback(&self, item: Item) -> Result<CallbackOutcome, LedgerError> {
        Ok(match self.put_if_absent(item).await? {
            PutIfAbsent::Created => CallbackOutcome::New,
            PutIfAbsent::Exists(_) => CallbackOutcome::Duplicate,
        })
    }

    async fn put_callback_with_status(
        &self,
        item: Item,
        sim_sid: &str,
        status: &str,
        delivery: &Delivery,
    ) -> Result<CallbackOutcome, LedgerError> {
        let invalid = |e: aws_sdk_dynamodb::error::BuildError| LedgerError::Invalid(e.to_string());
        let put = Put::builder()
            .table_name(self.table_name())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(invalid)?;
        let update = Update::builder()
            .table_name(self.table_name())
            .set_key(Some(key(keys::sim_pk(sim_sid), keys::SIM_STATUS_SK)))
            .update_expression("SET sim_sid = :sim, #status = :status, updated_at = :at")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":sim", AttributeValue::S(sim_sid.to_owned()))
            .expression_attribute_values(":status", AttributeValue::S(status.to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(timestamp(delivery.received_at)))
            .build()
            .map_err(invalid)?;
        let actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        // The one transaction path's send (capacity, client request token) and its
        // cancellation codes; a callback is one put and one update, never split.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reasons = match self.send(actions.clone()).await {
                Sent::Committed => return Ok(CallbackOutcome::New),
                Sent::Failed(error) => return Err(error),
                Sent::Cancelled(reasons) => reasons,
            };
            let codes: Vec<CancelCode> = reasons.iter().map(|r| CancelCode::of(Some(r))).collect();
            if codes.first() == Some(&CancelCode::ConditionalCheckFailed) {
                return Ok(CallbackOutcome::Duplicate);
            }
            let message = CancelCode::message(&codes);
            let code = Some("TransactionCanceledException".to_owned());
            // Throttling or another writer of the same SIM status: the same transaction can
            // succeed, so the sender must be asked to retry, never told the payload is bad.
            if !codes.iter().all(CancelCode::passing) {
                return Err(LedgerError::Rejected {
                    operation: "TransactWriteItems",
                    code,
                    message,
                });
            }
            if attempt >= TRANSACTION_ATTEMPTS {
                return Err(LedgerError::Retryable {
                    operation: "TransactWriteItems",
                    code,
                    message,
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// The SIM's latest status from SIM-update callbacks.
    pub async fn sim_status(&self, sim_sid: &str) -> Result<Option<SimStatus>, LedgerError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table_name())
            .set_key(Some(key(keys::sim_pk(sim_sid), keys::SIM_STATUS_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("GetItem", e))?;
        Ok(output.item.map(|item| SimStatus {
            sim_sid: sim_sid.to_owned(),
            status: string_attr(&item, "status").unwrap_or_default().to_owned(),
            updated_at: string_attr(&item, "updated_at")
                .unwrap_or_default()
                .to_owned(),
        }))
    }

    /// How many callbacks are stored under this provider and token (0 or 1).
    pub async fn callback_exists(&self, provider: &str, token: &str) -> Result<bool, LedgerError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table_name())
            .set_key(Some(key(keys::callback_pk(provider, token), keys::SINGLE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("GetItem", e))?;
        Ok(output.item.is_some())
    }
}
