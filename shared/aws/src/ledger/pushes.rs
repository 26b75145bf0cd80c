//! What `kore-usage push` sent of a period's invoice lines and what the billing system
//! answered: one item per target, period and line, marked `sending` before its request and
//! answered after it. The rules of when a line is sent are `kore_ingest_core::push`.

use chrono::{DateTime, Utc};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::push::{PushRecord, PushState, Target};
use kore_ingest_core::time::{TimeRange, timestamp, z_time};

use super::items::attrs::{Item, key, n, number_attr, s, string_attr};
use super::keys;
use super::table::{Query, Table};

/// An answer is kept up to this many characters: enough to read Stripe's error.
const ANSWER_CHARS: usize = 1000;

/// The pushes of one ledger table.
#[derive(Debug, Clone)]
pub struct Pushes {
    table: Table,
}

impl Pushes {
    pub fn new(table: Table) -> Self {
        Pushes { table }
    }

    fn pk(target: Target, period: &TimeRange) -> String {
        keys::push_pk(
            target.name(),
            &z_time(period.start()),
            &z_time(period.end()),
        )
    }

    /// What was recorded of the period's lines for `target`.
    pub async fn of_period(
        &self,
        target: Target,
        period: &TimeRange,
    ) -> Result<Vec<PushRecord>, LedgerError> {
        let pk = Self::pk(target, period);
        let query = Query::partition(pk.clone()).consistent(true);
        self.table
            .query(query)
            .await?
            .iter()
            .map(|item| record_of(&pk, item))
            .collect()
    }

    /// Marks a line as being sent with `quantity` now, before its request.
    pub async fn sending(
        &self,
        target: Target,
        period: &TimeRange,
        line_id: &str,
        customer_id: &str,
        quantity: &str,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut values = Item::new();
        values.insert(":state".into(), s(PushState::Sending.name()));
        values.insert(":q".into(), s(quantity));
        values.insert(":c".into(), s(customer_id));
        values.insert(":at".into(), s(timestamp(at)));
        values.insert(":one".into(), n(1));
        self.table
            .update(
                key(Self::pk(target, period), line_id),
                "SET #state = :state, quantity = :q, customer_id = :c, sent_at = :at, \
                 first_sent_at = if_not_exists(first_sent_at, :at) \
                 REMOVE #status, answer ADD attempts :one",
                &[("#state", "state"), ("#status", "status")],
                values,
            )
            .await
    }

    /// Records the system's answer to a line's request; `clean`: every request of this
    /// attempt was answered, none could have been recorded by the system unseen.
    #[allow(clippy::too_many_arguments)]
    pub async fn answered(
        &self,
        target: Target,
        period: &TimeRange,
        line_id: &str,
        state: PushState,
        status: u16,
        answer: &str,
        clean: bool,
    ) -> Result<(), LedgerError> {
        let mut values = Item::new();
        values.insert(":state".into(), s(state.name()));
        values.insert(":status".into(), n(u64::from(status)));
        let answer: String = answer.chars().take(ANSWER_CHARS).collect();
        values.insert(":answer".into(), s(answer));
        values.insert(":at".into(), s(timestamp(Utc::now())));
        // A line refused with nothing unanswered before reached no meter: the next attempt
        // starts Stripe's memory afresh.
        let expression = match state {
            PushState::Refused if clean => {
                "SET #state = :state, #status = :status, answer = :answer, answered_at = :at \
                 REMOVE first_sent_at"
            }
            _ => "SET #state = :state, #status = :status, answer = :answer, answered_at = :at",
        };
        self.table
            .update(
                key(Self::pk(target, period), line_id),
                expression,
                &[("#state", "state"), ("#status", "status")],
                values,
            )
            .await
    }
}

fn record_of(pk: &str, item: &Item) -> Result<PushRecord, LedgerError> {
    let corrupt = |reason: &str| LedgerError::CorruptItem {
        pk: pk.to_owned(),
        reason: reason.to_owned(),
    };
    let text = |name: &str| string_attr(item, name).map(str::to_owned);
    let state = string_attr(item, "state")
        .and_then(PushState::parse)
        .ok_or_else(|| corrupt("a push without a known state"))?;
    let time = |name: &str| {
        string_attr(item, name)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    // A refused line has no first attempt on record: its latest stands in.
    let first_sent_at = time("first_sent_at")
        .or_else(|| time("sent_at"))
        .ok_or_else(|| corrupt("a push without its time"))?;
    Ok(PushRecord {
        line_id: text("sk").ok_or_else(|| corrupt("a push without its line"))?,
        state,
        customer_id: text("customer_id").unwrap_or_default(),
        quantity: text("quantity").unwrap_or_default(),
        first_sent_at,
        status: number_attr(item, "status").and_then(|s| u16::try_from(s).ok()),
        answer: text("answer"),
    })
}
