//! Alerts in the ledger: the rules in force, the alerts (each written once, by its key),
//! the running sums of `per: total` rules with what was applied of each stream batch, and
//! the SIMs each silence rule has seen.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use kore_ingest_core::alerts::{Alert, Rules, Scope, SumKey};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{TimeRange, timestamp};

use super::error::build_error;
use super::items::attrs::{Item, key, n, number_attr, pk_of, s, string_attr};
use super::keys;
use super::read::rollups::Rollups;
use super::table::{CancelCode, PutIfAbsent, Query, Sent, Table, Unprocessed};

const RULES: &str = "rules";
const APPLIED_AT: &str = "applied_at";
const RECORD: &str = "record";
// Attribute names clear of DynamoDB's reserved words (`total`, `at` are reserved).
const TOTAL: &str = "sum_bytes";
const THROUGH: &str = "applied_through";
const EXPIRES_AT: &str = "expires_at";
const SEEN_AT: &str = "last_arrival";
const SEEN_EVENT: &str = "last_event";
const RAISED_FOR: &str = "raised_for";

/// What a `per: sim` sum reads of a SIM's rollups: the booking, the day's totals, the
/// version.
const SIM_DAY_READ: &str = "pk, sk, v, du, dd, dt, dn";

/// A checkpoint's attributes for one day: its total and the version it was read at.
fn day_attrs(day: NaiveDate) -> (String, String) {
    let day = day.format("%d");
    (format!("t{day}"), format!("v{day}"))
}

/// How long what was applied of a stream batch is kept: a stream keeps records 24 hours,
/// so no retry of a batch comes later than that.
const BATCH_MARK_SECONDS: i64 = 2 * 24 * 3600;

/// A SIM a silence rule has seen: its last arrival and event, and the arrival whose
/// silence was already raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSim {
    pub sim_sid: String,
    pub last_arrival: DateTime<Utc>,
    pub last_event: Option<String>,
    pub raised_for: Option<String>,
}

/// The alerts of one ledger table.
#[derive(Debug, Clone)]
pub struct Alerts {
    table: Table,
}

impl Alerts {
    pub fn new(table: Table) -> Self {
        Alerts { table }
    }

    /// The rules in force (none until a file is applied).
    pub async fn rules(&self) -> Result<Rules, LedgerError> {
        let Some(item) = self
            .table
            .get(key(keys::ALERT_RULES_PK, keys::SINGLE))
            .await?
        else {
            return Ok(Rules::default());
        };
        let text = string_attr(&item, RULES).unwrap_or("{\"rules\": []}");
        Rules::parse(text).map_err(|e| LedgerError::CorruptItem {
            pk: keys::ALERT_RULES_PK.into(),
            reason: e.to_string(),
        })
    }

    /// Replaces the rules in force.
    pub async fn apply(&self, rules: &Rules) -> Result<(), LedgerError> {
        let mut item = key(keys::ALERT_RULES_PK, keys::SINGLE);
        item.insert(RULES.into(), s(rules.to_json().to_string()));
        item.insert(APPLIED_AT.into(), s(timestamp(Utc::now())));
        self.table.put(item).await
    }

    /// The sequence number through which the batch starting at `first_sequence` was
    /// applied to the sums, if any of it was.
    pub async fn applied_through(
        &self,
        first_sequence: &str,
    ) -> Result<Option<String>, LedgerError> {
        let item = self
            .table
            .get(key(keys::alert_batch_pk(first_sequence), keys::SINGLE))
            .await?;
        Ok(item.and_then(|i| string_attr(&i, THROUGH).map(str::to_owned)))
    }

