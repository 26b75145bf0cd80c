//! `kore-usage customers`, `zones` and `usage --group customer|zone`: usage attributed to the
//! customer at its hour and to its roaming zone equals an independent computation over
//! traffic where SIMs move between customers and fleets mid-period, roam, and arrive from both
//! providers with retries; bad files are refused whole and change nothing.

use std::collections::BTreeMap;
use std::process::Command;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use kore_ingest_aws::ledger::UsageLedger;
use kore_test_support::*;
use serde_json::Value;

const ACCOUNT_A: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ACCOUNT_B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const FLEET_1: &str = "HF11111111111111111111111111111111";
const FLEET_2: &str = "HF22222222222222222222222222222222";
const START: &str = "2024-11-02T00:00:00Z";
const END: &str = "2024-11-06T00:00:00Z";
const US_HOME: &str = "HWa0000000000000000000000000000001";

const NETWORKS: [(&str, &str, &str); 4] = [
    ("HWde000000000000000000000000000001", "Telekom.de", "DE"),
    ("HWf0000000000000000000000000000001", "Orange F", "FR"),
    (US_HOME, "AT&T", "US"),
    ("HWa0000000000000000000000000000002", "T-Mobile", "US"),
];

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn sim(n: usize) -> String {
    format!("HS{n:032x}")
}

/// The rows of the customers file: account A is acme's; fleet 2 is globex's until noon on the
/// 3rd, then initech's; SIM 7 is the sim-owner's for a day from 05:00 on the 3rd; account B's
/// fleet 1 SIMs are nobody's.
fn customers_file() -> String {
    format!(
        "customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to\n\
         acme,,,{ACCOUNT_A},plan-a,2024-11-01T00:00:00Z,\n\
         globex,,{FLEET_2},,,2024-11-01T00:00:00Z,2024-11-03T12:00:00Z\n\
         initech,,{FLEET_2},,,2024-11-03T12:00:00Z,\n\
         sim-owner,{},,,,2024-11-03T05:00:00Z,2024-11-04T05:00:00Z\n",
        sim(7)
    )
}

const ZONES_FILE: &str = r#"{"zones": [{"name": "EU", "countries": ["DE", "FR"]},
  {"name": "US-home", "networks": ["HWa0000000000000000000000000000001"]},
  {"name": "ROW", "default": true}]}"#;

/// The customer an event's usage belongs to, computed here from the rows above: the SIM's row
/// valid at the start of the hour its window ended in, else its fleet's, else its account's.
fn expected_customer(e: &SampleEvent) -> &'static str {
    let hour = e.time.duration_trunc(Duration::hours(1)).unwrap();
    let within = |from: &str, to: Option<&str>| at(from) <= hour && to.is_none_or(|t| hour < at(t));
    if e.sim_sid == sim(7) && within("2024-11-03T05:00:00Z", Some("2024-11-04T05:00:00Z")) {
        return "sim-owner";
    }
    if e.fleet_sid == FLEET_2 {
        return if within("2024-11-01T00:00:00Z", Some("2024-11-03T12:00:00Z")) {
            "globex"
        } else {
            "initech"
        };
    }
    if e.account_sid == ACCOUNT_A {
        "acme"
    } else {
        "-"
    }
}

fn expected_zone(e: &SampleEvent) -> &'static str {
    match &e.network {
        Some((sid, _, _)) if sid == US_HOME => "US-home",
        Some((_, _, country)) if country == "DE" || country == "FR" => "EU",
        _ => "ROW",
    }
}

/// 24 SIMs in two accounts and two fleets over four days, windows ending at any minute;
/// SIMs 0 to 5 move from fleet 1 to fleet 2 at 08:00 on the 3rd. Each event from KORE,
/// Twilio or both, some once more.
fn traffic() -> (
    Vec<SampleEvent>,
    Vec<(String, kore_ingest_core::delivery::Delivery)>,
) {
    let mut rng = fastrand::Rng::with_seed(24);
    let start = Utc.with_ymd_and_hms(2024, 11, 2, 0, 0, 0).unwrap();
    let moved_at = at("2024-11-03T08:00:00Z");
    let mut events = Vec::new();
    let mut deliveries = Vec::new();
    for n in 0..24usize {
        for window in 0..14usize {
            let end = start + Duration::seconds(rng.i64(0..4 * 24 * 3600));
            let mut e = SampleEvent::usage_update(
                &format!("EZ{n:04}{window:04}{:024x}", rng.u64(..)),
                &sim(n),
                &end.to_rfc3339(),
                (rng.u64(0..50_000), rng.u64(0..700_000)),
            );
            e.window_start = Some(end - Duration::minutes(15));
            e.account_sid = if n % 2 == 0 { ACCOUNT_A } else { ACCOUNT_B }.into();
            e.fleet_sid = if (n < 6 && end >= moved_at) || n % 3 == 0 {
                FLEET_2
            } else {
                FLEET_1
            }
            .into();
            e.network = match rng.usize(0..6) {
                0 => None,
                k => {
                    let (sid, name, country) = NETWORKS[k % NETWORKS.len()];
                    Some((sid.into(), name.into(), country.into()))
                }
            };
            e.session_sid = format!("PI{n:032}");
            let kore = (e.kore_json(), webhook(&format!("req-{n}-{window}")));
            let twilio = (e.twilio_json(), kinesis((n * 100 + window) as u64));
            match rng.usize(0..3) {
                0 => deliveries.push(kore.clone()),
                1 => deliveries.push(twilio.clone()),
                _ => deliveries.extend([kore.clone(), twilio.clone()]),
            }
            if rng.usize(0..4) == 0 {
                deliveries.push(if rng.bool() { kore } else { twilio });
            }
            events.push(e);
        }
    }
    rng.shuffle(&mut deliveries);
    (events, deliveries)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn kore_usage(ledger: &UsageLedger, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_kore-usage"))
        .args(["--table", ledger.table_name()])
        .args(args)
        .output()
        .expect("run kore-usage");
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8"),
    }
}

