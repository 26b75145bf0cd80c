//! An alert as it is stored, listed and put on the event bus: one record shape for every
//! kind, and the key that makes each one exactly once.

use serde::{Deserialize, Serialize};

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Usage,
    Silence,
    Quality,
}

impl AlertKind {
    /// As the record writes it.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Usage => "usage",
            AlertKind::Silence => "silence",
            AlertKind::Quality => "quality",
        }
    }

    /// The `detail-type` of its entry on the event bus.
    pub fn detail_type(self) -> &'static str {
        match self {
            AlertKind::Usage => "Usage Threshold Crossed",
            AlertKind::Silence => "SIM Silent",
            AlertKind::Quality => "Usage Event Inconsistent",
        }
    }
}

/// One alert. Times are RFC 3339 UTC with milliseconds, as the ledger stores them.
///
/// - `usage`: `subject` is the SIM (`per: sim`) or the scope's account, fleet or SIM (`all`
///   without one); `period_start` the day or month; `threshold` and `value` bytes;
///   `crossed_by` the event after which the sum reached the threshold.
/// - `silence`: `subject` the SIM; `period_start` its last arrival; `threshold` the rule's
///   minutes and `value` the minutes it had been silent; `crossed_by` its last event.
/// - `quality`: `subject` the SIM; `period_start` the hour the event is booked in;
///   `threshold` upload + download and `value` the `data_total` it gave; `crossed_by` the
///   event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub rule_id: String,
    pub kind: AlertKind,
    pub subject: String,
    pub period_start: String,
    pub threshold: Option<u64>,
    pub value: u64,
    pub crossed_by: Option<String>,
    pub raised_at: String,
}

impl Alert {
    /// What makes it one: the period, rule and subject, then the threshold (usage), the
    /// event (quality) or nothing more (silence: its period is the last arrival). Sorts by
    /// `period_start`, which is what lists read by.
    pub fn key(&self) -> String {
        let last = match self.kind {
            AlertKind::Usage => self.threshold.unwrap_or_default().to_string(),
            AlertKind::Quality => self.crossed_by.clone().unwrap_or_default(),
            AlertKind::Silence => "-".into(),
        };
        format!(
            "{}#{}#{}#{}",
            self.period_start, self.rule_id, self.subject, last
        )
    }

    /// The record as listed and as the bus entry's `detail`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
