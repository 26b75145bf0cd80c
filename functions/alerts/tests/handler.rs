//! The alert function in process: events recorded by the ledger into DynamoDB Local, their
//! inserts delivered as the table's stream delivers them (two shards, batches retried as
//! Lambda retries them), the alerts read back from the ledger.

use std::collections::{BTreeMap, BTreeSet};

use alerts::{Evaluator, Report, check_silence, evaluate_batch};
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kore_ingest_aws::ledger::{UsageLedger, keys};
use kore_ingest_core::alerts::{Alert, AlertKind, Rules};
use kore_ingest_core::delivery::{Delivery, Origin, Outcome};
use kore_ingest_core::port::Ledger;
use kore_ingest_core::time::{TimeRange, timestamp};
use kore_test_support::faults::{ALERTS, as_function};
use kore_test_support::streams::stream_record;
use kore_test_support::{SampleEvent, fresh_ledger, parse_item};
use serde_json::{Value, json};

const FLEET_A: &str = "HFaaaa0000000000000000000000000000";
const FLEET_B: &str = "HFbbbb0000000000000000000000000000";
const ACCOUNT_A: &str = "ACaaaa0000000000000000000000000000";
const ACCOUNT_B: &str = "ACbbbb0000000000000000000000000000";

fn rules() -> Rules {
    Rules::parse(&format!(
        r#"{{"rules": [
          {{"id": "fleet-a-monthly", "kind": "usage", "fleet": "{FLEET_A}", "per": "sim",
            "period": "month", "thresholds": [150000, 300000, 100000000]}},
          {{"id": "sim-daily", "kind": "usage", "per": "sim", "period": "day",
            "thresholds": [60000, 90000]}},
          {{"id": "acct-daily", "kind": "usage", "account": "{ACCOUNT_A}", "per": "total",
            "period": "day", "thresholds": [200000, 400000, 600000, 100000000]}},
          {{"id": "fleet-b-monthly", "kind": "usage", "fleet": "{FLEET_B}", "per": "total",
            "period": "month", "thresholds": [100000, 500000]}},
          {{"id": "quality", "kind": "quality"}}
        ]}}"#
    ))
    .expect("the test's rules")
}

/// One event as the test generated it: what it is booked to, and its bytes.
#[derive(Debug, Clone)]
struct Generated {
    sample: SampleEvent,
    /// `data_total` as sent (differs from up + down for an inconsistent event).
    total: u64,
}

impl Generated {
    fn json(&self, kore: bool) -> String {
        let text = if kore {
            self.sample.kore_json()
        } else {
            self.sample.twilio_json()
        };
        let (up, down) = self.sample.window;
        if self.total == up + down {
            return text;
        }
        let mut event: Value = serde_json::from_str(&text).unwrap();
        if kore {
            event["data"]["data_total"] = json!(self.total);
        } else {
            let mut data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
            data["data_total"] = json!(self.total);
            event["data"] = json!(data.to_string());
        }
        event.to_string()
    }

    fn day(&self) -> NaiveDate {
        self.sample.time.date_naive()
    }
}

