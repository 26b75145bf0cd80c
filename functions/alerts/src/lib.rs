//! The alert function: raises each alert of the rules in force exactly once.
//!
//! Fed by the ledger table's stream (the insert of each event record, which happens once
//! however often and by whichever provider the event was delivered), it takes a batch at
//! a time, after the events are stored, so the ingest path pays nothing:
//!
//! - `usage`, `per: sim`: the SIM's sum is what the ledger's rollups hold; they are read
//!   again after the batch (no write);
//! - `usage`, `per: total`: the function keeps one running sum per rule, subject and period,
//!   added to once per batch in a transaction that also records how far the batch was
//!   applied, so a retried batch never adds twice;
//! - `quality`: one alert per event whose `data_total` is not upload + download;
//! - `silence`: each SIM's last arrival is kept per rule; a scheduled invocation (every
//!   few minutes) raises one alert per silence longer than the rule's minutes.
//!
//! An alert is stored under a key made of its rule, subject, period and threshold (event,
//! for quality), written only if absent: however many times a crossing is seen, one alert.
//! The callback forwarder puts each stored alert on the event bus. Anything that fails
//! fails the whole batch, which Lambda sends again from its first record: every step above
//! is safe to repeat.

use std::collections::BTreeMap;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use kore_ingest_aws::ledger::{Alerts, Item, UsageLedger, inserted_event, is_event_insert, keys};
use kore_ingest_core::alerts::{
    Added, Alert, LastArrival, Observed, Rule, RuleKind, Rules, SumKey, plan, silence_alert,
    usage_alerts,
};
use kore_ingest_core::config::{ConfigError, Env};
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::timestamp;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};
use tracing::{error, info};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "alerts";

/// The most `per: total` sums one transaction adds to: DynamoDB takes 100 actions per
/// transaction, one of which records how far the batch was applied.
const SUMS_PER_TRANSACTION: usize = 99;

/// Where the rules, sums and alerts are. Built once per container.
#[derive(Debug, Clone)]
pub struct Evaluator {
    pub alerts: Alerts,
}

impl Evaluator {
    /// Deployed: `TABLE_NAME` (and the ledger's other settings).
    pub fn from_env(aws: &aws_config::SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        Ok(Evaluator {
            alerts: UsageLedger::from_sdk_config(aws, env)?.alerts(),
        })
    }
}

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events the rules were applied to.
    pub events: usize,
    /// Stream records that were the insert of an event record but did not decode.
    pub undecodable: usize,
    /// Alerts this invocation stored (the others of the batch were stored before).
    pub raised: Vec<Alert>,
    /// SIMs a silence check looked at.
    pub sims_checked: usize,
}

/// The Lambda entry point: a batch of the table's stream, or the scheduled silence check
/// (any EventBridge scheduled event).
pub async fn handle(evaluator: &Evaluator, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let mut metrics = InvocationMetrics::new(FUNCTION);
    if take_cold_start() {
        metrics.count("ColdStart", 1);
    }
    let payload = event.payload;
    let report = if payload.get("Records").is_some() {
        let batch: Event = serde_json::from_value(payload)?;
        metrics.count("RecordsReceived", batch.records.len() as u64);
        evaluate_batch(evaluator, &batch.records, Utc::now()).await?
    } else if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        check_silence(evaluator, Utc::now()).await?
    } else {
        return Err("neither a DynamoDB stream batch nor a scheduled event".into());
    };
    metrics.count("EventsEvaluated", report.events as u64);
    metrics.count("RecordsUndecodable", report.undecodable as u64);
    metrics.count("AlertsRaised", report.raised.len() as u64);
    metrics.count("SilenceSimsChecked", report.sims_checked as u64);
    metrics.emit();
    info!(
        events = report.events,
        raised = report.raised.len(),
        sims_checked = report.sims_checked,
        "alerts evaluated"
    );
    Ok(json!({ "raised": report.raised.len() }))
}

