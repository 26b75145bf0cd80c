//! What a batch of stored events means for the rules: which sums it adds to, which SIMs'
//! sums to read again, which events are inconsistent, which SIMs were seen; and which
//! thresholds a new sum reaches.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Timelike, Utc};

use super::record::{Alert, AlertKind};
use super::rules::{Per, Period, Rule, RuleKind, Rules, Thresholds};
use crate::event::{ConnectionEvent, DataVolume};
use crate::time::{hour_of, timestamp};
use crate::usage::Booking;

/// A stored event as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub event_sid: String,
    pub sim_sid: Option<String>,
    pub account_sid: Option<String>,
    pub fleet_sid: Option<String>,
    /// Where its usage is booked (`None` without usage).
    pub booking: Option<Booking>,
    pub usage: Option<DataVolume>,
    /// The booking rule's day and hour.
    pub day: NaiveDate,
    pub hour_start: DateTime<Utc>,
    /// When the ledger first received it.
    pub received_at: DateTime<Utc>,
}

impl Observed {
    pub fn of(event: &ConnectionEvent, received_at: DateTime<Utc>) -> Self {
        let hour = event.booking_hour();
        Observed {
            event_sid: event.key.as_str().to_owned(),
            sim_sid: event.sim_sid.clone(),
            account_sid: event.account_sid.clone(),
            fleet_sid: event.fleet_sid.clone(),
            booking: Booking::of(event),
            usage: event.usage,
            day: event.billing_day,
            hour_start: hour_of(event.billing_day, hour.hour()).unwrap_or(hour),
            received_at,
        }
    }

    /// Whether its `data_total` differs from `data_upload + data_download`.
    pub fn is_inconsistent(&self) -> bool {
        self.usage
            .is_some_and(|u| u.upload.checked_add(u.download) != Some(u.total))
    }
}

/// One sum a rule keeps: the rule, its subject (a SIM for `per: sim`, the scope for
/// `per: total`) and the period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SumKey {
    pub rule_id: String,
    pub subject: String,
    pub period: Period,
    /// The period's first day.
    pub first_day: NaiveDate,
}

impl SumKey {
    pub fn period_start(&self) -> DateTime<Utc> {
        crate::time::midnight(self.first_day)
    }

    /// The days of the period.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        self.period.days_of(self.first_day)
    }
}

/// What a batch adds to one sum: each event's bytes in stream order, and the days they are
/// booked on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    pub events: Vec<(String, u64)>,
    pub days: BTreeSet<NaiveDate>,
}

impl Added {
    pub fn bytes(&self) -> u64 {
        self.events
            .iter()
            .map(|(_, b)| *b)
            .fold(0, u64::saturating_add)
    }
}

/// What one batch asks of the ledger.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchPlan {
    /// `per: total` sums, which the alert function keeps.
    pub totals: BTreeMap<SumKey, Added>,
    /// `per: sim` sums, which the ledger's rollups hold: read again after the batch.
    pub sims: BTreeMap<SumKey, Added>,
    /// One `quality` alert per inconsistent event and rule.
    pub inconsistent: Vec<Alert>,
    /// Silence rules: per rule and SIM, the latest arrival in the batch and its event.
    pub seen: BTreeMap<(String, String), (DateTime<Utc>, String)>,
}

/// Sorts a batch's events (stream order) into what each rule needs.
pub fn plan(rules: &Rules, events: &[Observed], raised_at: DateTime<Utc>) -> BatchPlan {
    let mut plan = BatchPlan::default();
    for event in events {
        for rule in rules.as_slice() {
            match &rule.kind {
                RuleKind::Usage { per, period, .. } => {
                    let (Some(booking), Some(usage)) = (&event.booking, event.usage) else {
                        continue;
                    };
                    if !rule.scope.covers(booking) {
                        continue;
                    }
                    let subject = match per {
                        Per::Sim => booking.sim_sid.clone(),
                        Per::Total => rule.scope.subject().to_owned(),
                    };
                    let key = SumKey {
                        rule_id: rule.id.clone(),
                        subject,
                        period: *period,
                        first_day: period.days_of(event.day).0,
                    };
                    let sums = match per {
                        Per::Sim => &mut plan.sims,
                        Per::Total => &mut plan.totals,
                    };
                    let added = sums.entry(key).or_default();
                    added.events.push((event.event_sid.clone(), usage.total));
                    added.days.insert(event.day);
                }
                RuleKind::Quality => {
                    let in_scope = rule.scope.names(
                        event.sim_sid.as_deref(),
                        event.account_sid.as_deref(),
                        event.fleet_sid.as_deref(),
                    );
                    if in_scope && event.is_inconsistent() {
                        plan.inconsistent
                            .push(quality_alert(rule, event, raised_at));
                    }
                }
                RuleKind::Silence { .. } => {
                    // Any event counts as the SIM sending something, usage or not.
                    let Some(sim) = &event.sim_sid else { continue };
                    let in_scope = rule.scope.names(
                        Some(sim),
                        event.account_sid.as_deref(),
                        event.fleet_sid.as_deref(),
                    );
                    if !in_scope {
                        continue;
                    }
                    let seen = plan
                        .seen
                        .entry((rule.id.clone(), sim.clone()))
                        .or_insert((event.received_at, event.event_sid.clone()));
                    if event.received_at > seen.0 {
                        *seen = (event.received_at, event.event_sid.clone());
                    }
                }
            }
        }
    }
    plan
}