fn ok(ledger: &UsageLedger, args: &[&str]) -> String {
    let run = kore_usage(ledger, args);
    assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
    run.stdout
}

/// `usage --format json` summed per value of `key` across accounts: (bytes, events).
fn usage_by(ledger: &UsageLedger, key: &str, extra: &[&str]) -> BTreeMap<String, (u64, u64)> {
    let mut args = vec!["usage", "--start", START, "--end", END, "--format", "json"];
    args.extend(extra);
    let records: Vec<Value> = serde_json::from_str(&ok(ledger, &args)).unwrap();
    let mut sums = BTreeMap::new();
    for r in records {
        let value = r[key].as_str().unwrap_or("(none)").to_owned();
        let sum: &mut (u64, u64) = sums.entry(value).or_default();
        sum.0 += r["data_total"].as_u64().unwrap();
        sum.1 += r["usage_events"].as_u64().unwrap();
    }
    sums
}

fn expected_by(
    events: &[SampleEvent],
    value: impl Fn(&SampleEvent) -> Option<String>,
) -> BTreeMap<String, (u64, u64)> {
    let mut sums = BTreeMap::new();
    for e in events {
        if let Some(value) = value(e) {
            let sum: &mut (u64, u64) = sums.entry(value).or_default();
            sum.0 += e.window.0 + e.window.1;
            sum.1 += 1;
        }
    }
    sums
}

#[tokio::test]
async fn usage_by_customer_and_zone_equals_an_independent_attribution() {
    let ledger = fresh_ledger("customers").await;
    let (events, deliveries) = traffic();
    for batch in deliveries.chunks(100) {
        store_deliveries(&ledger, batch).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.csv");
    let zones = dir.path().join("zones.json");
    std::fs::write(&customers, customers_file()).unwrap();
    std::fs::write(&zones, ZONES_FILE).unwrap();

    // Without zones, a zone query says what to do.
    let run = kore_usage(
        &ledger,
        &["usage", "--start", START, "--end", END, "--group", "zone"],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("zones apply"), "{}", run.stderr);

    assert!(
        ok(
            &ledger,
            &["customers", "apply", customers.to_str().unwrap()]
        )
        .contains("4 rows")
    );
    assert!(ok(&ledger, &["zones", "apply", zones.to_str().unwrap()]).contains("3 zones"));
    assert_eq!(
        ok(&ledger, &["customers", "list", "--format", "csv"]),
        customers_file()
    );

    let customer = |e: &SampleEvent| Some(expected_customer(e).to_owned());
    let zone = |e: &SampleEvent| Some(expected_zone(e).to_owned());
    for granularity in ["all", "day", "hour"] {
        let g = ["--granularity", granularity];
        assert_eq!(
            usage_by(
                &ledger,
                "customer_id",
                &[&g[..], &["--group", "customer"]].concat()
            ),
            expected_by(&events, customer),
            "by customer, granularity {granularity}"
        );
    }
    assert_eq!(
        usage_by(&ledger, "zone", &["--group", "zone"]),
        expected_by(&events, zone)
    );
    // Filters: one customer's usage by fleet (its fleet 2 SIMs, and the moved ones once moved),
    // and one zone's by customer.
    assert_eq!(
        usage_by(
            &ledger,
            "fleet_sid",
            &["--customer", "initech", "--group", "fleet"]
        ),
        expected_by(&events, |e| (expected_customer(e) == "initech")
            .then(|| e.fleet_sid.clone()))
    );
    assert_eq!(
        usage_by(
            &ledger,
            "customer_id",
            &["--zone", "EU", "--group", "customer"]
        ),
        expected_by(&events, |e| {
            (expected_zone(e) == "EU").then(|| expected_customer(e).to_owned())
        })
    );
    assert_eq!(
        usage_by(
            &ledger,
            "customer_id",
            &["--customer", "-", "--group", "customer"]
        )
        .len(),
        1,
        "usage no row assigns is customer -, never dropped"
    );

    // The HTML report's customer and zone groupings say the same.
    for (group, expected) in [
        ("customer", expected_by(&events, customer)),
        ("zone", expected_by(&events, zone)),
    ] {
        let page = dir.path().join(format!("{group}.html"));
        let out = page.to_str().unwrap();
        ok(
            &ledger,
            &[
                "report-html",
                "--start",
                START,
                "--end",
                END,
                "--group",
                group,
                "--out",
                out,
            ],
        );
        let page = std::fs::read_to_string(&page).unwrap();
        let open = "<script type=\"application/json\" id=\"kore-usage-report\">";
        let block = &page[page.find(open).unwrap() + open.len()..];
        let figures: Value =
            serde_json::from_str(&block[..block.find("</script>").unwrap()]).unwrap();
        let reported: BTreeMap<String, (u64, u64)> = figures["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let sum = (
                    g["data_total"].as_u64().unwrap(),
                    g["usage_events"].as_u64().unwrap(),
                );
                (g["value"].as_str().unwrap().to_owned(), sum)
            })
            .collect();
        assert_eq!(reported, expected, "report-html --group {group}");
    }
}