/// Whether stream sequence number `a` comes after `b` (decimal text of any length).
fn sequence_after(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) > (b.len(), b)
}

/// The events a batch's records insert, with their sequence numbers, in stream order.
fn observed(records: &[EventRecord], report: &mut Report) -> Vec<(String, Observed)> {
    let mut events = Vec::new();
    for record in records {
        let keys_of: Item = record.change.keys.clone().into();
        if !is_event_insert(&record.event_name, &keys_of) {
            continue;
        }
        let image: Item = record.change.new_image.clone().into();
        let decoded = inserted_event(&keys_of, &image).and_then(|stored| {
            let received_at = stored
                .received_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc())
                .unwrap_or(stored.event_time);
            Ok(Observed::of(&stored.event()?, received_at))
        });
        match decoded {
            Ok(event) => events.push((
                record.change.sequence_number.clone().unwrap_or_default(),
                event,
            )),
            Err(reason) => {
                // The event is in the ledger, counted; only its alerts are missed. One bad
                // image never holds the stream back.
                error!(%reason, "an event record of the stream does not decode; no alerts for it");
                report.undecodable += 1;
            }
        }
    }
    events
}

/// Applies the rules in force to one batch of the table's stream.
pub async fn evaluate_batch(
    evaluator: &Evaluator,
    records: &[EventRecord],
    now: DateTime<Utc>,
) -> Result<Report, Error> {
    let mut report = Report::default();
    let events = observed(records, &mut report);
    report.events = events.len();
    if events.is_empty() {
        return Ok(report);
    }
    let alerts = &evaluator.alerts;
    let rules = alerts.rules().await?;
    if rules.is_empty() {
        return Ok(report);
    }
    let all: Vec<Observed> = events.iter().map(|(_, e)| e.clone()).collect();
    let batch = plan(&rules, &all, now);

    for alert in &batch.inconsistent {
        raise(alerts, alert, &mut report).await?;
    }
    let mut crossed = Vec::new();
    if !batch.totals.is_empty() {
        // The batch is known by its first record's `eventID` (unique in the stream), and
        // applied in sequence-number order: without them it cannot be applied exactly once.
        let first = records
            .first()
            .map(|r| r.event_id.as_str())
            .filter(|id| !id.is_empty())
            .ok_or("the batch's first record has no eventID: it cannot be applied once")?;
        if events.iter().any(|(sequence, _)| sequence.is_empty()) {
            return Err(
                "a stream record has no sequence number: the batch cannot be applied once".into(),
            );
        }
        add_to_totals(alerts, &rules, first, &events, now).await?;
        let sums = alerts.sums(batch.totals.keys()).await?;
        for (key, added) in &batch.totals {
            let total = sums.get(key).copied().unwrap_or(0);
            crossed.extend(not_yet_raised(alerts, &rules, key, total, added, now).await?);
        }
    }
    let today = now.date_naive();
    let rules = &rules;
    let sim_reads = batch.sims.iter().filter_map(|(key, added)| {
        let rule = rules.as_slice().iter().find(|r| r.id == key.rule_id)?;
        Some(async move {
            let total = sim_sum(alerts, rule, key, added, today).await?;
            not_yet_raised(alerts, rules, key, total, added, now).await
        })
    });
    let mut reads = futures::stream::iter(sim_reads.collect::<Vec<_>>()).buffer_unordered(16);
    while let Some(found) = reads.next().await {
        crossed.extend(found?);
    }
    for alert in &crossed {
        raise(alerts, alert, &mut report).await?;
    }
    let seen = batch
        .seen
        .iter()
        .map(|((rule, sim), (at, event))| alerts.seen(rule, sim, *at, event));
    let mut writes = futures::stream::iter(seen.collect::<Vec<_>>()).buffer_unordered(16);
    while let Some(done) = writes.next().await {
        done?;
    }
    Ok(report)
}

