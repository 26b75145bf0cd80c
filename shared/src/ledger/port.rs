//! The port between the functions and the ledger: the three things their handlers ask of
//! it, behind one trait. [`UsageLedger`] is the implementation that runs; the handlers'
//! own tests run them in process against a scripted fake (`tests/support/fake.rs`), so
//! that their rules (which record to report, which status to answer) are tested without a
//! server, and the ledger keeps its own tests against DynamoDB Local.

use std::future::Future;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use tokio::time::Instant;

use super::callbacks::CallbackOutcome;
use super::{Delivery, LedgerConfig, LedgerError, Outcome, QuarantineEntry, UsageLedger};
use crate::callback::Callback;
use crate::event::ParsedItem;

/// What the functions need from the ledger.
pub trait Ledger: Send + Sync {
    /// Records a batch's parsed elements: a valid event is stored exactly once, a rejected
    /// one quarantined. Outcomes come in input order; the first copy of an event in the
    /// batch is the one stored. Once `deadline` has passed no new write starts, and what is
    /// left gets [`Outcome::Retry`].
    fn record_batch(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> impl Future<Output = Vec<Outcome>> + Send;

    /// Stores a callback once per provider and idempotency token.
    fn record_callback(
        &self,
        callback: &Callback,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<CallbackOutcome, LedgerError>> + Send;

    /// Keeps the first `keep` bytes of a payload in the quarantine (all of it when `keep`
    /// is at least its length, with its full size and hash otherwise); returns its id.
    fn quarantine_truncated(
        &self,
        entry: QuarantineEntry<'_>,
        keep: usize,
    ) -> impl Future<Output = Result<String, LedgerError>> + Send;

    /// Keeps the whole payload in the quarantine; returns its id.
    fn quarantine(
        &self,
        entry: QuarantineEntry<'_>,
    ) -> impl Future<Output = Result<String, LedgerError>> + Send {
        self.quarantine_truncated(entry, usize::MAX)
    }
}

impl Ledger for UsageLedger {
    fn record_batch(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> impl Future<Output = Vec<Outcome>> + Send {
        self.record_all(inputs, deadline)
    }

    fn record_callback(
        &self,
        callback: &Callback,
        payload: &[u8],
        delivery: &Delivery,
    ) -> impl Future<Output = Result<CallbackOutcome, LedgerError>> + Send {
        UsageLedger::record_callback(self, callback, payload, delivery)
    }

    fn quarantine_truncated(
        &self,
        entry: QuarantineEntry<'_>,
        keep: usize,
    ) -> impl Future<Output = Result<String, LedgerError>> + Send {
        UsageLedger::quarantine_truncated(self, entry, keep)
    }
}

impl UsageLedger {
    /// The ledger of a deployed function or tool on an SDK configuration (see
    /// [`crate::aws::sdk_config`]), with [`LedgerConfig::from_env`].
    pub fn from_sdk_config(aws: &SdkConfig) -> Result<Self, String> {
        Ok(UsageLedger::new(
            Client::new(aws),
            LedgerConfig::from_env()?,
        ))
    }
}
