//! A scripted fake of the ledger port (`kore_ingest_core::port::Ledger`), for
//! running the functions' handlers in process with no server: the handler tests in
//! `functions/*/tests/` script what storage does and read back what the handler asked of it.
//!
//! Unscripted, it keeps the port's contract in its simplest form: the first copy of an event
//! is new, a later one with the same data a duplicate (a new delivery when its provider and
//! path are new), with other data a conflict that is quarantined; a rejected element is
//! quarantined; past the deadline nothing is written and every input is to be retried. The
//! ledger's own behaviour (transactions, rollups, faults) is tested against DynamoDB Local.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kore_ingest_core::callback::Callback;
use kore_ingest_core::delivery::{Delivery, Origin, Outcome, delivery_tag};
use kore_ingest_core::event::{ParsedItem, Provider};
use kore_ingest_core::port::{CallbackOutcome, Ledger, LedgerError};
use kore_ingest_core::quarantine::{QuarantineEntry, QuarantineKind, quarantine_id};
use tokio::time::Instant;

/// The reason the fake gives inputs it did not write because the deadline had passed.
pub const PAST_DEADLINE: &str = "fake: the deadline had passed";

/// One payload the fake was asked to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub id: String,
    pub kind: QuarantineKind,
    /// What was kept (the start only, for a truncated entry).
    pub payload: Vec<u8>,
    /// The payload's full size.
    pub size: usize,
    pub reason: String,
    pub origin: Origin,
    pub provider: Option<Provider>,
}

/// A callback the fake stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCallback {
    pub callback: Callback,
    pub origin: Origin,
}

#[derive(Debug, Default)]
struct State {
    /// Stored events: dedupe key to data hash and delivery tags.
    events: HashMap<String, ([u8; 32], HashSet<String>)>,
    callbacks: Vec<StoredCallback>,
    quarantined: Vec<Quarantined>,
    /// Every event the handler asked to record, in order: its key and delivery.
    recorded: Vec<(String, Delivery)>,
    /// Events whose writes fail for a passing reason, by key.
    failing_events: HashMap<String, String>,
    failing_quarantine: Option<String>,
    failing_callbacks: Option<LedgerError>,
    /// How long a batch takes before it answers.
    batch_delay: Option<Duration>,
}

/// The fake. Cheap to build; one per test.
#[derive(Debug, Default)]
pub struct FakeLedger {
    state: Mutex<State>,
}

