//! Closed periods in the table: the registry every function reads (through a cache at most
//! `closed_periods_ttl` old), the snapshot `kore-usage close` stores, the adjustments late
//! events write, and the check that they still add up. The rules are
//! `kore_ingest_core::closes`; this is where they meet the table.
//!
//! `close` registers the period, waits until every function has seen it, then stores the
//! snapshot: each rollup's usage minus its late counters, read from one item at once, so it
//! holds exactly what was committed before the functions saw the close. On a day a
//! customer changes, the rollup's hours are read too, and its late usage placed in them
//! by the adjustments.

use std::sync::Arc;

use chrono::Utc;
use kore_ingest_core::closes::{
    Adjustment, Billing, Close, CloseError, CloseState, RollupTotals, SnapshotLine, canonical_text,
    close_id, earliest_close, sha256_hex, snapshot_lines, verified_lines, verify,
};
use kore_ingest_core::customers::Customers;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{TimeRange, timestamp, z_time};
use kore_ingest_core::zones::Zones;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::cache::TtlCache;
use super::error::build_error;
use super::items::close::{
    adjustment_of, close_of, closed_day_key, closed_update, lock_key, lock_update, lock_version,
    mark_update, registry_item, registry_key, snapshot_part_item, snapshot_part_text,
};
use super::items::rollup::CLOSE_READ;
use super::keys;
use super::read::rollups::Rollups;
use super::table::{Query, Sent, Table, TransactionRetries};

/// A snapshot part holds at most this much canonical text before deflating (items hold
/// 400 KB).
pub(super) const PART_TEXT_BYTES: usize = 300_000;

/// The closed periods of one ledger table.
#[derive(Debug, Clone)]
pub struct Closes {
    table: Table,
    cache: Arc<TtlCache<Vec<Close>>>,
}

impl Closes {
    pub fn new(table: Table) -> Self {
        Closes {
            table,
            cache: Arc::default(),
        }
    }

    /// Every close, read consistently.
    pub async fn all(&self) -> Result<Vec<Close>, LedgerError> {
        let query = Query::partition(keys::CLOSES_PK.to_owned()).consistent(true);
        self.table
            .query(query)
            .await?
            .iter()
            .map(close_of)
            .collect()
    }

    /// The closes read afresh, and the cache replaced with them: after a commit found a day
    /// closed that the cached copy did not show.
    pub async fn refresh(&self) -> Result<Arc<Vec<Close>>, LedgerError> {
        self.cache.refresh(self.all()).await
    }

    /// The closes, from the per-process cache while it is younger than
    /// `closed_periods_ttl`: how the functions learn of a close without a read per batch.
    pub async fn cached(&self) -> Result<Arc<Vec<Close>>, LedgerError> {
        let ttl = self.table.config().closed_periods_ttl;
        self.cache.get(ttl, self.all()).await
    }

    /// Registers a close (or finds the one being settled for the same period, to resume it),
    /// then marks its days, so that from then on every commit into them decides for itself
    /// that it is late (`keys::closed_day_pk`). Registrations take the lock in the same
    /// transaction as the registry entry: two at once cannot both pass the overlap check.
    pub async fn register(
        &self,
        account_sid: Option<&str>,
        period: TimeRange,
    ) -> Result<Close, CloseError> {
        // A lost race (another registration was stored) or a passing refusal: look again
        // after the transactions' back-off.
        let mut retries = TransactionRetries::default();
        loop {
            if let Some(close) = self.try_register(account_sid, period).await? {
                self.mark_days(&close).await?;
                return Ok(close);
            }
            if !retries.wait().await {
                return Err(CloseError::Ledger(LedgerError::Retryable {
                    operation: "TransactWriteItems",
                    code: None,
                    message: "other closes kept being registered at the same time".into(),
                }));
            }
        }
    }