    /// Adds `sums` and records that the batch starting at `first_sequence` is applied
    /// through `through`, in one transaction that only commits while the batch's record
    /// still says `previous`: a retried batch never adds twice.
    pub async fn add_to_sums(
        &self,
        first_sequence: &str,
        previous: Option<&str>,
        through: &str,
        sums: &BTreeMap<SumKey, u64>,
    ) -> Result<(), LedgerError> {
        let expires = Utc::now().timestamp() + BATCH_MARK_SECONDS;
        let mut values = Item::from([
            (":through".to_owned(), s(through)),
            (
                ":expires".to_owned(),
                n(u64::try_from(expires).unwrap_or(0)),
            ),
        ]);
        let condition = match previous {
            None => "attribute_not_exists(pk)",
            Some(previous) => {
                values.insert(":previous".into(), s(previous));
                "#through = :previous"
            }
        };
        let mark = Update::builder()
            .table_name(self.table.name())
            .set_key(Some(key(
                keys::alert_batch_pk(first_sequence),
                keys::SINGLE,
            )))
            .update_expression(format!("SET #through = :through, {EXPIRES_AT} = :expires"))
            .condition_expression(condition)
            .expression_attribute_names("#through", THROUGH)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(build_error)?;
        let mut actions = vec![TransactWriteItem::builder().update(mark).build()];
        for (sum, bytes) in sums {
            let update = Update::builder()
                .table_name(self.table.name())
                .set_key(Some(sum_key(sum)))
                .update_expression(format!("ADD {TOTAL} :bytes"))
                .expression_attribute_values(":bytes", n(*bytes))
                .build()
                .map_err(build_error)?;
            actions.push(TransactWriteItem::builder().update(update).build());
        }
        match self.table.transact(actions.clone()).await {
            Sent::Committed => Ok(()),
            Sent::Failed(error) => Err(error),
            Sent::Cancelled(reasons) => {
                // A mark that changed under us, or throttling: the batch is retried whole.
                Err(CancelCode::error(&CancelCode::all(&reasons, actions.len())))
            }
        }
    }

    /// The running sums of `sums` (absent ones are 0).
    pub async fn sums(
        &self,
        sums: impl IntoIterator<Item = &SumKey>,
    ) -> Result<BTreeMap<SumKey, u64>, LedgerError> {
        let by_pk: BTreeMap<String, SumKey> = sums
            .into_iter()
            .map(|k| {
                (
                    keys::alert_sum_pk(&k.rule_id, &k.subject, k.first_day),
                    k.clone(),
                )
            })
            .collect();
        let wanted = by_pk
            .keys()
            .map(|pk| key(pk.clone(), keys::SINGLE))
            .collect();
        let found = self
            .table
            .batch_get(wanted, None, Unprocessed::AskAgain)
            .await?;
        let mut result: BTreeMap<SumKey, u64> = by_pk.values().map(|k| (k.clone(), 0)).collect();
        for item in found {
            if let Some(sum) = by_pk.get(pk_of(&item)) {
                result.insert(sum.clone(), number_attr(&item, TOTAL).unwrap_or(0));
            }
        }
        Ok(result)
    }