/// The traffic: SIMs of two fleets and accounts over the end of a month, one SIM moving from
/// fleet A to fleet B, some events inconsistent, each delivered by KORE and or Twilio, some
/// several times, some in a conflicting second version, some late; shuffled.
fn traffic(seed: u64) -> (Vec<Generated>, Vec<(Generated, bool)>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = DateTime::parse_from_rfc3339("2024-11-29T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut events = Vec::new();
    for i in 0..220u64 {
        let sim = rng.u64(1..=6);
        let at = start + Duration::minutes(rng.i64(0..4 * 24 * 60));
        let bytes = rng.u64(1_000..20_000);
        let mut sample = SampleEvent::usage_update(
            &format!("EZalert{seed:04}{i:026}"),
            &format!("HSalert{sim:027}"),
            &at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            (bytes / 3, bytes - bytes / 3),
        );
        sample.account_sid = if sim <= 4 { ACCOUNT_A } else { ACCOUNT_B }.into();
        // SIM 1 moves from fleet A to fleet B on 1 December.
        let in_b = sim >= 4 || (sim == 1 && at.day() < 20);
        sample.fleet_sid = if in_b { FLEET_B } else { FLEET_A }.into();
        let total = if i % 37 == 5 { bytes + 7 } else { bytes };
        events.push(Generated { sample, total });
    }
    let mut deliveries = Vec::new();
    for event in &events {
        match rng.u8(0..3) {
            0 => deliveries.push((event.clone(), true)),
            1 => deliveries.push((event.clone(), false)),
            _ => {
                deliveries.push((event.clone(), true));
                deliveries.push((event.clone(), false));
            }
        }
        if rng.u8(0..5) == 0 {
            deliveries.push((event.clone(), rng.bool()));
        }
        if rng.u8(0..15) == 0 {
            let mut conflicting = event.clone();
            conflicting.sample.window.0 += 999;
            conflicting.total += 999;
            deliveries.push((conflicting, rng.bool()));
        }
    }
    rng.shuffle(&mut deliveries);
    // Late: a tenth of the deliveries, moved to the end.
    let late: Vec<(Generated, bool)> = deliveries
        .iter()
        .filter(|(g, _)| g.sample.event_sid.ends_with('3'))
        .cloned()
        .collect();
    deliveries.retain(|(g, _)| !g.sample.event_sid.ends_with('3'));
    deliveries.extend(late);
    (events, deliveries)
}

/// The crossings, computed from the traffic alone: the first delivered version of each
/// event counts, booked by its own fleet and account to the UTC day of its window's end.
fn expected_crossings(rules: &Rules, deliveries: &[(Generated, bool)]) -> BTreeSet<String> {
    let mut first: BTreeMap<String, Generated> = BTreeMap::new();
    for (event, _) in deliveries {
        first
            .entry(event.sample.event_sid.clone())
            .or_insert_with(|| event.clone());
    }
    let mut sums: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut crossings = BTreeSet::new();
    for event in first.values() {
        let s = &event.sample;
        let day = event.day();
        let month = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap();
        let at = |d: NaiveDate| timestamp(d.and_hms_opt(0, 0, 0).unwrap().and_utc());
        let (up, down) = s.window;
        if event.total != up + down {
            crossings.insert(format!("quality|{}|{}", s.sim_sid, s.event_sid));
        }
        let mut add = |rule: &str, subject: &str, start: String| {
            *sums
                .entry((rule.to_owned(), subject.to_owned(), start))
                .or_default() += event.total;
        };
        if s.fleet_sid == FLEET_A {
            add("fleet-a-monthly", &s.sim_sid, at(month));
        }
        add("sim-daily", &s.sim_sid, at(day));
        if s.account_sid == ACCOUNT_A {
            add("acct-daily", ACCOUNT_A, at(day));
        }
        if s.fleet_sid == FLEET_B {
            add("fleet-b-monthly", FLEET_B, at(month));
        }
    }
    for ((rule_id, subject, start), total) in sums {
        let rule = rules.as_slice().iter().find(|r| r.id == rule_id).unwrap();
        let kore_ingest_core::alerts::RuleKind::Usage { thresholds, .. } = &rule.kind else {
            unreachable!()
        };
        for threshold in thresholds.reached(total) {
            crossings.insert(format!("{rule_id}|{subject}|{start}|{threshold}"));
        }
    }
    crossings
}

fn crossing_of(alert: &Alert) -> String {
    match alert.kind {
        AlertKind::Quality => format!(
            "quality|{}|{}",
            alert.subject,
            alert.crossed_by.as_deref().unwrap_or_default()
        ),
        _ => format!(
            "{}|{}|{}|{}",
            alert.rule_id,
            alert.subject,
            alert.period_start,
            alert.threshold.unwrap_or_default()
        ),
    }
}

/// A stream of the table as Lambda delivers it: each event record's insert on one of two
/// shards, sequence numbers increasing per shard.
#[derive(Default)]
struct Stream {
    shards: [Vec<Value>; 2],
    positions: [usize; 2],
    next: [u64; 2],
}

impl Stream {
    async fn push_insert(&mut self, ledger: &UsageLedger, event_sid: &str) -> Value {
        let item = ledger
            .table()
            .get(kore_ingest_aws::ledger::Item::from([
                (
                    "pk".to_owned(),
                    aws_sdk_dynamodb_s(format!("EVENT#{event_sid}")),
                ),
                ("sk".to_owned(), aws_sdk_dynamodb_s(keys::SINGLE.to_owned())),
            ]))
            .await
            .unwrap()
            .expect("the event record");
        let shard = usize::from(event_sid.as_bytes()[event_sid.len() - 2] % 2);
        let n = (shard as u64 + 1) * 1_000_000 + self.next[shard];
        self.next[shard] += 1;
        let record = stream_record("INSERT", &item, n);
        self.shards[shard].push(record.clone());
        record
    }

    fn pending(&self) -> usize {
        (0..2)
            .map(|s| self.shards[s].len() - self.positions[s])
            .sum()
    }

    /// One batch of a shard, from its position: `take` records at most.
    fn batch(&self, shard: usize, take: usize) -> Vec<EventRecord> {
        let from = self.positions[shard];
        records(
            self.shards[shard][from..]
                .iter()
                .take(take)
                .cloned()
                .collect(),
        )
    }
}

fn records(values: Vec<Value>) -> Vec<EventRecord> {
    let event: Event = serde_json::from_value(json!({ "Records": values })).unwrap();
    event.records
}

fn aws_sdk_dynamodb_s(value: String) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(value)
}