    /// One registration: the close, or `None` when another registration took the lock first.
    async fn try_register(
        &self,
        account_sid: Option<&str>,
        period: TimeRange,
    ) -> Result<Option<Close>, CloseError> {
        let earliest = earliest_close(&period);
        if Utc::now() < earliest {
            return Err(CloseError::TooRecent {
                end: z_time(period.end()),
                earliest: z_time(earliest),
            });
        }
        let id = close_id(account_sid, period);
        let already = |closed_at: String| CloseError::AlreadyClosed {
            start: z_time(period.start()),
            end: z_time(period.end()),
            closed_at,
        };
        let seen = lock_version(self.table.get(lock_key()).await?.as_ref());
        for close in self.all().await? {
            if close.id() == id {
                return match close.state {
                    CloseState::Settling => Ok(Some(close)),
                    CloseState::Closed => Err(already(close.closed_at)),
                };
            }
            if close.overlaps(account_sid, &period) {
                return Err(CloseError::Overlaps {
                    start: z_time(close.period.start()),
                    end: z_time(close.period.end()),
                    account: close.whom().to_owned(),
                });
            }
        }
        let close = Close {
            account_sid: account_sid.map(str::to_owned),
            period,
            closed_at: timestamp(Utc::now()),
            state: CloseState::Settling,
            snapshot_sha256: None,
            snapshot_at: None,
            lines: 0,
            parts: 0,
        };
        let (update, condition, values) = lock_update(seen);
        let build = || -> Result<Vec<TransactWriteItem>, aws_sdk_dynamodb::error::BuildError> {
            let put = Put::builder()
                .table_name(self.table.name())
                .set_item(Some(registry_item(&close)))
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            let lock = Update::builder()
                .table_name(self.table.name())
                .set_key(Some(lock_key()))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .build()?;
            Ok(vec![
                TransactWriteItem::builder().put(put).build(),
                TransactWriteItem::builder().update(lock).build(),
            ])
        };
        let actions = build().map_err(build_error)?;
        match self.table.transact(actions).await {
            Sent::Committed => Ok(Some(close)),
            // The lock moved (another registration) or the same close was registered by
            // another run: either way, read again.
            Sent::Cancelled(_) => Ok(None),
            Sent::Failed(error) => Err(error.into()),
        }
    }

    /// Adds a close to the markers of its days (idempotent: a resumed close marks again).
    async fn mark_days(&self, close: &Close) -> Result<(), LedgerError> {
        let (expression, values) = mark_update(close);
        for day in close.period.days() {
            self.table
                .update(closed_day_key(day), expression, &[], values.clone())
                .await?;
        }
        Ok(())
    }

    /// The day totals and late counters of the rollups of a close's days, with their hours
    /// on the days `hourly` says.
    async fn rollup_totals(
        &self,
        close: &Close,
        hourly: impl Fn(chrono::NaiveDate) -> bool,
    ) -> Result<Vec<RollupTotals>, LedgerError> {
        let (by_hour, whole): (Vec<_>, Vec<_>) = close
            .period
            .days()
            .into_iter()
            .partition(|day| hourly(*day));
        let rollups = Rollups::new(self.table.clone());
        let mut totals = Vec::new();
        for (days, projection) in [(whole, Some(CLOSE_READ)), (by_hour, None)] {
            if days.is_empty() {
                continue;
            }
            let read = rollups.of_days(&days, None, true, projection).await?;
            totals.extend(read.iter().map(|r| r.totals()));
        }
        Ok(totals)
    }

