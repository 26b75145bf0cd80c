//! `kore-usage report-html` as a person and a tool see it: its figures (the embedded JSON
//! and the tables) equal `kore-usage usage --format json` for the same filters over traffic
//! from both providers with retries, roaming and a fleet move; the page is the same bytes
//! twice, shows a SIM named like markup as text, validates (the Nu HTML checker), and
//! headless Chromium draws it with the share bar split as the figures say.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};
use kore_ingest_aws::ledger::UsageLedger;
use kore_test_support::*;
use serde_json::Value;

const ACCOUNT_A: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ACCOUNT_B: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const START: &str = "2024-11-03T00:00:00Z";
const END: &str = "2024-11-06T00:00:00Z";
/// A SIM unique name a user could type: it must show as text, never run.
const MARKUP_NAME: &str = "<script>alert(1)</script>";
/// Fixed, so two runs give the same bytes.
const SOURCE_DATE_EPOCH: &str = "1733011200";

const NETWORKS: [(&str, &str, &str); 4] = [
    ("HWde000000000000000000000000000001", "Telekom.de", "DE"),
    ("HWfr000000000000000000000000000001", "Orange F", "FR"),
    ("HWus000000000000000000000000000001", "AT&T", "US"),
    ("HWus000000000000000000000000000002", "T-Mobile <US>", "US"),
];

fn fleet(n: usize) -> String {
    format!("HF{n:032}")
}

/// 36 SIMs in two accounts and nine fleets (more than the seven the charts name), roaming
/// over four networks in three countries or none, over three days; SIMs 0 to 3 move to
/// another fleet on the second day; SIM 5 is named like markup and uses the most. Each event
/// comes from KORE, Twilio or both, a third of them once more.
fn traffic() -> Vec<(String, kore_ingest_core::delivery::Delivery)> {
    let mut rng = fastrand::Rng::with_seed(26);
    let start = Utc.with_ymd_and_hms(2024, 11, 3, 0, 0, 0).unwrap();
    let moved_at = start + Duration::days(1);
    let mut deliveries = Vec::new();
    for sim in 0..36usize {
        for window in 0..10usize {
            let end = start + Duration::seconds(rng.i64(0..3 * 24 * 3600));
            let heavy = if sim == 5 { 40 } else { 1 };
            let mut e = SampleEvent::usage_update(
                &format!("EZ{sim:04}{window:04}{:024x}", rng.u64(..)),
                &format!("HS{sim:032}"),
                &end.to_rfc3339(),
                (rng.u64(0..40_000) * heavy, rng.u64(0..900_000) * heavy),
            );
            e.window_start = Some(end - Duration::minutes(15));
            e.account_sid = if sim % 2 == 0 { ACCOUNT_A } else { ACCOUNT_B }.into();
            let moved = sim < 4 && end >= moved_at;
            e.fleet_sid = fleet(sim % 9 + usize::from(moved));
            e.network = match rng.usize(0..9) {
                0 => None,
                n => {
                    let (sid, name, country) = NETWORKS[n % NETWORKS.len()];
                    Some((sid.into(), name.into(), country.into()))
                }
            };
            e.sim_unique_name = Some(if sim == 5 {
                MARKUP_NAME.to_owned()
            } else {
                format!("meter-{sim:02}")
            });
            e.session_sid = format!("PI{sim:032}");
            let tag = format!("{sim}-{window}");
            let kore = (e.kore_json(), webhook(&format!("req-{tag}")));
            let twilio = (e.twilio_json(), kinesis((sim * 100 + window) as u64));
            match rng.usize(0..3) {
                0 => deliveries.push(kore.clone()),
                1 => deliveries.push(twilio.clone()),
                _ => deliveries.extend([kore.clone(), twilio.clone()]),
            }
            if rng.usize(0..3) == 0 {
                deliveries.push(if rng.bool() { kore } else { twilio });
            }
        }
    }
    rng.shuffle(&mut deliveries);
    deliveries
}

fn run(ledger: &UsageLedger, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kore-usage"))
        .args(["--table", ledger.table_name()])
        .args(args)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .output()
        .expect("run kore-usage");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        output.status.success(),
        "kore-usage {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn usage_json(ledger: &UsageLedger, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["usage", "--start", START, "--end", END, "--format", "json"];
    all.extend(args);
    serde_json::from_str::<Value>(&run(ledger, &all))
        .expect("usage JSON")
        .as_array()
        .expect("records")
        .clone()
}