impl FakeLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes of the event with this key fail for a passing reason (throttling).
    pub fn fail_event(self, key: &str) -> Self {
        self.state()
            .failing_events
            .insert(key.to_owned(), format!("fake: writing {key} was throttled"));
        self
    }

    /// Every quarantine write fails for a passing reason.
    pub fn fail_quarantine(self) -> Self {
        self.state().failing_quarantine = Some("fake: the quarantine write timed out".into());
        self
    }

    /// Every callback write fails with `error`.
    pub fn fail_callbacks(self, error: LedgerError) -> Self {
        self.state().failing_callbacks = Some(error);
        self
    }

    /// Every batch takes `delay` before it answers (a stalled table).
    pub fn delay_batches(self, delay: Duration) -> Self {
        self.state().batch_delay = Some(delay);
        self
    }

    /// Writes work again.
    pub fn heal(&self) {
        let mut state = self.state();
        state.failing_events.clear();
        state.failing_quarantine = None;
        state.failing_callbacks = None;
        state.batch_delay = None;
    }

    /// The keys of the stored events, sorted.
    pub fn stored(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.state().events.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Every event the handler asked to record, in order, with its delivery.
    pub fn recorded(&self) -> Vec<(String, Delivery)> {
        self.state().recorded.clone()
    }

    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.state().quarantined.clone()
    }

    pub fn callbacks(&self) -> Vec<StoredCallback> {
        self.state().callbacks.clone()
    }

    fn keep(&self, entry: &QuarantineEntry<'_>, keep: usize) -> Result<String, LedgerError> {
        let mut state = self.state();
        if let Some(reason) = &state.failing_quarantine {
            return Err(retryable("PutItem", reason));
        }
        let id = quarantine_id(&entry.kind, entry.delivery.origin.path(), entry.payload);
        if !state.quarantined.iter().any(|q| q.id == id) {
            state.quarantined.push(Quarantined {
                id: id.clone(),
                kind: entry.kind.clone(),
                payload: entry.payload[..entry.payload.len().min(keep)].to_vec(),
                size: entry.payload.len(),
                reason: entry.reason.clone(),
                origin: entry.delivery.origin.clone(),
                provider: entry.delivery.provider_hint,
            });
        }
        Ok(id)
    }

    fn record_one(&self, item: &ParsedItem, delivery: &Delivery, past: bool) -> Outcome {
        if past {
            return Outcome::Retry {
                reason: PAST_DEADLINE.into(),
            };
        }
        let (kind, raw, reason) = match item {
            Err(rejected) => (
                QuarantineKind::Event,
                &rejected.raw,
                rejected.error.to_string(),
            ),
            Ok(event) => {
                let key = event.key.as_str().to_owned();
                let tag = delivery_tag(event.provider, &delivery.origin);
                let mut state = self.state();
                state.recorded.push((key.clone(), delivery.clone()));
                if let Some(reason) = state.failing_events.get(&key) {
                    return Outcome::Retry {
                        reason: reason.clone(),
                    };
                }
                let hash = *event.data_hash.as_bytes();
                match state.events.get_mut(&key) {
                    None => {
                        state.events.insert(key, (hash, HashSet::from([tag])));
                        return Outcome::New;
                    }
                    Some((stored, tags)) if *stored == hash => {
                        return Outcome::Duplicate {
                            new_delivery: tags.insert(tag),
                        };
                    }
                    Some(_) => (
                        QuarantineKind::Conflict,
                        &event.raw,
                        format!("conflict: {key}"),
                    ),
                }
            }
        };
        let conflict = kind == QuarantineKind::Conflict;
        let entry = QuarantineEntry {
            kind,
            payload: raw.as_bytes(),
            reason: reason.clone(),
            delivery,
            related_event: None,
        };
        match self.keep(&entry, usize::MAX) {
            Ok(quarantine_id) if conflict => Outcome::Conflict { quarantine_id },
            Ok(quarantine_id) => Outcome::Quarantined {
                quarantine_id,
                reason,
            },
            Err(error) => Outcome::Retry {
                reason: error.to_string(),
            },
        }
    }
}

fn retryable(operation: &'static str, message: &str) -> LedgerError {
    LedgerError::Retryable {
        operation,
        code: Some("ThrottlingException".into()),
        message: message.to_owned(),
    }
}

impl Ledger for FakeLedger {
    async fn record_batch(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> Vec<Outcome> {
        let delay = self.state().batch_delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let past = deadline.is_some_and(|d| Instant::now() >= d);
        inputs
            .iter()
            .map(|(item, delivery)| self.record_one(item, delivery, past))
            .collect()
    }

    async fn record_callback(
        &self,
        callback: &Callback,
        _payload: &[u8],
        delivery: &Delivery,
    ) -> Result<CallbackOutcome, LedgerError> {
        let mut state = self.state();
        if let Some(error) = &state.failing_callbacks {
            return Err(error.clone());
        }
        let seen = state.callbacks.iter().any(|stored| {
            stored.callback.provider == callback.provider
                && stored.callback.idempotency_token == callback.idempotency_token
        });
        if seen {
            return Ok(CallbackOutcome::Duplicate);
        }
        state.callbacks.push(StoredCallback {
            callback: callback.clone(),
            origin: delivery.origin.clone(),
        });
        Ok(CallbackOutcome::New)
    }

    async fn quarantine_truncated(
        &self,
        entry: QuarantineEntry<'_>,
        keep: usize,
    ) -> Result<String, LedgerError> {
        self.keep(&entry, keep)
    }
}
