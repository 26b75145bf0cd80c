//! Issue 22: a SIM's status by the time each update was sent, and its active days, against
//! an independent computation, over callbacks from KORE and Twilio that arrive shuffled,
//! retried (same token) and replayed (a fresh token, the same `Date`), some with no `Date`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use http::{HeaderMap, HeaderValue};
use kore_ingest_core::callback::{CallbackKind, parse_callback};
use kore_ingest_core::delivery::{Delivery, Origin};
use kore_ingest_core::port::CallbackOutcome;
use kore_ingest_core::sim_status::changes;
use kore_ingest_core::time::TimeRange;
use kore_test_support::{Ledger, LedgerExt, SampleEvent, fresh_ledger, kinesis, parse_one};

const STATUSES: [&str; 4] = ["ready", "active", "inactive", "active"];

/// One status update as a provider sends it, and the time it arrives.
#[derive(Debug, Clone)]
struct Sent {
    sim: String,
    status: &'static str,
    /// The `Date` header, or none (the arrival time stands in).
    date: Option<DateTime<Utc>>,
    kore: bool,
    token: String,
    arrival: DateTime<Utc>,
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// The status at each moment from the unique deliveries, by brute force: every update sent
/// on a whole minute, so the status is known minute by minute; at a minute the latest sent
/// (then latest arrived) update sent no later than it holds.
fn status_at<'a>(unique: &'a [&Sent], minute: DateTime<Utc>) -> Option<&'a str> {
    unique
        .iter()
        .map(|s| (s.date.unwrap_or(s.arrival), s.arrival, s.status))
        .filter(|(sent, _, _)| *sent <= minute)
        .max_by_key(|(sent, arrival, _)| (*sent, *arrival))
        .map(|(_, _, status)| status)
}

