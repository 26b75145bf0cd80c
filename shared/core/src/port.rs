//! The port between the functions and the ledger: what their handlers ask of it, behind one
//! trait. The DynamoDB ledger (`kore_ingest_aws::ledger::UsageLedger`) is the implementation
//! that runs; the handlers' own tests run them in process against a scripted fake, so their
//! rules (which record to report, which status to answer) are tested without a server.

use std::future::Future;

use tokio::time::Instant;

use crate::callback::Callback;
use crate::delivery::{Delivery, Outcome};
use crate::event::ParsedItem;
use crate::quarantine::{QuarantineEntry, quarantine_or_retry};

pub use crate::error::LedgerError;

/// What happened to a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    New,
    Duplicate,
}

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

    /// The whole payload quarantined, or the input handed back for retry (see
    /// [`quarantine_or_retry`]).
    fn quarantine_or_retry(
        &self,
        entry: QuarantineEntry<'_>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Outcome> + Send {
        async move {
            let reason = entry.reason.clone();
            quarantine_or_retry(&reason, deadline, || self.quarantine(entry)).await
        }
    }
}