async fn evaluate(evaluator: &Evaluator, records: &[EventRecord], now: DateTime<Utc>) -> Report {
    as_function(ALERTS, evaluate_batch(evaluator, records, now))
        .await
        .expect("the batch is evaluated")
}

/// Delivers batches of random size from random shards, a third of the time one of each
/// shard at once (as two invocations run side by side); a third of them is delivered again
/// from the same first record (as Lambda retries a batch whose invocation failed), with
/// more records or the same.
async fn deliver(
    stream: &mut Stream,
    evaluator: &Evaluator,
    rng: &mut fastrand::Rng,
    drain: bool,
    now: DateTime<Utc>,
) -> Vec<Alert> {
    let mut raised = Vec::new();
    while stream.pending() > 0 {
        let waiting = |s: usize| stream.shards[s].len() > stream.positions[s];
        let shards: Vec<usize> = if waiting(0) && waiting(1) && rng.u8(0..3) == 0 {
            vec![0, 1]
        } else if waiting(0) && (rng.bool() || !waiting(1)) {
            vec![0]
        } else {
            vec![1]
        };
        let sizes: Vec<usize> = shards.iter().map(|_| rng.usize(1..40)).collect();
        let batches: Vec<Vec<EventRecord>> = shards
            .iter()
            .zip(&sizes)
            .map(|(shard, size)| stream.batch(*shard, *size))
            .collect();
        let reports =
            futures::future::join_all(batches.iter().map(|b| evaluate(evaluator, b, now))).await;
        raised.extend(reports.into_iter().flat_map(|r| r.raised));
        for ((shard, size), batch) in shards.iter().zip(sizes).zip(&batches) {
            let mut applied = batch.len();
            if rng.u8(0..3) == 0 {
                let again = stream.batch(*shard, size + rng.usize(0..10));
                raised.extend(evaluate(evaluator, &again, now).await.raised);
                applied = again.len();
            }
            stream.positions[*shard] += applied;
        }
        if !drain && rng.bool() {
            break;
        }
    }
    raised
}

fn delivery(kore: bool, n: usize) -> Delivery {
    let origin = if kore {
        Origin::Webhook {
            request_id: format!("req-{n}"),
        }
    } else {
        Origin::Kinesis {
            shard_id: "shardId-000000000000".into(),
            sequence_number: format!("{n:056}"),
        }
    };
    Delivery::now(origin)
}

