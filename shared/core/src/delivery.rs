//! How an input reached the pipeline and what became of it. Plain data, free of any storage
//! type, so the functions, the CLI and the fuzz targets share one vocabulary.

use chrono::{DateTime, Utc};

use crate::event::Provider;

/// How an input reached us. Stored with every quarantined payload; its path is part of
/// every event's delivery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Kinesis {
        shard_id: String,
        sequence_number: String,
    },
    Webhook {
        request_id: String,
    },
    /// `kore-usage replay` or a quarantine redrive by an operator.
    Replay {
        source: String,
    },
}

impl Origin {
    /// The delivery path: `kinesis`, `webhook` or `replay`.
    pub fn path(&self) -> &'static str {
        match self {
            Origin::Kinesis { .. } => "kinesis",
            Origin::Webhook { .. } => "webhook",
            Origin::Replay { .. } => "replay",
        }
    }

    /// Where exactly: `shard/sequence`, the request id, or the replayed source.
    pub fn locator(&self) -> String {
        match self {
            Origin::Kinesis {
                shard_id,
                sequence_number,
            } => format!("{shard_id}/{sequence_number}"),
            Origin::Webhook { request_id } => request_id.clone(),
            Origin::Replay { source } => source.clone(),
        }
    }
}

/// One delivery of a payload: where from, and when it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub origin: Origin,
    pub received_at: DateTime<Utc>,
    /// Known from the request (webhook headers) even when the payload cannot be parsed.
    pub provider_hint: Option<Provider>,
}

impl Delivery {
    pub fn now(origin: Origin) -> Self {
        Delivery {
            origin,
            received_at: Utc::now(),
            provider_hint: None,
        }
    }
}

/// `provider#path`, e.g. `kore#kinesis`: who delivered an event, and how. The event record
/// keeps the set of these.
pub fn delivery_tag(provider: Provider, origin: &Origin) -> String {
    format!("{}#{}", provider.as_str(), origin.path())
}

/// The provider part of a [`delivery_tag`]: `kore` of `kore#kinesis`.
pub fn tag_provider(tag: &str) -> &str {
    tag.split_once('#').map_or(tag, |(provider, _)| provider)
}

/// What happened to one input. Every input ends in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// First time seen: stored, and its usage counted.
    New,
    /// Seen before with the same data: nothing counted again. `new_delivery` is true when
    /// this provider and path had not delivered it before (now recorded).
    Duplicate { new_delivery: bool },
    /// Seen before with different data: the first is kept, this copy quarantined.
    Conflict { quarantine_id: String },
    /// Unusable input, kept in the quarantine with the reason.
    Quarantined {
        quarantine_id: String,
        reason: String,
    },
    /// Not stored for a passing reason (throttling, timeout, server error, deadline): the
    /// caller must have it delivered again.
    Retry { reason: String },
}

impl Outcome {
    pub fn is_retry(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }
}

/// How many inputs ended in each [`Outcome`]: the one tally the functions, replay and
/// redrive report. Serializes as `new`, `duplicate`, `conflict`, `quarantined`, `retry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutcomeCounts {
    pub new: u64,
    pub duplicate: u64,
    pub conflict: u64,
    pub quarantined: u64,
    pub retry: u64,
    /// The first retry's reason, to say why a batch must be delivered again.
    #[serde(skip)]
    pub first_retry_reason: Option<String>,
}

impl OutcomeCounts {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::New => self.new += 1,
            Outcome::Duplicate { .. } => self.duplicate += 1,
            Outcome::Conflict { .. } => self.conflict += 1,
            Outcome::Quarantined { .. } => self.quarantined += 1,
            Outcome::Retry { reason } => {
                self.retry += 1;
                if self.first_retry_reason.is_none() {
                    self.first_retry_reason = Some(reason.clone());
                }
            }
        }
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: &OutcomeCounts) {
        self.new += other.new;
        self.duplicate += other.duplicate;
        self.conflict += other.conflict;
        self.quarantined += other.quarantined;
        self.retry += other.retry;
        if self.first_retry_reason.is_none() {
            self.first_retry_reason
                .clone_from(&other.first_retry_reason);
        }
    }

    pub fn total(&self) -> u64 {
        self.new + self.duplicate + self.conflict + self.quarantined + self.retry
    }

    /// The CloudWatch metric each count is reported as.
    pub fn metrics(&self) -> [(&'static str, u64); 5] {
        [
            ("EventsNew", self.new),
            ("EventsDuplicate", self.duplicate),
            ("EventsConflict", self.conflict),
            ("RecordsQuarantined", self.quarantined),
            ("WritesRetryable", self.retry),
        ]
    }
}

impl<'a> FromIterator<&'a Outcome> for OutcomeCounts {
    fn from_iter<I: IntoIterator<Item = &'a Outcome>>(outcomes: I) -> Self {
        let mut counts = OutcomeCounts::default();
        for outcome in outcomes {
            counts.add(outcome);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_outcome_once_and_keep_the_first_retry_reason() {
        let outcomes = [
            Outcome::New,
            Outcome::Duplicate { new_delivery: true },
            Outcome::Duplicate {
                new_delivery: false,
            },
            Outcome::Conflict {
                quarantine_id: "q".into(),
            },
            Outcome::Quarantined {
                quarantine_id: "q".into(),
                reason: "bad".into(),
            },
            Outcome::Retry {
                reason: "first".into(),
            },
            Outcome::Retry {
                reason: "second".into(),
            },
        ];
        let counts: OutcomeCounts = outcomes.iter().collect();
        assert_eq!(
            (
                counts.new,
                counts.duplicate,
                counts.conflict,
                counts.quarantined,
                counts.retry
            ),
            (1, 2, 1, 1, 2)
        );
        assert_eq!(counts.total(), 7);
        assert_eq!(counts.first_retry_reason.as_deref(), Some("first"));
    }

    #[test]
    fn tags_name_provider_and_path() {
        let origin = Origin::Webhook {
            request_id: "r".into(),
        };
        assert_eq!(delivery_tag(Provider::Kore, &origin), "kore#webhook");
    }
}
