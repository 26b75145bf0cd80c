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
    customer_at(&e.sim_sid, &e.fleet_sid, &e.account_sid, hour)
}

/// The customer of a SIM in a fleet and account at `hour`, by the rows of `customers_file`.
fn customer_at(sim_sid: &str, fleet: &str, account: &str, hour: DateTime<Utc>) -> &'static str {
    let within = |from: &str, to: Option<&str>| at(from) <= hour && to.is_none_or(|t| hour < at(t));
    if sim_sid == sim(7) && within("2024-11-03T05:00:00Z", Some("2024-11-04T05:00:00Z")) {
        return "sim-owner";
    }
    if fleet == FLEET_2 {
        return if within("2024-11-01T00:00:00Z", Some("2024-11-03T12:00:00Z")) {
            "globex"
        } else {
            "initech"
        };
    }
    if account == ACCOUNT_A { "acme" } else { "-" }
}

fn expected_zone(e: &SampleEvent) -> &'static str {
    match &e.network {
        Some((sid, _, _)) if sid == US_HOME => "US-home",
        Some((_, _, country)) if country == "DE" || country == "FR" => "EU",
        _ => "ROW",
    }
}

/// SIM `n`'s account, fleet (SIMs 0 to 5 move from fleet 1 to fleet 2 at 08:00 on the 3rd),
/// session and a network (or none) for a window ending at `end`.
fn place(e: &mut SampleEvent, n: usize, end: DateTime<Utc>, rng: &mut fastrand::Rng) {
    e.window_start = Some(end - Duration::minutes(15));
    e.account_sid = if n.is_multiple_of(2) {
        ACCOUNT_A
    } else {
        ACCOUNT_B
    }
    .into();
    let moved = n < 6 && end >= at("2024-11-03T08:00:00Z");
    e.fleet_sid = if moved || n.is_multiple_of(3) {
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
            place(&mut e, n, end, &mut rng);
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
    usage_in(ledger, (START, END), key, extra)
}

/// [`usage_by`] over another range.
fn usage_in(
    ledger: &UsageLedger,
    (start, end): (&str, &str),
    key: &str,
    extra: &[&str],
) -> BTreeMap<String, (u64, u64)> {
    let mut args = vec!["usage", "--start", start, "--end", end, "--format", "json"];
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

const PERIOD_A: (&str, &str) = ("2024-11-02T00:00:00Z", "2024-11-04T00:00:00Z");
const PERIOD_B: (&str, &str) = ("2024-11-04T00:00:00Z", "2024-11-06T00:00:00Z");

/// acme's plan: whole MB per SIM, EU and ROW priced, US-home not, a fee per active SIM.
const PLANS_FILE: &str = r#"{"plans": [{"id": "plan-a", "currency": "EUR", "unit": "MB",
  "rounding": {"increment": "1", "scope": "sim"}, "prices": {"EU": "0.02", "ROW": "0.50"},
  "sim_fee": "1.00"}]}"#;

fn hour_of(e: &SampleEvent) -> DateTime<Utc> {
    e.time.duration_trunc(Duration::hours(1)).unwrap()
}

fn in_period(e: &SampleEvent, (start, end): (&str, &str)) -> bool {
    (at(start)..at(end)).contains(&hour_of(e))
}

