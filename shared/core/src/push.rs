//! Sending invoice lines to a billing system exactly once: what each system is sent for a
//! line, how its answer reads, and, from what the ledger recorded of earlier attempts,
//! whether a line is sent now. Pure; `kore-usage push` does the sending and the recording.
//!
//! Stripe de-duplicates a meter event's `identifier` for about 24 hours only, so the ledger
//! is the record: a line is marked `sending` before its request and `sent` (or `refused`)
//! with the answer after it. A line found `sending` was interrupted: it is sent again while
//! Stripe still remembers the identifier (an answer "already exists" then means delivered),
//! and after that it is left for an operator to check, never sent twice blindly. Lago keeps
//! `transaction_id` for good: a line sent again is not counted again.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use crate::customers::UNASSIGNED;
use crate::invoice::{InvoiceLine, LineKind};

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stripe,
    Lago,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Stripe => "stripe",
            Target::Lago => "lago",
        }
    }

    /// How long the system itself refuses a line sent again: Stripe about 24 hours (a margin
    /// off it here), Lago for good.
    fn remembers(self) -> Option<Duration> {
        match self {
            Target::Stripe => Some(Duration::hours(23)),
            Target::Lago => None,
        }
    }
}

/// What the ledger holds of a line's pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    /// A request was (perhaps) made; no answer recorded.
    Sending,
    /// Accepted (or found already delivered).
    Sent,
    /// Refused for good by the system (its answer is recorded); sent again on a re-run.
    Refused,
}

impl PushState {
    pub fn name(self) -> &'static str {
        match self {
            PushState::Sending => "sending",
            PushState::Sent => "sent",
            PushState::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sending" => Some(PushState::Sending),
            "sent" => Some(PushState::Sent),
            "refused" => Some(PushState::Refused),
            _ => None,
        }
    }
}

/// The ledger's record of one line's pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecord {
    pub line_id: String,
    pub state: PushState,
    pub customer_id: String,
    /// The quantity last sent.
    pub quantity: String,
    /// When the first request since the line was last refused was made: what Stripe's
    /// memory of the identifier counts from.
    pub first_sent_at: DateTime<Utc>,
    pub status: Option<u16>,
    pub answer: Option<String>,
}

/// What to do with a line now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send,
    /// Delivered before, with this quantity.
    AlreadySent,
    /// Sent before (perhaps delivered) with another quantity: the period changed after it
    /// was pushed (send the difference by hand).
    Changed {
        sent: String,
    },
    /// Interrupted longer ago than the system remembers: it may or may not have arrived.
    Unconfirmed {
        since: DateTime<Utc>,
    },
    /// Usage no customer row assigns: there is nobody to bill it to.
    NoCustomer,
}

/// Whether `line` is sent now, by the ledger's `record` of it.
pub fn step(
    target: Target,
    line: &InvoiceLine,
    record: Option<&PushRecord>,
    now: DateTime<Utc>,
) -> Step {
    if line.customer_id == UNASSIGNED {
        return Step::NoCustomer;
    }
    let quantity = line.quantity.normalize().to_string();
    match record {
        None => Step::Send,
        Some(record) => match record.state {
            PushState::Sent if record.quantity == quantity => Step::AlreadySent,
            PushState::Sent => Step::Changed {
                sent: record.quantity.clone(),
            },
            PushState::Refused => Step::Send,
            // It may have arrived with the quantity it was sent with: sending another under
            // the same id would be taken as that one.
            PushState::Sending if record.quantity != quantity => Step::Changed {
                sent: record.quantity.clone(),
            },
            PushState::Sending => match target.remembers() {
                Some(window) if now - record.first_sent_at >= window => Step::Unconfirmed {
                    since: record.first_sent_at,
                },
                _ => Step::Send,
            },
        },
    }
}

/// The name a line is metered under: `<prefix>_data_<zone>` for data and adjustments (one
/// meter per zone, as each zone has its price), `<prefix>_data` without zones,
/// `<prefix>_sim_fee`; lower case, anything but letters and digits as `_`.
pub fn event_name(prefix: &str, line: &InvoiceLine) -> String {
    let name = match (line.kind, &line.zone) {
        (LineKind::SimFee, _) => format!("{prefix}_sim_fee"),
        (_, Some(zone)) => format!("{prefix}_data_{zone}"),
        (_, None) => format!("{prefix}_data"),
    };
    name.chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_lowercase(),
            false => '_',
        })
        .collect()
}

/// Why a line cannot be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error(
        "line {id}: quantity {quantity} is not a whole number, which Stripe meters take only: give the plan a whole rounding increment"
    )]
    NotWhole { id: String, quantity: String },
}

/// A request's body: a form (Stripe) or JSON (Lago).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Form(Vec<(String, String)>),
    Json(serde_json::Value),
}

/// A request to make: path under the system's base URL and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: &'static str,
    /// `application/x-www-form-urlencoded` (Stripe) or JSON (Lago).
    pub body: Body,
}

/// The request that sends `line` to `target`, stamped `timestamp`.
pub fn request(
    target: Target,
    prefix: &str,
    line: &InvoiceLine,
    timestamp: DateTime<Utc>,
) -> Result<Request, PushError> {
    let quantity = line.quantity.normalize();
    let event_name = event_name(prefix, line);
    match target {
        Target::Stripe => {
            if quantity.fract() != Decimal::ZERO {
                return Err(PushError::NotWhole {
                    id: line.id.clone(),
                    quantity: quantity.to_string(),
                });
            }
            let form = vec![
                ("event_name".to_owned(), event_name),
                ("identifier".to_owned(), line.id.clone()),
                ("timestamp".to_owned(), timestamp.timestamp().to_string()),
                (
                    "payload[stripe_customer_id]".to_owned(),
                    line.customer_id.clone(),
                ),
                ("payload[value]".to_owned(), quantity.to_string()),
            ];
            Ok(Request {
                path: "/v1/billing/meter_events",
                body: Body::Form(form),
            })
        }
        Target::Lago => Ok(Request {
            path: "/api/v1/events",
            body: Body::Json(json!({"event": {
                "transaction_id": line.id,
                "external_subscription_id": line.customer_id,
                "code": event_name,
                "timestamp": timestamp.timestamp(),
                "properties": {
                    "value": quantity.to_string(),
                    "kind": line.kind.name(),
                    "zone": line.zone,
                    "bytes": line.bytes.to_string(),
                },
            }})),
        }),
    }
}

