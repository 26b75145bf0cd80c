//! The quarantine: every payload that could not become a record, kept raw with the reason
//! and where it came from, listable and re-drivable. Its id is a hash of the kind, the path
//! and the bytes, so quarantining the same payload from the same path again is a no-op.
//!
//! One rule for every caller (the ledger's write path, the consumer, `replay`): a payload
//! that cannot be stored is quarantined, and if even that fails the input is handed back
//! for retry; past the deadline nothing new starts ([`quarantine_or_retry`]).

use std::future::Future;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::callback::CallbackKind;
use crate::delivery::{Delivery, Outcome};
use crate::error::LedgerError;
use crate::event::{DedupeKey, Provider};
use crate::excerpt::bounded_reason;

/// Why an input is handed back: the invocation's deadline came before its write started.
pub const DEADLINE_REASON: &str = "invocation deadline reached before this write started";

/// Why an event booked on an archived day is quarantined rather than stored.
pub fn archived_day_reason(day: chrono::NaiveDate) -> String {
    archived(
        day,
        "the archive holds the day and its ledger copy may have expired, so storing the event could count it twice",
    )
}

/// Why a copy of a stored event of an archived day, through a provider or path that had not
/// delivered it, is quarantined rather than added to the event's deliveries.
pub fn archived_copy_reason(day: chrono::NaiveDate) -> String {
    archived(
        day,
        "the event is stored and sealed, and adding this delivery would change the record the archive holds",
    )
}

/// A reason that names the archived day, why, and how to take the day in again.
fn archived(day: chrono::NaiveDate, why: &str) -> String {
    format!(
        "its day {day} is archived: {why}; `kore-usage archive reopen --day {day}` takes the day in again"
    )
}

/// Whether `deadline` has passed.
pub fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// What the quarantined payload was meant to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineKind {
    /// A Kinesis record, a webhook body or one element of it that could not be parsed.
    Event,
    /// A copy of a stored event whose `data` differs from the first copy.
    Conflict,
    /// A callback that could not be parsed or stored.
    Callback {
        kind: CallbackKind,
        idempotency_token: Option<String>,
    },
}

impl QuarantineKind {
    /// The stored name (`payload_kind`): `event`, `conflict` or `callback`.
    pub fn name(&self) -> &'static str {
        match self {
            QuarantineKind::Event => "event",
            QuarantineKind::Conflict => "conflict",
            QuarantineKind::Callback { .. } => "callback",
        }
    }

    /// The kind an entry was stored with, from its names; `None` when they name no kind
    /// this code writes.
    pub fn from_names(
        name: &str,
        callback_kind: Option<&str>,
        idempotency_token: Option<&str>,
    ) -> Option<Self> {
        Some(match name {
            "event" => QuarantineKind::Event,
            "conflict" => QuarantineKind::Conflict,
            "callback" => QuarantineKind::Callback {
                kind: CallbackKind::from_path_segment(callback_kind?)?,
                idempotency_token: idempotency_token.map(str::to_owned),
            },
            _ => return None,
        })
    }
}

/// A payload to quarantine.
#[derive(Debug, Clone)]
pub struct QuarantineEntry<'a> {
    pub kind: QuarantineKind,
    pub payload: &'a [u8],
    /// Stored through [`bounded_reason`], whatever its length.
    pub reason: String,
    pub delivery: &'a Delivery,
    pub related_event: Option<&'a DedupeKey>,
}

/// A quarantined payload as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedPayload {
    pub id: String,
    /// What it was meant to be; a callback's kind and idempotency token are in it.
    pub kind: QuarantineKind,
    pub payload: Vec<u8>,
    /// Only the start of the original is kept (a body refused as too large).
    pub truncated: bool,
    /// The original's size in bytes, when only its start is kept.
    pub original_size: Option<u64>,
    pub reason: String,
    pub path: String,
    pub origin: String,
    pub provider: Option<Provider>,
    pub received_at: String,
    pub related_event_sid: Option<String>,
}