    /// Stores the snapshot of a settling close, billed to the customers and zones given (as
    /// they are now), and marks it closed. Returns the close.
    pub async fn store_snapshot(
        &self,
        close: &Close,
        customers: Option<&Customers>,
        zones: Option<&Zones>,
    ) -> Result<Close, CloseError> {
        let mut billing = Billing {
            customers,
            zones,
            adjustments: &[],
        };
        let rollups = self.rollup_totals(close, |day| billing.hourly(day)).await?;
        let adjustments = self.adjustments(close).await?;
        billing.adjustments = &adjustments;
        let lines = snapshot_lines(close, &rollups, &billing)?;
        let text = canonical_text(&lines);
        let sha256 = sha256_hex(&text);
        let id = close.id();
        let mut parts = 0u64;
        for (index, chunk) in split_lines(&text, PART_TEXT_BYTES).into_iter().enumerate() {
            self.table
                .put(snapshot_part_item(&id, index, chunk))
                .await?;
            parts += 1;
        }
        let snapshot_at = timestamp(Utc::now());
        let (expression, values) = closed_update(&sha256, &snapshot_at, lines.len() as u64, parts);
        let names = [("#state", "state"), ("#lines", "lines")];
        let stored = self
            .table
            .update_if(
                registry_key(&id),
                &expression,
                "#state = :settling",
                &names,
                values,
            )
            .await?;
        if !stored {
            return Err(CloseError::Ledger(LedgerError::Rejected {
                operation: "UpdateItem",
                code: Some("ConditionalCheckFailedException".into()),
                message: format!("the close {id} is no longer settling: another close stored it"),
            }));
        }
        Ok(Close {
            state: CloseState::Closed,
            snapshot_sha256: Some(sha256),
            snapshot_at: Some(snapshot_at),
            lines: lines.len() as u64,
            parts,
            ..close.clone()
        })
    }

    /// The close of exactly this period (for the account, else for every account).
    pub async fn find(
        &self,
        account_sid: Option<&str>,
        period: TimeRange,
    ) -> Result<Option<Close>, LedgerError> {
        let closes = self.all().await?;
        let exact = |account: Option<&str>| {
            closes
                .iter()
                .find(|c| c.account_sid.as_deref() == account && c.period == period)
                .cloned()
        };
        Ok(exact(account_sid).or_else(|| account_sid.and(exact(None))))
    }

    /// A stored snapshot's canonical text, as stored (parts in order).
    pub async fn snapshot_text(&self, close: &Close) -> Result<String, LedgerError> {
        let id = close.id();
        let query = Query::prefix(keys::close_pk(&id), keys::PART_SK_PREFIX).consistent(true);
        let mut text = String::new();
        for item in self.table.query(query).await? {
            text.push_str(&snapshot_part_text(&id, &item)?);
        }
        Ok(text)
    }

    /// A stored snapshot's lines, once it is checked against its SHA-256.
    pub async fn snapshot(&self, close: &Close) -> Result<Vec<SnapshotLine>, CloseError> {
        verified_lines(close, &self.snapshot_text(close).await?)
    }

    /// The adjustments recorded against a close.
    pub async fn adjustments(&self, close: &Close) -> Result<Vec<Adjustment>, LedgerError> {
        let id = close.id();
        let query = Query::prefix(keys::close_pk(&id), keys::ADJUSTMENT_SK_PREFIX).consistent(true);
        let items = self.table.query(query).await?;
        items.iter().map(|item| adjustment_of(&id, item)).collect()
    }

    /// Checks a close: its snapshot's hash, and snapshot + adjustments = the live rollups.
    /// Every discrepancy, each as one sentence.
    pub async fn verify(&self, close: &Close) -> Result<Vec<String>, CloseError> {
        let text = self.snapshot_text(close).await?;
        let rollups = self.rollup_totals(close, |_| false).await?;
        let adjustments = self.adjustments(close).await?;
        verify(close, &text, &rollups, &adjustments)
    }
}

/// The text cut after whole lines, each piece at most `limit` bytes (a longer line alone).
pub(super) fn split_lines(text: &str, limit: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (at, _) in text.match_indices('\n') {
        let line_end = at + 1;
        if line_end - start > limit && end > start {
            pieces.push(&text[start..end]);
            start = end;
        }
        end = line_end;
    }
    if end > start {
        pieces.push(&text[start..end]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_parts_end_on_whole_lines() {
        let text = "aaaa\nbbbb\ncccc\n";
        assert_eq!(split_lines(text, 10), ["aaaa\nbbbb\n", "cccc\n"]);
        assert_eq!(split_lines(text, 3), ["aaaa\n", "bbbb\n", "cccc\n"]);
        assert_eq!(split_lines(text, 100), [text]);
        assert!(split_lines("", 10).is_empty());
    }
}