/// Usage booked into period A after it was closed, on the 3rd: SIM 7 before and in its hours
/// as sim-owner's, fleet 2's SIMs on both sides of its noon change; some sent twice.
fn late_traffic() -> (
    Vec<SampleEvent>,
    Vec<(String, kore_ingest_core::delivery::Delivery)>,
) {
    let mut rng = fastrand::Rng::with_seed(2403);
    let mut events = Vec::new();
    let mut deliveries = Vec::new();
    for k in 0..24usize {
        let n = [7, 0, 3, 6, 9, 2, 4, 11][k % 8];
        let end = at("2024-11-03T00:00:00Z") + Duration::minutes(rng.i64(1..24 * 60));
        let mut e = SampleEvent::usage_update(
            &format!("EZ{k:04}ffff{:024x}", rng.u64(..)),
            &sim(n),
            &end.to_rfc3339(),
            (rng.u64(0..50_000), rng.u64(0..3_000_000)),
        );
        place(&mut e, n, end, &mut rng);
        deliveries.push((e.kore_json(), webhook(&format!("late-{k}"))));
        if k % 3 == 0 {
            deliveries.push((e.twilio_json(), kinesis(9_000 + k as u64)));
        }
        events.push(e);
    }
    (events, deliveries)
}

/// The price of one MB of acme's plan in a zone.
fn price(zone: &str) -> Option<rust_decimal::Decimal> {
    match zone {
        "EU" => Some("0.02".parse().unwrap()),
        "ROW" => Some("0.50".parse().unwrap()),
        _ => None,
    }
}

/// Whole MB, rounded up.
fn whole_mb(bytes: u64) -> u64 {
    bytes.div_ceil(1_000_000)
}

/// What a line says: (bytes, quantity, amount).
type Billed = (u64, String, Option<String>);

/// The data lines of a period, computed here: per customer and zone the bytes; acme's
/// quantity is each SIM's MB rounded up, summed, at its zone's price; others' the bytes.
fn expected_data(events: &[&SampleEvent]) -> BTreeMap<(String, String), Billed> {
    let mut per_sim: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for e in events {
        let key = (
            expected_customer(e).to_owned(),
            expected_zone(e).to_owned(),
            e.sim_sid.clone(),
        );
        *per_sim.entry(key).or_default() += e.window.0 + e.window.1;
    }
    let mut lines: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for ((customer, zone, _), bytes) in per_sim {
        let line = lines.entry((customer.clone(), zone)).or_default();
        line.0 += bytes;
        line.1 += if customer == "acme" {
            whole_mb(bytes)
        } else {
            bytes
        };
    }
    lines
        .into_iter()
        .map(|((customer, zone), (bytes, quantity))| {
            let line = billed(&customer, &zone, bytes, quantity);
            ((customer, zone), line)
        })
        .collect()
}

/// A line of `customer` in `zone`: acme's priced by its plan, the others' not.
fn billed(customer: &str, zone: &str, bytes: u64, quantity: u64) -> Billed {
    let amount = (customer == "acme")
        .then(|| price(zone))
        .flatten()
        .map(|p| {
            (p * rust_decimal::Decimal::from(quantity))
                .normalize()
                .to_string()
        });
    (bytes, quantity.to_string(), amount)
}

/// The SIM fee lines of a period, computed here: a SIM-day (a day with usage booked, these
/// SIMs send no callbacks) goes to the customer of the SIM, in the fleet its usage was booked
/// to that day, at midnight: (SIMs, SIM-days) per customer.
fn expected_sim_fees(events: &[&SampleEvent]) -> BTreeMap<String, (u64, u64)> {
    let mut days: BTreeMap<(String, chrono::NaiveDate), (String, String)> = BTreeMap::new();
    for e in events {
        let day = (e.sim_sid.clone(), e.time.date_naive());
        let (fleet, _) = days
            .entry(day)
            .or_insert_with(|| (e.fleet_sid.clone(), e.account_sid.clone()));
        *fleet = fleet.clone().max(e.fleet_sid.clone());
    }
    let mut fees: BTreeMap<String, (std::collections::BTreeSet<String>, u64)> = BTreeMap::new();
    for ((sim, day), (fleet, account)) in days {
        let midnight = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
        let fee = fees
            .entry(customer_at(&sim, &fleet, &account, midnight).to_owned())
            .or_default();
        fee.0.insert(sim);
        fee.1 += 1;
    }
    fees.into_iter()
        .map(|(customer, (sims, days))| (customer, (sims.len() as u64, days)))
        .collect()
}