/// Adds the batch's events that are not yet in the `per: total` sums, in transactions of
/// at most [`SUMS_PER_TRANSACTION`] sums, each recording how far the batch is applied.
///
/// This relies on Lambda sending a failed batch again from the same first record (the
/// alerts mapping neither bisects batches nor takes partial answers), with the same records
/// or more: a retry's records after the mark are the ones not yet added.
async fn add_to_totals(
    alerts: &Alerts,
    rules: &Rules,
    first_record: &str,
    events: &[(String, Observed)],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut through = alerts.applied_through(first_record).await?;
    let pending: Vec<&(String, Observed)> = events
        .iter()
        .filter(|(seq, _)| through.as_deref().is_none_or(|t| sequence_after(seq, t)))
        .collect();
    for (last_sequence, sums) in chunks(rules, &pending, now) {
        alerts
            .add_to_sums(first_record, through.as_deref(), &last_sequence, &sums)
            .await?;
        through = Some(last_sequence);
    }
    Ok(())
}

/// The pending events in runs that each add to at most [`SUMS_PER_TRANSACTION`] sums, in
/// stream order: each run's sequence number of its last event and what it adds to each sum.
fn chunks(
    rules: &Rules,
    pending: &[&(String, Observed)],
    now: DateTime<Utc>,
) -> Vec<(String, BTreeMap<SumKey, u64>)> {
    let mut chunks: Vec<(String, BTreeMap<SumKey, u64>)> = Vec::new();
    for (sequence, event) in pending {
        let adds = plan(rules, std::slice::from_ref(event), now).totals;
        let fits = chunks.last().is_some_and(|(_, sums)| {
            let grows = adds.keys().filter(|k| !sums.contains_key(*k)).count();
            sums.len() + grows <= SUMS_PER_TRANSACTION
        });
        if !fits {
            chunks.push((String::new(), BTreeMap::new()));
        }
        if let Some((last, sums)) = chunks.last_mut() {
            for (key, added) in adds {
                let sum = sums.entry(key).or_default();
                *sum = sum.saturating_add(added.bytes());
            }
            *last = sequence.clone();
        }
    }
    chunks
}

/// The usage alerts a sum of `total` raises that are not stored yet (whatever raised the
/// others: an earlier batch, an earlier try of this one, thresholds applied since).
async fn not_yet_raised(
    alerts: &Alerts,
    rules: &Rules,
    key: &SumKey,
    total: u64,
    added: &Added,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>, LedgerError> {
    let Some(thresholds) = thresholds_of(rules, key) else {
        return Ok(Vec::new());
    };
    let candidates = usage_alerts(key, thresholds, total, added, now);
    let stored = alerts.stored(&candidates).await?;
    Ok(candidates
        .into_iter()
        .filter(|a| !stored.contains(&a.key()))
        .collect())
}

fn thresholds_of<'a>(
    rules: &'a Rules,
    key: &SumKey,
) -> Option<&'a kore_ingest_core::alerts::Thresholds> {
    rules.as_slice().iter().find_map(|rule| match &rule.kind {
        RuleKind::Usage { thresholds, .. } if rule.id == key.rule_id => Some(thresholds),
        _ => None,
    })
}

/// A `per: sim` sum as the rollups hold it now: the period's days up to today (or the
/// latest day the batch booked to, if later).
async fn sim_sum(
    alerts: &Alerts,
    rule: &Rule,
    key: &SumKey,
    added: &Added,
    today: NaiveDate,
) -> Result<u64, LedgerError> {
    let (first, last) = key.days();
    let latest = added.days.last().copied().unwrap_or(first).max(today);
    alerts
        .sim_sum(key, &rule.scope, last.min(latest), &added.days, today)
        .await
}

async fn raise(alerts: &Alerts, alert: &Alert, report: &mut Report) -> Result<(), LedgerError> {
    if alerts.raise(alert).await? {
        info!(rule = %alert.rule_id, subject = %alert.subject, period_start = %alert.period_start,
              threshold = ?alert.threshold, value = alert.value, "alert raised");
        report.raised.push(alert.clone());
    }
    Ok(())
}