/// The report's page, written to `path`.
fn report(ledger: &UsageLedger, path: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "report-html",
        "--start",
        START,
        "--end",
        END,
        "--out",
        path.to_str().unwrap(),
    ];
    all.extend(args);
    run(ledger, &all);
    std::fs::read_to_string(path).expect("the page")
}

/// The JSON block, read back as a tool would.
fn embedded(page: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"kore-usage-report\">";
    let start = page.find(open).expect("the JSON block") + open.len();
    let end = start + page[start..].find("</script>").expect("its end");
    serde_json::from_str(&page[start..end]).expect("JSON")
}

/// `(data_upload, data_download, data_total, usage_events)` of a record or figure.
fn numbers(v: &Value) -> [u64; 4] {
    ["data_upload", "data_download", "data_total", "usage_events"]
        .map(|k| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

fn add(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
}

/// `usage` records summed per value of `key` across accounts (and per `period` start when
/// `by_bucket`).
fn per_value(
    records: &[Value],
    key: &str,
    by_bucket: bool,
) -> BTreeMap<(String, Option<String>), [u64; 4]> {
    let mut sums = BTreeMap::new();
    for r in records {
        let bucket = if by_bucket {
            r["period"]["start_time"].as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        let sum = sums
            .entry((bucket, r[key].as_str().map(str::to_owned)))
            .or_insert([0; 4]);
        *sum = add(*sum, numbers(r));
    }
    sums
}

/// A report line's sum keyed like [`per_value`].
fn lines(figures: &Value) -> BTreeMap<(String, Option<String>), [u64; 4]> {
    figures
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                (String::new(), l["value"].as_str().map(str::to_owned)),
                numbers(l),
            )
        })
        .collect()
}

/// The row of a table with `data-value` (or `data-start`) `key`: its HTML up to `</tr>`.
fn row<'a>(page: &'a str, table_id: &str, attribute: &str, key: &str) -> &'a str {
    let table = &page[page
        .find(&format!("<table id=\"{table_id}\""))
        .unwrap_or_else(|| panic!("table {table_id}"))..];
    let table = &table[..table.find("</table>").unwrap()];
    let start = table
        .find(&format!("<tr {attribute}=\"{key}\">"))
        .unwrap_or_else(|| panic!("no row {key} in {table_id}"));
    let row = &table[start..];
    &row[..row.find("</tr>").unwrap()]
}

fn has_cell(row: &str, n: u64) -> bool {
    row.contains(&format!("<td class=\"n\">{n}</td>"))
}