/// The lines of `kind` of an invoice, keyed by customer and zone.
fn lines_of_kind(lines: &[Value], kind: &str) -> BTreeMap<(String, String), Billed> {
    lines
        .iter()
        .filter(|l| l["kind"] == kind)
        .map(|l| {
            let key = (
                l["customer_id"].as_str().unwrap().to_owned(),
                l["zone"].as_str().unwrap_or("").to_owned(),
            );
            let billed = (
                l["bytes"].as_u64().unwrap(),
                l["quantity"].as_str().unwrap().to_owned(),
                l["amount"].as_str().map(str::to_owned),
            );
            (key, billed)
        })
        .collect()
}

/// Moves the time the adjustments of the period's close were recorded (`wa`) back by `by`.
async fn backdate_adjustments(ledger: &UsageLedger, (start, end): (&str, &str), by: Duration) {
    use aws_sdk_dynamodb::types::AttributeValue;
    use kore_ingest_aws::ledger::keys;
    let client = ledger.table().client();
    let pk = keys::close_pk(&format!("*#{start}#{end}"));
    let items = client
        .query()
        .table_name(ledger.table_name())
        .key_condition_expression("pk = :pk AND begins_with(sk, :adj)")
        .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
        .expression_attribute_values(":adj", AttributeValue::S(keys::ADJUSTMENT_SK_PREFIX.into()))
        .send()
        .await
        .unwrap();
    let earlier = (Utc::now() - by).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for item in items.items() {
        client
            .update_item()
            .table_name(ledger.table_name())
            .key("pk", AttributeValue::S(pk.clone()))
            .key("sk", item["sk"].clone())
            .update_expression("SET wa = :wa")
            .expression_attribute_values(":wa", AttributeValue::S(earlier.clone()))
            .send()
            .await
            .unwrap();
    }
    assert!(!items.items().is_empty(), "adjustments to backdate");
}

fn invoice(ledger: &UsageLedger, (start, end): (&str, &str)) -> (String, Vec<Value>) {
    let text = ok(
        ledger,
        &[
            "invoice", "--start", start, "--end", end, "--format", "json",
        ],
    );
    let lines = serde_json::from_str(&text).unwrap();
    (text, lines)
}

fn close(ledger: &UsageLedger, (start, end): (&str, &str)) {
    ok(
        ledger,
        &[
            "close", "--start", start, "--end", end, "--force", "--settle", "0s",
        ],
    );
}