/// The scheduled check: one alert per SIM that a silence rule saw and that has sent
/// nothing since for the rule's minutes (counted from when the rule came into force, if
/// later: what arrived while it was not in force was not recorded).
pub async fn check_silence(evaluator: &Evaluator, now: DateTime<Utc>) -> Result<Report, Error> {
    let alerts = &evaluator.alerts;
    let applied = alerts.applied().await?;
    let mut report = Report::default();
    for rule in applied.rules.as_slice() {
        let RuleKind::Silence { after_minutes } = rule.kind else {
            continue;
        };
        let since = applied.since.get(&rule.id).copied();
        for shard in 0..keys::SHARDS {
            for sim in alerts.seen_sims(&rule.id, shard).await? {
                report.sims_checked += 1;
                let arrival = timestamp(sim.last_arrival);
                if sim.raised_for.as_deref() == Some(arrival.as_str()) {
                    continue;
                }
                let last = LastArrival {
                    sim_sid: &sim.sim_sid,
                    at: sim.last_arrival,
                    event: sim.last_event.as_deref(),
                };
                let Some(alert) = silence_alert(rule, after_minutes, &last, since, now) else {
                    continue;
                };
                raise(alerts, &alert, &mut report).await?;
                alerts
                    .silence_raised(&rule.id, &sim.sim_sid, sim.last_arrival)
                    .await?;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_adding_to_more_sums_than_a_transaction_holds_is_cut_in_stream_order() {
        let rules: Vec<String> = (0..60)
            .map(|i| {
                format!(
                    r#"{{"id": "r{i}", "kind": "usage", "per": "total", "period": "day", "thresholds": [1]}}"#
                )
            })
            .collect();
        let rules = Rules::parse(&format!(r#"{{"rules": [{}]}}"#, rules.join(","))).unwrap();
        let event = |sid: &str, day: u32| {
            let at = chrono::NaiveDate::from_ymd_opt(2024, 11, day)
                .unwrap()
                .and_hms_opt(7, 0, 0)
                .unwrap()
                .and_utc();
            Observed {
                event_sid: sid.into(),
                sim_sid: Some("HS1".into()),
                account_sid: None,
                fleet_sid: None,
                booking: Some(kore_ingest_core::usage::Booking {
                    sim_sid: "HS1".into(),
                    account_sid: None,
                    fleet_sid: None,
                    network_sid: None,
                    iso_country: None,
                }),
                usage: Some(kore_ingest_core::event::DataVolume {
                    upload: 1,
                    download: 1,
                    total: 2,
                }),
                day: at.date_naive(),
                hour_start: at,
                received_at: at,
            }
        };
        // Days 1, 1, 2: 60 sums, the same 60, then 60 more: cut before the third event.
        let events = [
            ("11".to_owned(), event("EZ1", 1)),
            ("12".to_owned(), event("EZ2", 1)),
            ("13".to_owned(), event("EZ3", 2)),
        ];
        let pending: Vec<&(String, Observed)> = events.iter().collect();
        let cut = chunks(&rules, &pending, Utc::now());
        let shape: Vec<(String, usize, u64)> = cut
            .iter()
            .map(|(s, sums)| (s.clone(), sums.len(), sums.values().sum()))
            .collect();
        // Each run: 60 sums; the first adds two events' 2 bytes to each, the second one's.
        assert_eq!(
            shape,
            [("12".to_owned(), 60, 60 * 4), ("13".to_owned(), 60, 60 * 2)]
        );
    }

    #[test]
    fn sequence_numbers_compare_as_numbers_whatever_their_length() {
        assert!(sequence_after("1000", "999"));
        assert!(sequence_after("000000000000000000012", "11"));
        assert!(!sequence_after("11", "000000000000000000011"));
        assert!(!sequence_after("998", "999"));
    }
}
