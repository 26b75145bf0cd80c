//! Alerts in the ledger: the rules in force, the alerts (each written once, by its key),
//! the running sums of `per: total` rules with what was applied of each stream batch, and
//! the SIMs each silence rule has seen.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use kore_ingest_core::alerts::{Alert, Rules, RulesError, Scope, SumKey};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{TimeRange, timestamp};

use super::error::build_error;
use super::items::attrs::{Item, key, n, number_attr, pk_of, s, string_attr};
use super::keys;
use super::read::rollups::Rollups;
use super::table::{CancelCode, PutIfAbsent, Query, Sent, Table, TransactionRetries, Unprocessed};

const RULES: &str = "rules";
const APPLIED_AT: &str = "applied_at";
/// Since when each rule in force has been, without a break (a silence counts from then).
const IN_FORCE_SINCE: &str = "in_force_since";
/// The definition of every rule id ever applied (`Rule::definition`).
const DEFINITIONS: &str = "definitions";
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

/// The rules in force as applied: since when each has been in force, and the definition of
/// every rule id ever applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedRules {
    pub rules: Rules,
    pub since: BTreeMap<String, DateTime<Utc>>,
    pub definitions: BTreeMap<String, String>,
}

/// Why a rules file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Refused(RulesError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

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
        Ok(self.applied().await?.rules)
    }

    /// The rules in force, since when each has been, and the definition of every rule id
    /// ever applied.
    pub async fn applied(&self) -> Result<AppliedRules, LedgerError> {
        let Some(item) = self
            .table
            .get(key(keys::ALERT_RULES_PK, keys::SINGLE))
            .await?
        else {
            return Ok(AppliedRules::default());
        };
        let corrupt = |reason: String| LedgerError::CorruptItem {
            pk: keys::ALERT_RULES_PK.into(),
            reason,
        };
        let text = string_attr(&item, RULES).unwrap_or("{\"rules\": []}");
        let rules = Rules::parse(text).map_err(|e| corrupt(e.to_string()))?;
        let map = |name: &str| -> Result<BTreeMap<String, String>, LedgerError> {
            string_attr(&item, name)
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(format!("`{name}` is not a map: {e}")))
                .map(Option::unwrap_or_default)
        };
        let since = map(IN_FORCE_SINCE)?
            .into_iter()
            .filter_map(|(id, at)| Some((id, DateTime::parse_from_rfc3339(&at).ok()?.to_utc())))
            .collect();
        Ok(AppliedRules {
            rules,
            since,
            definitions: map(DEFINITIONS)?,
        })
    }

    /// Replaces the rules in force, unless one of them redefines a rule id applied before
    /// (`Rules::check_definitions`): then nothing changes.
    pub async fn apply(&self, rules: &Rules) -> Result<(), ApplyError> {
        let before = self.applied().await?;
        rules
            .check_definitions(&before.definitions)
            .map_err(ApplyError::Refused)?;
        let now = Utc::now();
        let mut definitions = before.definitions;
        let mut since = BTreeMap::new();
        for rule in rules.as_slice() {
            definitions.insert(rule.id.clone(), rule.definition());
            let in_force = before.since.get(&rule.id).copied().unwrap_or(now);
            since.insert(rule.id.clone(), timestamp(in_force));
        }
        let text = |map: &BTreeMap<String, String>| serde_json::to_string(map).unwrap_or_default();
        let mut item = key(keys::ALERT_RULES_PK, keys::SINGLE);
        item.insert(RULES.into(), s(rules.to_json().to_string()));
        item.insert(APPLIED_AT.into(), s(timestamp(now)));
        item.insert(IN_FORCE_SINCE.into(), s(text(&since)));
        item.insert(DEFINITIONS.into(), s(text(&definitions)));
        Ok(self.table.put(item).await?)
    }

    /// The sequence number through which the batch whose first record is `first_record`
    /// (its `eventID`) was applied to the sums, if any of it was.
    pub async fn applied_through(&self, first_record: &str) -> Result<Option<String>, LedgerError> {
        let item = self
            .table
            .get(key(keys::alert_batch_pk(first_record), keys::SINGLE))
            .await?;
        Ok(item.and_then(|i| string_attr(&i, THROUGH).map(str::to_owned)))
    }

    /// Adds `sums` and records that the batch whose first record is `first_record` is applied
    /// through `through`, in one transaction that only commits while the batch's record
    /// still says `previous`: a retried batch never adds twice.
    pub async fn add_to_sums(
        &self,
        first_record: &str,
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
            .set_key(Some(key(keys::alert_batch_pk(first_record), keys::SINGLE)))
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
        // Batches of other shards add to the same sums at the same time: a conflict or
        // throttling is tried again; a mark that changed under us fails the batch.
        let mut retries = TransactionRetries::default();
        loop {
            let reasons = match self.table.transact(actions.clone()).await {
                Sent::Committed => return Ok(()),
                Sent::Failed(error) => return Err(error),
                Sent::Cancelled(reasons) => reasons,
            };
            let error = CancelCode::error(&CancelCode::all(&reasons, actions.len()));
            if !error.is_retryable() || !retries.wait().await {
                return Err(error);
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
    /// A day-long period is one consistent read. A month reads, consistently, the days the
    /// batch booked to (`fresh`) and today, and takes the other days from the sum's
    /// checkpoint: each day before today as it was last read, with the version of the SIM's
    /// rollups that day (the sum of their `v`, which every write bumps), replaced only by a
    /// read of a later version. A batch that booked to a day before today first writes that
    /// day into the checkpoint, then reads the checkpoint: of two evaluations of the same
    /// SIM at once, the later reader therefore sees the other's late day, or the other sees
    /// this one's usage (`docs/DESIGN.md`, alerts). Days the checkpoint lacks are read and
    /// kept in it.
    pub async fn sim_sum(
        &self,
        sum: &SumKey,
        scope: &Scope,
        last: NaiveDate,
        fresh: &BTreeSet<NaiveDate>,
        today: NaiveDate,
    ) -> Result<u64, LedgerError> {
        let days = kore_ingest_core::time::day_list(sum.first_day, last);
        if days.len() == 1 {
            let read = self.read_days(sum, scope, &days).await?;
            return Ok(read.values().map(|d| d.0).fold(0, u64::saturating_add));
        }
        let checkpoint_key = key(
            keys::alert_sim_sum_pk(&sum.rule_id, &sum.subject, sum.first_day),
            keys::SINGLE,
        );
        let late: Vec<NaiveDate> = days
            .iter()
            .copied()
            .filter(|d| fresh.contains(d) && *d < today)
            .collect();
        if !late.is_empty() {
            for (day, read) in self.read_days(sum, scope, &late).await? {
                self.keep(&checkpoint_key, &BTreeMap::from([(day, read)]))
                    .await?;
            }
        }
        // Day: (bytes, version) as the checkpoint holds it.
        let mut known: BTreeMap<NaiveDate, (u64, u64)> = BTreeMap::new();
        if let Some(item) = self.table.get(checkpoint_key.clone()).await? {
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
            .filter(|d| fresh.contains(d) || *d >= today || !known.contains_key(d))
            .collect();
        let read = self.read_days(sum, scope, &to_read).await?;
        let total = days
            .iter()
            .map(|d| read.get(d).or(known.get(d)).map(|r| r.0).unwrap_or(0))
            .fold(0u64, u64::saturating_add);
        // Keep the days before today read at a version the checkpoint lacks (a day without
        // usage too, at version 0: an event booked on it later is a fresh day of its batch).
        let keep: BTreeMap<NaiveDate, (u64, u64)> = read
            .into_iter()
            .filter(|(d, (_, version))| {
                *d < today && known.get(d).is_none_or(|(_, held)| held < version)
            })
            .collect();
        if !keep.is_empty() {
            self.keep(&checkpoint_key, &keep).await?;
        }
        Ok(total)
    }

    /// The SIM's usage booked to `scope` on each of `days`, read consistently, with the
    /// version of its rollups that day.
    async fn read_days(
        &self,
        sum: &SumKey,
        scope: &Scope,
        days: &[NaiveDate],
    ) -> Result<BTreeMap<NaiveDate, (u64, u64)>, LedgerError> {
        let mut read: BTreeMap<NaiveDate, (u64, u64)> = days.iter().map(|d| (*d, (0, 0))).collect();
        if days.is_empty() {
            return Ok(read);
        }
        let rollups = Rollups::new(self.table.clone())
            .of_days(days, Some(&sum.subject), true, Some(SIM_DAY_READ))
            .await?;
        for rollup in rollups {
            let day = read.entry(rollup.day).or_default();
            day.1 = day.1.saturating_add(rollup.version.unwrap_or(0));
            if scope.covers(&rollup.booking) {
                let bytes = rollup.day_total.map(|d| d.usage.total).unwrap_or(0);
                day.0 = day.0.saturating_add(bytes);
            }
        }
        Ok(read)
    }

    /// Writes `days` into a checkpoint, all or none: only where it holds an earlier version
    /// or none (a checkpoint written meanwhile from a later version stays).
    async fn keep(
        &self,
        checkpoint_key: &Item,
        days: &BTreeMap<NaiveDate, (u64, u64)>,
    ) -> Result<(), LedgerError> {
        let mut sets = Vec::new();
        let mut conditions = Vec::new();
        let mut values = Item::new();
        for (day, (bytes, version)) in days {
            let (t, v) = day_attrs(*day);
            sets.push(format!("{t} = :{t}, {v} = :{v}"));
            conditions.push(format!("(attribute_not_exists({v}) OR {v} < :{v})"));
            values.insert(format!(":{t}"), n(*bytes));
            values.insert(format!(":{v}"), n(*version));
        }
        self.table
            .update_if(
                checkpoint_key.clone(),
                &format!("SET {}", sets.join(", ")),
                &conditions.join(" AND "),
                &[],
                values,
            )
            .await
            .map(|_| ())
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

    /// The SIMs of one shard (`0..keys::SHARDS`) that a silence rule has seen: the check
    /// reads them shard by shard, never with a scan.
    pub async fn seen_sims(&self, rule_id: &str, shard: u8) -> Result<Vec<SeenSim>, LedgerError> {
        let items = self
            .table
            .query(Query::partition(keys::alert_seen_shard_pk(rule_id, shard)))
            .await?;
        items
            .iter()
            .map(|item| {
                let at = string_attr(item, SEEN_AT)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .ok_or_else(|| LedgerError::CorruptItem {
                        pk: pk_of(item).to_owned(),
                        reason: format!("`{SEEN_AT}` is not a time"),
                    })?;
                Ok(SeenSim {
                    sim_sid: string_attr(item, "sk").unwrap_or_default().to_owned(),
                    last_arrival: at.to_utc(),
                    last_event: string_attr(item, SEEN_EVENT).map(str::to_owned),
                    raised_for: string_attr(item, RAISED_FOR).map(str::to_owned),
                })
            })
            .collect()
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