    /// A `per: sim` sum as the SIM's rollups hold it now: its usage booked to `scope` on
    /// the days of the period up to `last`.
    ///
    /// Every day is read consistently, or taken from the sum's checkpoint: the days before
    /// `today` as they were last read, each with the version of the SIM's rollups that day
    /// (the sum of their `v`, which every write bumps). A day that the batch booked to
    /// (`fresh`) is always read again, so a late event is counted; a checkpoint day is only
    /// ever replaced by a read of a later version. So a month costs one read of the
    /// checkpoint and of the days the batch touched, not one read per day.
    pub async fn sim_sum(
        &self,
        sum: &SumKey,
        scope: &Scope,
        last: NaiveDate,
        fresh: &BTreeSet<NaiveDate>,
        today: NaiveDate,
    ) -> Result<u64, LedgerError> {
        let days = kore_ingest_core::time::day_list(sum.first_day, last);
        let checkpoint_key = key(
            keys::alert_sim_sum_pk(&sum.rule_id, &sum.subject, sum.first_day),
            keys::SINGLE,
        );
        // Day: (bytes, version) as the checkpoint holds it.
        let mut known: BTreeMap<NaiveDate, (u64, u64)> = BTreeMap::new();
        if days.iter().any(|d| !fresh.contains(d))
            && let Some(item) = self.table.get(checkpoint_key.clone()).await?
        {
            for day in &days {
                let (total, version) = day_attrs(*day);
                if let (Some(bytes), Some(version)) =
                    (number_attr(&item, &total), number_attr(&item, &version))
                {
                    known.insert(*day, (bytes, version));
                }
            }
        }
        let to_read: Vec<NaiveDate> = days
            .iter()
            .copied()
            .filter(|d| fresh.contains(d) || !known.contains_key(d))
            .collect();
        let mut read: BTreeMap<NaiveDate, (u64, u64)> =
            to_read.iter().map(|d| (*d, (0, 0))).collect();
        if !to_read.is_empty() {
            let rollups = Rollups::new(self.table.clone())
                .of_days(&to_read, Some(&sum.subject), true, Some(SIM_DAY_READ))
                .await?;
            for rollup in rollups {
                let day = read.entry(rollup.day).or_default();
                day.1 = day.1.saturating_add(rollup.version.unwrap_or(0));
                if scope.covers(&rollup.booking) {
                    let bytes = rollup.day_total.map(|d| d.usage.total).unwrap_or(0);
                    day.0 = day.0.saturating_add(bytes);
                }
            }
        }
        let total = days
            .iter()
            .map(|d| read.get(d).or(known.get(d)).map(|r| r.0).unwrap_or(0))
            .fold(0u64, u64::saturating_add);
        // Keep the days before today that were read at a version the checkpoint lacks (a day
        // without usage too, at version 0: it is not read again until an event is booked
        // on it, and then that event's batch reads it).
        let keep: Vec<(NaiveDate, (u64, u64))> = read
            .into_iter()
            .filter(|(d, (_, version))| {
                *d < today && known.get(d).is_none_or(|(_, held)| held < version)
            })
            .collect();
        if !keep.is_empty() {
            let mut sets = Vec::new();
            let mut conditions = Vec::new();
            let mut values = Item::new();
            for (day, (bytes, version)) in keep {
                let (t, v) = day_attrs(day);
                sets.push(format!("{t} = :{t}, {v} = :{v}"));
                conditions.push(format!("(attribute_not_exists({v}) OR {v} < :{v})"));
                values.insert(format!(":{t}"), n(bytes));
                values.insert(format!(":{v}"), n(version));
            }
            // A checkpoint written meanwhile from a later version stays: this one is only
            // a cache of reads, and the next evaluation reads what it lacks.
            self.table
                .update_if(
                    checkpoint_key,
                    &format!("SET {}", sets.join(", ")),
                    &conditions.join(" AND "),
                    &[],
                    values,
                )
                .await?;
        }
        Ok(total)
    }

    /// Which of `alerts` are stored already (by key).
    pub async fn stored(&self, alerts: &[Alert]) -> Result<BTreeSet<String>, LedgerError> {
        if alerts.is_empty() {
            return Ok(BTreeSet::new());
        }
        let wanted = alerts.iter().map(alert_key).collect();
        let found = self
            .table
            .batch_get(wanted, Some("pk, sk"), Unprocessed::AskAgain)
            .await?;
        Ok(found
            .iter()
            .filter_map(|i| string_attr(i, "sk").map(str::to_owned))
            .collect())
    }

    /// The alert stored under `alert_key` (`Alert::key`), if any.
    pub async fn by_key(&self, alert_key: &str) -> Result<Option<Alert>, LedgerError> {
        let item = self
            .table
            .get(key(keys::alerts_pk(alert_key), alert_key))
            .await?;
        item.as_ref().map(alert_of).transpose()
    }

    /// Stores an alert once: `true` when this call stored it.
    pub async fn raise(&self, alert: &Alert) -> Result<bool, LedgerError> {
        let mut item = alert_key(alert);
        item.insert(RECORD.into(), s(alert.to_json().to_string()));
        Ok(matches!(
            self.table.put_if_absent(item).await?,
            PutIfAbsent::Created
        ))
    }