#[tokio::test]
async fn closed_periods_are_invoiced_as_an_independent_computation_bills_them() {
    let ledger = fresh_ledger("invoice").await;
    let (events, deliveries) = traffic();
    for batch in deliveries.chunks(100) {
        store_deliveries(&ledger, batch).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    ok(
        &ledger,
        &["customers", "apply", &file("c.csv", &customers_file())],
    );
    ok(&ledger, &["zones", "apply", &file("z.json", ZONES_FILE)]);
    ok(&ledger, &["plans", "apply", &file("p.json", PLANS_FILE)]);

    // Period A, closed: by customer and zone as the close billed them.
    let in_a: Vec<&SampleEvent> = events.iter().filter(|e| in_period(e, PERIOD_A)).collect();
    let owned = |events: &[&SampleEvent]| events.iter().map(|e| (*e).clone()).collect::<Vec<_>>();
    let customer = |e: &SampleEvent| Some(expected_customer(e).to_owned());
    let zone = |e: &SampleEvent| Some(expected_zone(e).to_owned());
    close(&ledger, PERIOD_A);
    let closed =
        |group: &str, key: &str| usage_in(&ledger, PERIOD_A, key, &["--closed", "--group", group]);
    let closed_by_customer = closed("customer", "customer_id");
    assert_eq!(closed_by_customer, expected_by(&owned(&in_a), customer));
    assert_eq!(closed("zone", "zone"), expected_by(&owned(&in_a), zone));

    // Late usage booked into A: the live answer takes it, the closed one does not.
    let (late, late_deliveries) = late_traffic();
    store_deliveries(&ledger, &late_deliveries).await;
    let with_late: Vec<&SampleEvent> = in_a.iter().copied().chain(&late).collect();
    assert_eq!(
        usage_in(&ledger, PERIOD_A, "customer_id", &["--group", "customer"]),
        expected_by(&owned(&with_late), customer)
    );
    assert_eq!(closed("customer", "customer_id"), closed_by_customer);

    // A's invoice: data lines from the snapshot, SIM fees from the SIM-days (late ones too).
    let (text_a, lines_a) = invoice(&ledger, PERIOD_A);
    assert_eq!(lines_of_kind(&lines_a, "data"), expected_data(&in_a));
    let fees: BTreeMap<String, (u64, u64)> = lines_a
        .iter()
        .filter(|l| l["kind"] == "sim_fee")
        .map(|l| {
            let counts = (l["sims"].as_u64().unwrap(), l["sim_days"].as_u64().unwrap());
            (l["customer_id"].as_str().unwrap().to_owned(), counts)
        })
        .collect();
    assert_eq!(fees, expected_sim_fees(&with_late));
    let acme_fee = lines_a
        .iter()
        .find(|l| l["kind"] == "sim_fee" && l["customer_id"] == "acme")
        .unwrap();
    assert_eq!(acme_fee["amount"], acme_fee["quantity"], "1.00 per SIM");
    assert!(lines_a.iter().all(|l| l["kind"] != "adjustment"));
    for line in &lines_a {
        for field in [
            "id",
            "customer_id",
            "kind",
            "bytes",
            "quantity",
            "unit",
            "unit_price",
        ] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
        assert_eq!(line["period"]["start_time"], PERIOD_A.0);
    }

    // B's invoice: its own usage, and A's late usage as adjustments, billed by its hour. A
    // late event goes to the first close whose snapshot came ten minutes (a commit's longest
    // flight) after its commit was built: as if B were closed that much later.
    backdate_adjustments(&ledger, PERIOD_A, Duration::minutes(20)).await;
    close(&ledger, PERIOD_B);
    let (_, lines_b) = invoice(&ledger, PERIOD_B);
    let in_b: Vec<&SampleEvent> = events.iter().filter(|e| in_period(e, PERIOD_B)).collect();
    assert_eq!(lines_of_kind(&lines_b, "data"), expected_data(&in_b));
    let mut adjustments: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in &late {
        *adjustments
            .entry((expected_customer(e).into(), expected_zone(e).into()))
            .or_default() += e.window.0 + e.window.1;
    }
    let expected_adjustments: BTreeMap<(String, String), Billed> = adjustments
        .into_iter()
        .map(|((customer, zone), bytes)| {
            let quantity = if customer == "acme" {
                whole_mb(bytes)
            } else {
                bytes
            };
            let line = billed(&customer, &zone, bytes, quantity);
            ((customer, zone), line)
        })
        .collect();
    assert_eq!(lines_of_kind(&lines_b, "adjustment"), expected_adjustments);
    assert!(
        lines_b
            .iter()
            .filter(|l| l["kind"] == "adjustment")
            .all(|l| l["adjusts"]["start_time"] == PERIOD_A.0)
    );

    // The same period gives the same lines, byte for byte; a mapping changed after the close
    // changes none of what the close billed.
    assert_eq!(invoice(&ledger, PERIOD_A).0, text_a);
    let renamed = customers_file().replace("globex", "globex-renamed");
    ok(&ledger, &["customers", "apply", &file("c2.csv", &renamed)]);
    assert_eq!(closed("customer", "customer_id"), closed_by_customer);
    let (_, after) = invoice(&ledger, PERIOD_A);
    assert_eq!(lines_of_kind(&after, "data"), expected_data(&in_a));
}