fn quality_alert(rule: &Rule, event: &Observed, raised_at: DateTime<Utc>) -> Alert {
    let usage = event.usage.unwrap_or_default();
    Alert {
        rule_id: rule.id.clone(),
        kind: AlertKind::Quality,
        subject: event.sim_sid.clone().unwrap_or_else(|| "-".into()),
        period_start: timestamp(event.hour_start),
        // What `data_total` should have been; saturated only for sums past 2^64.
        threshold: Some(usage.upload.saturating_add(usage.download)),
        value: usage.total,
        crossed_by: Some(event.event_sid.clone()),
        raised_at: timestamp(raised_at),
    }
}

/// The usage alerts a sum raises now that it is `value`: one per threshold it reaches.
/// `added` is what this batch added, in stream order: the threshold's `crossed_by` is the
/// event after which the sum first reached it, counting from `value` less the batch (when
/// others added meanwhile, the batch's last); none when the sum was over it before the
/// batch (a threshold or rule applied since).
pub fn usage_alerts(
    key: &SumKey,
    thresholds: &Thresholds,
    value: u64,
    added: &Added,
    raised_at: DateTime<Utc>,
) -> Vec<Alert> {
    let batch = added.bytes();
    let added = &added.events;
    thresholds
        .reached(value)
        .map(|threshold| {
            let before = value.saturating_sub(batch);
            let (crossed_by, at) = if before >= threshold {
                (None, value)
            } else {
                let mut running = before;
                let crossing = added.iter().find(|(_, bytes)| {
                    running = running.saturating_add(*bytes);
                    running >= threshold
                });
                match crossing {
                    Some((sid, _)) => (Some(sid.clone()), running),
                    None => (added.last().map(|(sid, _)| sid.clone()), value),
                }
            };
            Alert {
                rule_id: key.rule_id.clone(),
                kind: AlertKind::Usage,
                subject: key.subject.clone(),
                period_start: timestamp(key.period_start()),
                threshold: Some(threshold),
                value: at,
                crossed_by,
                raised_at: timestamp(raised_at),
            }
        })
        .collect()
}

/// A SIM's last arrival in a silence rule's scope, and its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastArrival<'a> {
    pub sim_sid: &'a str,
    pub at: DateTime<Utc>,
    pub event: Option<&'a str>,
}