#[tokio::test]
async fn statuses_and_active_days_equal_an_independent_computation_over_shuffled_replayed_callbacks()
 {
    let ledger = fresh_ledger("sim-status").await;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let run = format!("{:08x}", rng.u32(..));
    let start = at("2024-07-01T00:00:00Z");
    let mut deliveries: Vec<Sent> = Vec::new();
    let sims: Vec<String> = (0..8).map(|i| format!("HS{run}{i:02}")).collect();
    for sim in &sims {
        for update in 0..rng.usize(2..7) {
            // Whole minutes over ten days; two updates may share a minute (a tie).
            let sent = start + Duration::minutes(rng.i64(0..10 * 24 * 60));
            let status = STATUSES[rng.usize(..STATUSES.len())];
            let kore = rng.bool();
            let date = (kore && rng.u8(..10) > 0).then_some(sent);
            let token = |n: u32| match kore {
                true => format!("RQ{run}{sim}{update}x{n:08x}"),
                false => format!("{n:08x}-{}-4c8e-9a51-0d7e3b1f2a44", &run[..4]),
            };
            let first = Sent {
                sim: sim.clone(),
                status,
                date,
                kore,
                token: token(rng.u32(..)),
                arrival: sent + Duration::seconds(rng.i64(1..600)),
            };
            // A retry (same token, arriving later) and a replay with a fresh token.
            if rng.bool() {
                deliveries.push(Sent {
                    arrival: first.arrival + Duration::hours(rng.i64(1..72)),
                    ..first.clone()
                });
            }
            if kore && date.is_some() && rng.bool() {
                deliveries.push(Sent {
                    token: token(rng.u32(..)),
                    arrival: first.arrival + Duration::hours(rng.i64(1..200)),
                    ..first.clone()
                });
            }
            deliveries.push(first);
        }
    }
    rng.shuffle(&mut deliveries);

    for d in &deliveries {
        let mut headers = HeaderMap::new();
        let (token_header, user_agent) = match d.kore {
            true => ("kore-idempotency-token", "KoreProxy/1.1"),
            false => ("i-twilio-idempotency-token", "TwilioProxy/1.1"),
        };
        headers.insert(token_header, HeaderValue::from_str(&d.token).unwrap());
        headers.insert("user-agent", HeaderValue::from_static(user_agent));
        if let Some(date) = d.date {
            // KORE's form, or the HTTP date form now and then.
            let text = match rng.bool() {
                true => date.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                false => date.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            };
            headers.insert("date", HeaderValue::from_str(&text).unwrap());
        }
        let form = format!(
            "ApiVersion=v1&SimUniqueName=u&SimSid={}&SimStatus={}&AccountSid=AC{run}",
            d.sim, d.status
        );
        let callback = parse_callback(CallbackKind::Sims, form.as_bytes(), &headers).unwrap();
        let delivery = Delivery {
            received_at: d.arrival,
            ..Delivery::now(Origin::Webhook {
                request_id: d.token.clone(),
            })
        };
        let outcome = ledger
            .record_callback(&callback, form.as_bytes(), &delivery)
            .await;
        assert!(
            matches!(
                outcome,
                Ok(CallbackOutcome::New | CallbackOutcome::Duplicate)
            ),
            "{outcome:?}"
        );
    }

    // Usage booked to one SIM on one day, and to a SIM that never sent a status.
    let usage_only = format!("HS{run}usage");
    for (i, (sim, time)) in [
        (&sims[0], "2024-07-04T10:00:00Z"),
        (&usage_only, "2024-07-06T10:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sample = SampleEvent::usage_update(&format!("EZ{run}{i}"), sim, time, (10, 20));
        sample.account_sid = format!("AC{run}");
        let event = parse_one(&sample.kore_json());
        ledger.record_event(&event, &kinesis(i as u64)).await;
    }

    // The independent computation, from the unique deliveries: per provider and token, the
    // copy the ledger took first (a retry without `Date` is sent when it arrives).
    let mut unique: BTreeMap<(bool, String), &Sent> = BTreeMap::new();
    for d in &deliveries {
        unique.entry((d.kore, d.token.clone())).or_insert(d);
    }
    let range = TimeRange::new(at("2024-07-02T00:00:00Z"), at("2024-07-09T00:00:00Z")).unwrap();
    let usage_days: BTreeMap<&str, NaiveDate> = [
        (
            sims[0].as_str(),
            NaiveDate::from_ymd_opt(2024, 7, 4).unwrap(),
        ),
        (
            usage_only.as_str(),
            NaiveDate::from_ymd_opt(2024, 7, 6).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    let statuses = ledger.callbacks().statuses().await.unwrap();
    let active = ledger
        .sims_active(&range, Some(&format!("AC{run}")))
        .await
        .unwrap();
    let active: BTreeMap<&str, _> = active.iter().map(|a| (a.sim_sid.as_str(), a)).collect();
    for sim in sims.iter().chain([&usage_only]) {
        let mine: Vec<&Sent> = unique.values().filter(|d| &d.sim == sim).copied().collect();
        let far_future = at("2030-01-01T00:00:00Z");
        let expected_now = status_at(&mine, far_future);
        let stored = statuses.iter().find(|s| &s.sim_sid == sim);
        assert_eq!(
            stored.map(|s| s.change.status.as_str()),
            expected_now,
            "current status of {sim} (seed {seed})"
        );
        let mut days = BTreeSet::new();
        for day in range.days() {
            let from = kore_ingest_core::time::midnight(day);
            let active_minute = (0..24 * 60)
                .any(|m| status_at(&mine, from + Duration::minutes(m)) == Some("active"));
            if active_minute || usage_days.get(sim.as_str()) == Some(&day) {
                days.insert(day);
            }
        }
        let at_end = status_at(&mine, range.end() - Duration::minutes(1)).map(|s| s == "active");
        let known = !days.is_empty() || at_end.is_some();
        match active.get(sim.as_str()) {
            Some(record) => {
                assert_eq!(
                    record.activity.active_days, days,
                    "active days of {sim} (seed {seed})"
                );
                assert_eq!(
                    record.activity.active_at_end, at_end,
                    "{sim} at the end (seed {seed})"
                );
            }
            None => assert!(!known, "{sim} is known in the range (seed {seed})"),
        }

        // The history: every change, oldest first, never a repeat.
        let history = changes(
            ledger
                .callbacks()
                .history(sim)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.change)
                .collect(),
        );
        assert!(
            history
                .windows(2)
                .all(|w| w[0].status != w[1].status && w[0].order() <= w[1].order())
        );
        assert_eq!(
            history.last().map(|c| c.status.as_str()),
            expected_now,
            "the history ends with the current status of {sim} (seed {seed})"
        );
    }
}