#[tokio::test]
async fn alerts_equal_an_independent_computation_of_the_crossings_one_each() {
    // Evaluated long after the traffic: every day of it is settled.
    crossings_equal_an_independent_computation("alerts-crossings", 23, Utc::now()).await;
}

#[tokio::test]
async fn alerts_equal_the_crossings_while_the_traffic_s_last_day_is_today() {
    // Evaluated on the traffic's last day: that day is never taken from a checkpoint.
    let now = DateTime::parse_from_rfc3339("2024-12-02T23:30:00Z")
        .unwrap()
        .to_utc();
    crossings_equal_an_independent_computation("alerts-today", 41, now).await;
}

/// Shuffled traffic of both providers, with retries, conflicts and late events, recorded
/// in chunks while its inserts are evaluated (batches retried, two shards, some at once):
/// the alerts stored equal the crossings computed from the traffic alone, one each.
async fn crossings_equal_an_independent_computation(name: &str, seed: u64, now: DateTime<Utc>) {
    let ledger = fresh_ledger(name).await;
    let evaluator = Evaluator {
        alerts: ledger.alerts(),
    };
    let rules = rules();
    ledger.alerts().apply(&rules).await.unwrap();
    let (_, deliveries) = traffic(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut stream = Stream::default();
    let mut raised = Vec::new();
    let mut stored = 0;
    for (n, chunk) in deliveries.chunks(17).enumerate() {
        let inputs: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, (event, kore))| {
                (parse_item(&event.json(*kore)), delivery(*kore, n * 100 + i))
            })
            .collect();
        let outcomes = ledger.record_batch(&inputs, None).await;
        for ((event, _), outcome) in chunk.iter().zip(&outcomes) {
            assert!(!outcome.is_retry(), "{outcome:?}");
            if *outcome == Outcome::New {
                stored += 1;
                stream.push_insert(&ledger, &event.sample.event_sid).await;
            }
        }
        raised.extend(deliver(&mut stream, &evaluator, &mut rng, false, now).await);
    }
    raised.extend(deliver(&mut stream, &evaluator, &mut rng, true, now).await);

    let expected = expected_crossings(&rules, &deliveries);
    let range = TimeRange::new(
        DateTime::parse_from_rfc3339("2024-11-01T00:00:00Z")
            .unwrap()
            .to_utc(),
        DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .to_utc(),
    )
    .unwrap();
    let listed = ledger.alerts().list(&range, None).await.unwrap();
    let got: Vec<String> = listed.iter().map(crossing_of).collect();
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "an alert twice");
    let missing: Vec<_> = expected.difference(&got_set).collect();
    let extra: Vec<_> = got_set.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    // Every alert was raised once, by one invocation, however often its batch came.
    assert_eq!(raised.len(), listed.len());
    for alert in &listed {
        if let (AlertKind::Usage, Some(threshold)) = (alert.kind, alert.threshold) {
            assert!(alert.value >= threshold, "{alert:?}");
        }
    }
    // The traffic does cross: at least one alert of each rule.
    for rule in rules.as_slice() {
        assert!(
            listed.iter().any(|a| a.rule_id == rule.id),
            "no alert of {}",
            rule.id
        );
    }
    assert!(stored > 200, "{stored} events stored");
    let one_rule = ledger
        .alerts()
        .list(&range, Some("acct-daily"))
        .await
        .unwrap();
    assert!(one_rule.iter().all(|a| a.rule_id == "acct-daily") && !one_rule.is_empty());
}