/// The alert of a SIM that has sent nothing since `last.at`, checked `now`: raised once the
/// silence has lasted the rule's minutes, counted from `in_force_since` when that is later
/// (nothing was recorded while the rule was not in force).
pub fn silence_alert(
    rule: &Rule,
    after_minutes: u64,
    last: &LastArrival<'_>,
    in_force_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Alert> {
    let watched_from = in_force_since.map_or(last.at, |since| since.max(last.at));
    let watched = u64::try_from((now - watched_from).num_minutes()).ok()?;
    let silent_minutes = u64::try_from((now - last.at).num_minutes()).ok()?;
    (watched >= after_minutes).then(|| Alert {
        rule_id: rule.id.clone(),
        kind: AlertKind::Silence,
        subject: last.sim_sid.to_owned(),
        period_start: timestamp(last.at),
        threshold: Some(after_minutes),
        value: silent_minutes,
        crossed_by: last.event.map(str::to_owned),
        raised_at: timestamp(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn usage_event(sid: &str, sim: &str, fleet: &str, day: &str, total: u64) -> Observed {
        Observed {
            event_sid: sid.into(),
            sim_sid: Some(sim.into()),
            account_sid: Some("AC1".into()),
            fleet_sid: Some(fleet.into()),
            booking: Some(Booking {
                sim_sid: sim.into(),
                account_sid: Some("AC1".into()),
                fleet_sid: Some(fleet.into()),
                network_sid: None,
                iso_country: None,
            }),
            usage: Some(DataVolume {
                upload: total / 2,
                download: total - total / 2,
                total,
            }),
            day: NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap(),
            hour_start: at(&format!("{day}T07:00:00Z")),
            received_at: at(&format!("{day}T07:20:00Z")),
        }
    }

    fn rules() -> Rules {
        Rules::parse(
            r#"{"rules": [
              {"id": "sim-month", "kind": "usage", "fleet": "HF1", "per": "sim", "period": "month",
               "thresholds": [100]},
              {"id": "acct-day", "kind": "usage", "account": "AC1", "per": "total", "period": "day",
               "thresholds": [100, 200]},
              {"id": "quality", "kind": "quality"},
              {"id": "silent", "kind": "silence", "fleet": "HF1", "after_minutes": 60}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_batch_adds_to_the_sums_of_the_rules_whose_scope_it_is_booked_to() {
        let mut odd = usage_event("EZ3", "HS2", "HF2", "2024-11-05", 7);
        odd.usage = Some(DataVolume {
            upload: 1,
            download: 1,
            total: 7,
        });
        let events = [
            usage_event("EZ1", "HS1", "HF1", "2024-11-04", 60),
            usage_event("EZ2", "HS1", "HF1", "2024-11-30", 50),
            odd,
        ];
        let plan = plan(&rules(), &events, at("2024-12-01T00:00:00Z"));
        // One SIM sum for November (HS2 is in another fleet).
        assert_eq!(plan.sims.len(), 1);
        let november = plan.sims.values().next().unwrap();
        assert_eq!(
            november.events,
            [("EZ1".to_owned(), 60), ("EZ2".to_owned(), 50)]
        );
        assert_eq!(november.days.len(), 2);
        // The account's two days.
        let totals: Vec<(String, usize)> = plan
            .totals
            .iter()
            .map(|(k, v)| (crate::time::day_text(k.first_day), v.events.len()))
            .collect();
        assert_eq!(
            totals,
            [
                ("2024-11-04".into(), 1),
                ("2024-11-05".into(), 1),
                ("2024-11-30".into(), 1)
            ]
        );
        assert_eq!(plan.inconsistent.len(), 1);
        assert_eq!(plan.inconsistent[0].crossed_by.as_deref(), Some("EZ3"));
        assert_eq!(plan.inconsistent[0].threshold, Some(2));
        assert_eq!(
            plan.seen.len(),
            1,
            "only HS1 is in the silence rule's fleet"
        );
    }

    #[test]
    fn the_crossing_event_is_the_one_after_which_the_sum_reaches_the_threshold() {
        let key = SumKey {
            rule_id: "acct-day".into(),
            subject: "AC1".into(),
            period: Period::Day,
            first_day: NaiveDate::from_ymd_opt(2024, 11, 4).unwrap(),
        };
        let rules = rules();
        let RuleKind::Usage { thresholds, .. } = &rules.as_slice()[1].kind else {
            unreachable!()
        };
        let added = Added {
            events: vec![("EZ1".into(), 30), ("EZ2".into(), 50), ("EZ3".into(), 90)],
            days: BTreeSet::from([key.first_day]),
        };
        // 40 before the batch: 70, 120 (crosses 100), 210 (crosses 200).
        let alerts = usage_alerts(&key, thresholds, 210, &added, at("2024-11-04T08:00:00Z"));
        let got: Vec<_> = alerts
            .iter()
            .map(|a| (a.threshold, a.value, a.crossed_by.as_deref()))
            .collect();
        assert_eq!(
            got,
            [(Some(100), 120, Some("EZ2")), (Some(200), 210, Some("EZ3"))]
        );
        assert!(
            usage_alerts(&key, thresholds, 99, &added, at("2024-11-04T08:00:00Z")).is_empty(),
            "below every threshold"
        );
    }

    #[test]
    fn silence_is_raised_only_after_the_rule_s_minutes() {
        let rules = rules();
        let rule = &rules.as_slice()[3];
        let last = LastArrival {
            sim_sid: "HS1",
            at: at("2024-11-04T07:00:00Z"),
            event: Some("EZ1"),
        };
        assert!(silence_alert(rule, 60, &last, None, at("2024-11-04T07:59:59Z")).is_none());
        let alert = silence_alert(rule, 60, &last, None, at("2024-11-04T08:00:00Z")).unwrap();
        assert_eq!(alert.value, 60);
        assert_eq!(alert.period_start, "2024-11-04T07:00:00.000Z");
        assert_eq!(alert.crossed_by.as_deref(), Some("EZ1"));
        // A rule applied (again) at 09:00 watches from then: nothing was recorded before.
        let since = Some(at("2024-11-04T09:00:00Z"));
        assert!(silence_alert(rule, 60, &last, since, at("2024-11-04T09:59:00Z")).is_none());
        let alert = silence_alert(rule, 60, &last, since, at("2024-11-04T10:00:00Z")).unwrap();
        assert_eq!(alert.value, 180);
    }
}