    /// The alerts whose period starts in `range`, of one rule or all, by period start.
    pub async fn list(
        &self,
        range: &TimeRange,
        rule_id: Option<&str>,
    ) -> Result<Vec<Alert>, LedgerError> {
        let low = timestamp(range.start());
        let high = timestamp(range.end());
        let mut months = BTreeSet::new();
        for day in range.days() {
            months.insert(keys::alerts_pk(&kore_ingest_core::time::day_text(day)));
        }
        let reads = months.into_iter().map(|pk| {
            self.table
                .query(Query::between(pk, low.clone(), high.clone()).consistent(true))
        });
        let mut results = futures::stream::iter(reads.collect::<Vec<_>>()).buffered(4);
        let mut alerts = Vec::new();
        while let Some(items) = results.next().await {
            for item in items? {
                let alert = alert_of(&item)?;
                if alert.period_start < high && rule_id.is_none_or(|r| r == alert.rule_id) {
                    alerts.push(alert);
                }
            }
        }
        alerts.sort_by_key(Alert::key);
        Ok(alerts)
    }

    /// A silence rule saw `sim_sid` arrive at `at` with `event`: kept unless a later arrival
    /// is kept already.
    pub async fn seen(
        &self,
        rule_id: &str,
        sim_sid: &str,
        at: DateTime<Utc>,
        event: &str,
    ) -> Result<(), LedgerError> {
        self.table
            .update_if(
                key(keys::alert_seen_pk(rule_id, sim_sid), sim_sid),
                &format!("SET {SEEN_AT} = :at, {SEEN_EVENT} = :event"),
                &format!("attribute_not_exists({SEEN_AT}) OR {SEEN_AT} < :at"),
                &[],
                Item::from([
                    (":at".to_owned(), s(timestamp(at))),
                    (":event".to_owned(), s(event)),
                ]),
            )
            .await
            .map(|_| ())
    }

    /// Every SIM a silence rule has seen: one query per shard, never a scan.
    pub async fn seen_sims(&self, rule_id: &str) -> Result<Vec<SeenSim>, LedgerError> {
        let reads = (0..keys::SHARDS).map(|shard| {
            self.table
                .query(Query::partition(keys::alert_seen_shard_pk(rule_id, shard)))
        });
        let mut results = futures::stream::iter(reads.collect::<Vec<_>>())
            .buffer_unordered(self.table.concurrency());
        let mut seen = Vec::new();
        while let Some(items) = results.next().await {
            for item in items? {
                let at = string_attr(&item, SEEN_AT)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .ok_or_else(|| LedgerError::CorruptItem {
                        pk: pk_of(&item).to_owned(),
                        reason: format!("`{SEEN_AT}` is not a time"),
                    })?;
                seen.push(SeenSim {
                    sim_sid: string_attr(&item, "sk").unwrap_or_default().to_owned(),
                    last_arrival: at.to_utc(),
                    last_event: string_attr(&item, SEEN_EVENT).map(str::to_owned),
                    raised_for: string_attr(&item, RAISED_FOR).map(str::to_owned),
                });
            }
        }
        seen.sort_by(|a, b| a.sim_sid.cmp(&b.sim_sid));
        Ok(seen)
    }

    /// The silence after `last_arrival` was raised: the check passes it by from now on.
    pub async fn silence_raised(
        &self,
        rule_id: &str,
        sim_sid: &str,
        last_arrival: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.table
            .update_if(
                key(keys::alert_seen_pk(rule_id, sim_sid), sim_sid),
                &format!("SET {RAISED_FOR} = :at"),
                &format!("{SEEN_AT} = :at"),
                &[],
                Item::from([(":at".to_owned(), s(timestamp(last_arrival)))]),
            )
            .await
            .map(|_| ())
    }
}

fn sum_key(sum: &SumKey) -> Item {
    key(
        keys::alert_sum_pk(&sum.rule_id, &sum.subject, sum.first_day),
        keys::SINGLE,
    )
}

fn alert_key(alert: &Alert) -> Item {
    key(keys::alerts_pk(&alert.period_start), alert.key())
}

/// The alert an alert item holds.
pub(crate) fn alert_of(item: &Item) -> Result<Alert, LedgerError> {
    string_attr(item, RECORD)
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| LedgerError::CorruptItem {
            pk: pk_of(item).to_owned(),
            reason: format!("`{RECORD}` is not an alert record"),
        })
}