/// One line of the quarantine list (no payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineSummary {
    pub id: String,
    pub reason: String,
    pub path: String,
    pub provider: Option<Provider>,
    pub received_at: String,
    pub origin: String,
}

/// Same kind, path and bytes: same id.
pub fn quarantine_id(kind: &QuarantineKind, path: &str, payload: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.name().as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(payload);
    hex::encode(&hasher.finalize()[..16])
}

/// Quarantines with `write` unless the deadline has passed: `Quarantined` with the id, or
/// `Retry` when the deadline came first or the write failed (the input must come again).
pub async fn quarantine_or_retry<F>(
    reason: &str,
    deadline: Option<Instant>,
    write: impl FnOnce() -> F,
) -> Outcome
where
    F: Future<Output = Result<String, LedgerError>>,
{
    if past(deadline) {
        return Outcome::Retry {
            reason: DEADLINE_REASON.into(),
        };
    }
    let reason = bounded_reason(reason);
    match write().await {
        Ok(quarantine_id) => Outcome::Quarantined {
            quarantine_id,
            reason: reason.into_owned(),
        },
        Err(error) => Outcome::Retry {
            reason: format!("could not quarantine ({reason}): {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_kind_path_and_bytes() {
        let a = quarantine_id(&QuarantineKind::Event, "kinesis", b"x");
        assert_eq!(a, quarantine_id(&QuarantineKind::Event, "kinesis", b"x"));
        assert_ne!(a, quarantine_id(&QuarantineKind::Event, "webhook", b"x"));
        assert_ne!(a, quarantine_id(&QuarantineKind::Conflict, "kinesis", b"x"));
        assert_ne!(a, quarantine_id(&QuarantineKind::Event, "kinesis", b"y"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn stored_kinds_read_back_as_written() {
        let kinds = [
            QuarantineKind::Event,
            QuarantineKind::Conflict,
            QuarantineKind::Callback {
                kind: CallbackKind::Sims,
                idempotency_token: Some("RQ1".into()),
            },
            QuarantineKind::Callback {
                kind: CallbackKind::EsimProfiles,
                idempotency_token: None,
            },
        ];
        for kind in kinds {
            let (callback_kind, token) = match &kind {
                QuarantineKind::Callback {
                    kind,
                    idempotency_token,
                } => (Some(kind.as_str()), idempotency_token.as_deref()),
                _ => (None, None),
            };
            assert_eq!(
                QuarantineKind::from_names(kind.name(), callback_kind, token),
                Some(kind)
            );
        }
        assert_eq!(QuarantineKind::from_names("callback", None, None), None);
        assert_eq!(
            QuarantineKind::from_names("callback", Some("calls"), None),
            None
        );
        assert_eq!(QuarantineKind::from_names("poison", None, None), None);
    }

    #[tokio::test]
    async fn past_the_deadline_nothing_is_written_and_a_failed_write_is_retried() {
        let written = std::sync::atomic::AtomicBool::new(false);
        let past = Some(Instant::now());
        let outcome = quarantine_or_retry("bad", past, || async {
            written.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok("q".to_owned())
        })
        .await;
        assert!(matches!(outcome, Outcome::Retry { reason } if reason == DEADLINE_REASON));
        assert!(!written.load(std::sync::atomic::Ordering::SeqCst));

        let failed = quarantine_or_retry("bad", None, || async {
            Err(LedgerError::Invalid("refused".into()))
        })
        .await;
        assert!(
            matches!(failed, Outcome::Retry { reason } if reason.starts_with("could not quarantine (bad)"))
        );
        let stored = quarantine_or_retry("bad", None, || async { Ok("q".to_owned()) }).await;
        assert_eq!(
            stored,
            Outcome::Quarantined {
                quarantine_id: "q".into(),
                reason: "bad".into()
            }
        );
    }
}