/// Every figure of the JSON block and of the tables equals `usage` for the same filters.
fn assert_figures_equal_usage(ledger: &UsageLedger, page: &str, filters: &[&str], group: &str) {
    let figures = embedded(page);
    let key = match group {
        "fleet" => "fleet_sid",
        "network" => "network_sid",
        _ => "iso_country",
    };
    let with = |extra: &[&str]| -> Vec<String> {
        filters.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let query = |extra: &[&str]| {
        let args = with(extra);
        usage_json(ledger, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Totals.
    let total = query(&[])
        .iter()
        .fold([0; 4], |sum, r| add(sum, numbers(r)));
    assert_eq!(numbers(&figures["total"]), total, "{filters:?}");
    assert!(page.contains(&format!(
        "<th scope=\"row\">data</th><td class=\"n\">{}</td>",
        total[2]
    )));
    assert!(page.contains(&format!(
        "<th scope=\"row\">usage events</th><td class=\"n\">{}</td>",
        total[3]
    )));
    // The group's lines, and the table of them.
    let groups = per_value(&query(&["--group", group]), key, false);
    assert_eq!(lines(&figures["groups"]), groups, "{filters:?} by {group}");
    for ((_, value), sum) in &groups {
        let row = row(page, "groups", "data-value", value.as_deref().unwrap_or(""));
        assert!(has_cell(row, sum[2]) && has_cell(row, sum[3]), "{row}");
    }
    // Per day, per value.
    let days = per_value(
        &query(&["--granularity", "day", "--group", group]),
        key,
        true,
    );
    let mut reported = BTreeMap::new();
    for bucket in figures["buckets"].as_array().unwrap() {
        let start = bucket["start_time"].as_str().unwrap().to_owned();
        let row = row(page, "buckets", "data-start", &start);
        assert!(
            has_cell(row, bucket["data_total"].as_u64().unwrap()),
            "{row}"
        );
        for g in bucket["groups"].as_array().unwrap() {
            reported.insert(
                (start.clone(), g["value"].as_str().map(str::to_owned)),
                g["data_total"].as_u64().unwrap(),
            );
        }
    }
    let days_total: BTreeMap<_, _> = days.iter().map(|(k, v)| (k.clone(), v[2])).collect();
    assert_eq!(reported, days_total, "{filters:?} per day by {group}");
    // Countries and networks.
    for (dimension, key, table) in [
        ("iso-country", "iso_country", "countries-table"),
        ("network", "network_sid", "networks-table"),
    ] {
        let expected = per_value(&query(&["--group", dimension]), key, false);
        let figure = if dimension == "network" {
            "networks"
        } else {
            "countries"
        };
        assert_eq!(
            lines(&figures[figure]),
            expected,
            "{filters:?} by {dimension}"
        );
        for ((_, value), sum) in &expected {
            let row = row(page, table, "data-value", value.as_deref().unwrap_or(""));
            assert!(has_cell(row, sum[2]), "{row}");
        }
    }
    // The top SIMs: the most data, ties by SID.
    let mut sims: Vec<(String, [u64; 4])> =
        per_value(&query(&["--group", "sim"]), "sim_sid", false)
            .into_iter()
            .map(|((_, sid), sum)| (sid.expect("a SIM"), sum))
            .collect();
    assert_eq!(figures["sims_with_usage"], sims.len() as u64);
    sims.sort_by(|a, b| (b.1[2], &a.0).cmp(&(a.1[2], &b.0)));
    sims.truncate(10);
    let top: Vec<(String, [u64; 4])> = figures["top_sims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["sim_sid"].as_str().unwrap().to_owned(), numbers(s)))
        .collect();
    assert_eq!(top, sims, "{filters:?}: top SIMs");
    for (sid, sum) in &top {
        assert!(has_cell(
            row(page, "top-sims-table", "data-value", sid),
            sum[2]
        ));
    }
}

/// The colours of the share bar's legend, in order.
fn share_colours(page: &str) -> Vec<[u8; 3]> {
    let section = &page[page.find("<section id=\"shares\">").unwrap()..];
    let legend = &section[..section.find("</ul>").unwrap()];
    legend
        .split("background:#")
        .skip(1)
        .map(|rest| {
            let hex = &rest[..6];
            let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
            [byte(0), byte(2), byte(4)]
        })
        .collect()
}

fn repo_tool(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(default)
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: `scripts/install-tools node browser` installs it ({variable})",
        path.display()
    );
    path
}

/// Headless Chromium's picture of the page, as RGB rows.
fn screenshot(page: &Path, dir: &Path) -> (usize, usize, Vec<u8>) {
    let png = dir.join("report.png");
    let status = Command::new(repo_tool("CHROMIUM", ".tools/bin/chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1000,2400",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png).expect("the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("its size")];
    let info = reader.next_frame(&mut pixels).expect("its pixels");
    let step = info.color_type.samples();
    let rgb: Vec<u8> = pixels[..info.buffer_size()]
        .chunks(step)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width as usize, info.height as usize, rgb)
}

#[tokio::test]
async fn the_report_shows_exactly_what_usage_answers_and_draws_it_as_the_figures_say() {
    let ledger = fresh_ledger("report-html").await;
    for batch in traffic().chunks(100) {
        store_deliveries(&ledger, batch).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");

    // Every figure equals `usage` for the same filters, grouped three ways.
    let fleet_1 = fleet(1);
    let cases: [(&[&str], &str); 3] = [
        (&[], "fleet"),
        (&["--account", ACCOUNT_A], "network"),
        (&["--fleet", &fleet_1, "--iso-country", "DE"], "iso-country"),
    ];
    for (filters, group) in cases {
        let mut args = filters.to_vec();
        args.extend(["--group", group, "--home-country", "DE"]);
        let page = report(&ledger, &path, &args);
        assert_figures_equal_usage(&ledger, &page, filters, group);
        let figures = embedded(&page);
        let abroad: u64 = figures["countries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["value"].as_str().is_some_and(|c| c != "DE"))
            .map(|c| c["data_total"].as_u64().unwrap())
            .sum();
        assert_eq!(figures["roaming"]["roaming_data_total"], abroad);
    }

    // The same ledger twice: the same bytes. Live figures say so.
    let page = report(&ledger, &path, &["--top", "12"]);
    let again = report(&ledger, &path, &["--top", "12"]);
    assert_eq!(page, again);
    assert!(page.contains("Live figures, not an invoice"));
    assert!(page.contains("content=\"default-src 'none'; style-src 'unsafe-inline'"));

    // The SIM named like markup is text: escaped in the page, \u003c in the JSON, and the
    // only script element is the JSON block.
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "not shown as text"
    );
    assert_eq!(page.matches("<script").count(), 1);
    assert!(page.contains("T-Mobile &lt;US&gt;"));
    let figures = embedded(&page);
    assert!(
        figures["top_sims"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sim_unique_name"] == MARKUP_NAME)
    );
    // Nine fleets: seven charted, two as "other"; SIMs that moved show both fleets.
    assert_eq!(figures["groups"].as_array().unwrap().len(), 9);
    assert!(page.contains("other (2 more)"));
    assert!(
        figures["top_sims"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["fleets"].as_array().unwrap().len() == 2)
    );

    // The Nu HTML checker finds no error.
    let vnu = Command::new("java")
        .arg("-jar")
        .arg(repo_tool(
            "VNU_JAR",
            ".tools/node/node_modules/vnu-jar/build/dist/vnu.jar",
        ))
        .args(["--errors-only", "--format", "text"])
        .arg(&path)
        .output()
        .expect("run java");
    assert!(
        vnu.status.success(),
        "the Nu HTML checker: {}{}",
        String::from_utf8_lossy(&vnu.stdout),
        String::from_utf8_lossy(&vnu.stderr)
    );

    // Chromium's picture: not blank, and the share bar split as the figures say.
    let (width, height, rgb) = screenshot(&path, dir.path());
    let pixel = |x: usize, y: usize| -> [u8; 3] {
        let i = (y * width + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    let inked = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(x, y) != [255, 255, 255])
        .count();
    assert!(
        inked * 50 > width * height,
        "a blank page: {inked} inked pixels"
    );
    let colours = share_colours(&page);
    assert_eq!(colours.len(), 8, "seven fleets and other");
    // The share bar is the row with the most charted colour: wider than the columns' plot.
    let (bar_row, counts) = (0..height)
        .map(|y| {
            let counts: Vec<usize> = colours
                .iter()
                .map(|c| (0..width).filter(|&x| pixel(x, y) == *c).count())
                .collect();
            (y, counts)
        })
        .max_by_key(|(_, counts)| counts.iter().sum::<usize>())
        .unwrap();
    let drawn: usize = counts.iter().sum();
    assert!(
        (759..=761).contains(&drawn),
        "row {bar_row}: {drawn} coloured pixels"
    );
    let groups = figures["groups"].as_array().unwrap();
    let total = figures["total"]["data_total"].as_u64().unwrap() as f64;
    let mut shares: Vec<u64> = groups
        .iter()
        .take(7)
        .map(|g| g["data_total"].as_u64().unwrap())
        .collect();
    shares.push(
        groups[7..]
            .iter()
            .map(|g| g["data_total"].as_u64().unwrap())
            .sum(),
    );
    for ((count, bytes), colour) in counts.iter().zip(&shares).zip(&colours) {
        let expected = *bytes as f64 / total * drawn as f64;
        assert!(
            (*count as f64 - expected).abs() <= 1.5,
            "colour {colour:?}: {count} pixels for a share of {expected:.1}"
        );
    }
}

#[tokio::test]
async fn a_closed_report_is_the_snapshot_and_names_its_hash() {
    let ledger = fresh_ledger("report-html-closed").await;
    for batch in traffic().chunks(100) {
        store_deliveries(&ledger, batch).await;
    }
    let closed: Value = serde_json::from_str(&run(
        &ledger,
        &[
            "close", "--start", START, "--end", END, "--force", "--settle", "0s", "--format",
            "json",
        ],
    ))
    .unwrap();
    let hash = closed["snapshot_sha256"]
        .as_str()
        .expect("a hash")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let page = report(
        &ledger,
        &dir.path().join("closed.html"),
        &["--closed", "--group", "network"],
    );
    let figures = embedded(&page);
    assert_eq!(figures["source"]["kind"], "closed");
    assert_eq!(figures["source"]["snapshot_sha256"], hash.as_str());
    assert!(page.contains(&hash) && !page.contains("Live figures"));
    let expected = per_value(
        &usage_json(&ledger, &["--closed", "--group", "network"]),
        "network_sid",
        false,
    );
    assert_eq!(lines(&figures["groups"]), expected);
    assert_eq!(figures["buckets"], Value::Array(vec![]));
}