#[tokio::test]
async fn a_sim_that_goes_silent_is_raised_once_per_silence() {
    let ledger = fresh_ledger("alerts-silence").await;
    let evaluator = Evaluator {
        alerts: ledger.alerts(),
    };
    let rules = Rules::parse(&format!(
        r#"{{"rules": [{{"id": "silent", "kind": "silence", "fleet": "{FLEET_A}", "after_minutes": 60}}]}}"#
    ))
    .unwrap();
    ledger.alerts().apply(&rules).await.unwrap();
    let mut stream = Stream::default();
    let arrive = |sid: &str, sim: &str, fleet: &str, at: DateTime<Utc>| {
        let mut sample = SampleEvent::usage_update(sid, sim, "2024-11-04T07:00:00Z", (10, 20));
        sample.fleet_sid = fleet.into();
        let mut delivery = delivery(true, 1);
        delivery.received_at = at;
        (parse_item(&sample.kore_json()), delivery)
    };
    // Arrivals after the rule came into force (it watches from then).
    let t0 = (Utc::now() + Duration::minutes(1)).to_rfc3339();
    let t0 = DateTime::parse_from_rfc3339(&t0).unwrap().to_utc();
    let first = [
        arrive("EZsilent01", "HSsilent1", FLEET_A, t0),
        arrive(
            "EZsilent02",
            "HSsilent1",
            FLEET_A,
            t0 + Duration::minutes(15),
        ),
        arrive("EZsilent03", "HSsilent2", FLEET_B, t0),
    ];
    ledger.record_batch(&first, None).await;
    let mut inserts = Vec::new();
    for sid in ["EZsilent01", "EZsilent02", "EZsilent03"] {
        inserts.push(stream.push_insert(&ledger, sid).await);
    }
    // Delivered out of order: the later arrival stays the last.
    inserts.reverse();
    evaluate(&evaluator, &records(inserts), t0).await;
    let check = |minutes: i64| {
        as_function(
            ALERTS,
            check_silence(&evaluator, t0 + Duration::minutes(minutes)),
        )
    };
    assert!(
        check(74).await.unwrap().raised.is_empty(),
        "not yet 60 minutes"
    );
    let raised = check(75).await.unwrap().raised;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].subject, "HSsilent1");
    assert_eq!(
        raised[0].period_start,
        timestamp(t0 + Duration::minutes(15))
    );
    assert_eq!(raised[0].crossed_by.as_deref(), Some("EZsilent02"));
    assert!(
        check(200).await.unwrap().raised.is_empty(),
        "one alert per silence"
    );
    // It speaks again, then falls silent again: a second silence.
    let again = [arrive(
        "EZsilent04",
        "HSsilent1",
        FLEET_A,
        t0 + Duration::minutes(300),
    )];
    ledger.record_batch(&again, None).await;
    let insert = stream.push_insert(&ledger, "EZsilent04").await;
    evaluate(&evaluator, &records(vec![insert]), t0).await;
    assert_eq!(check(400).await.unwrap().raised.len(), 1);
    let listed = ledger
        .alerts()
        .list(
            &TimeRange::new(t0, t0 + Duration::days(1)).unwrap(),
            Some("silent"),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[tokio::test]
async fn a_record_that_does_not_decode_never_holds_the_batch_back() {
    let ledger = fresh_ledger("alerts-undecodable").await;
    let evaluator = Evaluator {
        alerts: ledger.alerts(),
    };
    ledger
        .alerts()
        .apply(&Rules::parse(r#"{"rules": [{"id": "q", "kind": "quality"}]}"#).unwrap())
        .await
        .unwrap();
    let mut sample =
        SampleEvent::usage_update("EZbroken01", "HSbroken", "2024-11-04T07:00:00Z", (10, 20));
    sample.fleet_sid = FLEET_A.into();
    let odd = Generated { sample, total: 99 };
    ledger
        .record_batch(&[(parse_item(&odd.json(true)), delivery(true, 1))], None)
        .await;
    let mut stream = Stream::default();
    let good = stream.push_insert(&ledger, "EZbroken01").await;
    let mut broken = good.clone();
    broken["dynamodb"]["NewImage"] = json!({});
    broken["dynamodb"]["SequenceNumber"] = json!("9");
    let report = evaluate(&evaluator, &records(vec![broken, good]), Utc::now()).await;
    assert_eq!(report.undecodable, 1);
    assert_eq!(
        report.raised.len(),
        1,
        "the good record's alert: {report:?}"
    );
    assert_eq!(report.raised[0].value, 99);
    assert_eq!(report.raised[0].threshold, Some(30));
}