/// How an answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    /// The system refuses it as a copy of one it has: delivered before.
    AlreadyDelivered,
    /// Refused for good (bad customer, timestamp out of range, ...).
    Refused,
    /// Try again later (429, 5xx): it may or may not have been recorded.
    Retry,
}

/// Reads a system's answer: status, `Stripe-Should-Retry` header, body.
pub fn answer(target: Target, status: u16, should_retry: Option<&str>, body: &str) -> Answer {
    match status {
        200..=299 => Answer::Accepted,
        429 | 500..=599 => Answer::Retry,
        400 if target == Target::Stripe
            && should_retry == Some("false")
            && body.contains("already exists with identifier") =>
        {
            Answer::AlreadyDelivered
        }
        409 => Answer::Retry,
        _ => Answer::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::TimeRange;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn line(quantity: &str) -> InvoiceLine {
        InvoiceLine {
            id: "il_0123".into(),
            customer_id: "cus_1".into(),
            kind: LineKind::Data,
            plan_id: None,
            zone: Some("US-home".into()),
            bytes: 5,
            included_bytes: 0,
            sims: 1,
            sim_days: None,
            quantity: quantity.parse().unwrap(),
            unit: "MB",
            unit_price: None,
            amount: None,
            currency: None,
            period: TimeRange::new(at("2024-11-01T00:00:00Z"), at("2024-12-01T00:00:00Z")).unwrap(),
            adjusts: None,
        }
    }

    fn record(state: PushState, quantity: &str, sent_at: &str) -> PushRecord {
        PushRecord {
            line_id: "il_0123".into(),
            state,
            customer_id: "cus_1".into(),
            quantity: quantity.into(),
            first_sent_at: at(sent_at),
            status: None,
            answer: None,
        }
    }

    #[test]
    fn an_interrupted_line_is_resent_only_while_stripe_remembers_it() {
        let now = at("2024-12-03T12:00:00Z");
        let line = line("12");
        let sending = |t: &str| record(PushState::Sending, "12", t);
        assert_eq!(step(Target::Stripe, &line, None, now), Step::Send);
        let recent = sending("2024-12-03T11:00:00Z");
        assert_eq!(step(Target::Stripe, &line, Some(&recent), now), Step::Send);
        let old = sending("2024-12-02T12:00:00Z");
        assert_eq!(
            step(Target::Stripe, &line, Some(&old), now),
            Step::Unconfirmed {
                since: old.first_sent_at
            }
        );
        let resized = record(PushState::Sending, "11", "2024-12-03T11:00:00Z");
        assert_eq!(
            step(Target::Lago, &line, Some(&resized), now),
            Step::Changed { sent: "11".into() }
        );
        assert_eq!(step(Target::Lago, &line, Some(&old), now), Step::Send);
        let sent = record(PushState::Sent, "12", "2024-12-01T00:00:00Z");
        assert_eq!(
            step(Target::Stripe, &line, Some(&sent), now),
            Step::AlreadySent
        );
        let other = record(PushState::Sent, "11", "2024-12-01T00:00:00Z");
        assert_eq!(
            step(Target::Stripe, &line, Some(&other), now),
            Step::Changed { sent: "11".into() }
        );
        let mut nobody = line.clone();
        nobody.customer_id = UNASSIGNED.into();
        assert_eq!(step(Target::Stripe, &nobody, None, now), Step::NoCustomer);
    }

    #[test]
    fn stripe_gets_whole_values_under_the_line_id_and_a_meter_per_zone() {
        let stamp = at("2024-11-30T23:59:59Z");
        let stripe = request(Target::Stripe, "kore", &line("12.0"), stamp).unwrap();
        let Body::Form(form) = stripe.body else {
            panic!("Stripe takes a form")
        };
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field("identifier"), Some("il_0123"));
        assert_eq!(field("payload[value]"), Some("12"));
        assert_eq!(field("payload[stripe_customer_id]"), Some("cus_1"));
        assert_eq!(field("event_name"), Some("kore_data_us_home"));
        assert_eq!(field("timestamp"), Some("1733011199"));
        let half = request(Target::Stripe, "kore", &line("1.5"), stamp);
        assert!(matches!(half, Err(PushError::NotWhole { .. })));
        let lago = request(Target::Lago, "kore", &line("1.5"), stamp).unwrap();
        let Body::Json(event) = lago.body else {
            panic!("Lago takes JSON")
        };
        assert_eq!(event["event"]["transaction_id"], "il_0123");
    }

    #[test]
    fn a_known_identifier_reads_as_delivered_and_only_then() {
        let body = r#"{"error": {"message": "An event already exists with identifier il_1."}}"#;
        assert_eq!(
            answer(Target::Stripe, 400, Some("false"), body),
            Answer::AlreadyDelivered
        );
        assert_eq!(
            answer(Target::Stripe, 400, None, "timestamp"),
            Answer::Refused
        );
        assert_eq!(answer(Target::Lago, 200, None, "{}"), Answer::Accepted);
        assert_eq!(answer(Target::Stripe, 503, None, ""), Answer::Retry);
    }
}