#[tokio::test]
async fn bad_files_are_refused_whole_naming_the_place_and_change_nothing() {
    let ledger = fresh_ledger("customers-refused").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, customers_file()).unwrap();
    ok(&ledger, &["customers", "apply", good.to_str().unwrap()]);

    let overlapping = dir.path().join("overlapping.csv");
    std::fs::write(
        &overlapping,
        format!(
            "{}other,,{FLEET_2},,,2024-11-02T00:00:00Z,\n",
            customers_file()
        ),
    )
    .unwrap();
    let run = kore_usage(
        &ledger,
        &["customers", "apply", overlapping.to_str().unwrap()],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("lines 3 and 6") && run.stderr.contains("overlaps"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ok(&ledger, &["customers", "list", "--format", "csv"]),
        customers_file(),
        "the mapping is unchanged"
    );

    let zones = dir.path().join("zones.json");
    std::fs::write(
        &zones,
        r#"{"zones": [{"name": "EU", "countries": ["DE"]}]}"#,
    )
    .unwrap();
    let run = kore_usage(&ledger, &["zones", "apply", zones.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("exactly one zone must be the default"),
        "{}",
        run.stderr
    );
    assert!(ok(&ledger, &["zones", "list"]).contains("No zones applied"));

    // Plans: applied and read back as given; a float price is refused, naming it.
    let plans = dir.path().join("plans.json");
    let file = r#"{"plans": [{"id": "plan-a", "currency": "EUR", "unit": "MB",
        "rounding": {"increment": "1", "scope": "sim"}, "prices": {"EU": "0.02", "ROW": "0.50"},
        "allowance": {"bytes": 500000000, "per": "customer"}, "sim_fee": "1.00"}]}"#;
    std::fs::write(&plans, file).unwrap();
    assert!(ok(&ledger, &["plans", "apply", plans.to_str().unwrap()]).contains("1 plan applied"));
    let listed: Value =
        serde_json::from_str(&ok(&ledger, &["plans", "list", "--format", "json"])).unwrap();
    assert_eq!(listed, serde_json::from_str::<Value>(file).unwrap());
    std::fs::write(&plans, file.replace(r#""EU": "0.02""#, r#""EU": 0.02"#)).unwrap();
    let run = kore_usage(&ledger, &["plans", "apply", plans.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("plans[0].prices.EU"), "{}", run.stderr);
    assert!(
        ok(&ledger, &["plans", "list"]).contains("plan-a"),
        "unchanged"
    );
}

/// Parts are keyed by the text's hash: an apply that crashed after writing parts of its own,
/// or a concurrent one that lost, cannot spoil what a later apply puts in force.
#[tokio::test]
async fn a_document_applied_after_a_crashed_apply_reads_back_whole() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use kore_ingest_aws::ledger::keys;
    use kore_ingest_core::closes::sha256_hex;

    let ledger = fresh_ledger("documents").await;
    let documents = ledger.documents();
    assert!(documents.put("x", "first\n").await.unwrap());
    // A crashed apply of "second\n": a part of garbage under its partition, head not moved.
    ledger
        .table()
        .client()
        .put_item()
        .table_name(ledger.table_name())
        .item(
            "pk",
            AttributeValue::S(keys::document_parts_pk("x", &sha256_hex("second\n"))),
        )
        .item("sk", AttributeValue::S(keys::part_sk(1)))
        .item("z", AttributeValue::B(vec![0xde, 0xad].into()))
        .send()
        .await
        .unwrap();
    assert_eq!(documents.get("x").await.unwrap().unwrap().text, "first\n");
    // The next apply, of another text, writes under that text's own partition: the crashed
    // attempt's stray part is never read (keyed by version, it would have been read as the
    // new version's second part, and every read after failed its hash check).
    assert!(documents.put("x", "third\n").await.unwrap());
    let read = documents.get("x").await.unwrap().unwrap();
    assert_eq!((read.text.as_str(), read.version), ("third\n", 2));
}
