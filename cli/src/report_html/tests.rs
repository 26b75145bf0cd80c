//! The model and the rendering without DynamoDB: hand-made cells in, figures and a page out,
//! the page compared with a golden file (`UPDATE_GOLDEN=1 cargo test -p kore-usage
//! report_html` rewrites it after a change meant to show).

use chrono::{DateTime, TimeZone, Utc};
use kore_ingest_core::alerts::{Alert, AlertKind};
use kore_ingest_core::event::DataVolume;
use kore_ingest_core::time::TimeRange;
use kore_ingest_core::usage::{
    Booking, BookingNames, HourUsage, SessionSummary, UsageCell, UsageFilters,
};

use super::model::{self, Buckets, Dimension, Heading, Scope, Source};
use super::render;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/report.html");

fn hour(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 11, day, hour, 0, 0).unwrap()
}

fn cell(
    sim: usize,
    fleet: usize,
    network: Option<(&str, &str, &str)>,
    at: DateTime<Utc>,
    bytes: (u64, u64),
) -> UsageCell {
    UsageCell {
        booking: Booking {
            sim_sid: format!("HS{sim:032}"),
            account_sid: Some("AC00000000000000000000000000000001".into()),
            fleet_sid: Some(format!("HF{fleet:032}")),
            network_sid: network.map(|n| n.0.to_owned()),
            iso_country: network.map(|n| n.2.to_owned()),
        },
        hour: at,
        usage: HourUsage {
            usage: DataVolume {
                upload: bytes.0,
                download: bytes.1,
                total: bytes.0 + bytes.1,
            },
            events: 1,
        },
        names: BookingNames {
            sim_iccid: Some(format!("89883070000012345{sim:03}")),
            sim_unique_name: Some(if sim == 2 {
                "<script>alert(1)</script>".into()
            } else {
                format!("meter \"{sim}\" & co")
            }),
            network_name: network.map(|n| n.1.to_owned()),
        },
    }
}

const DE: (&str, &str, &str) = (
    "HW00000000000000000000000000000001",
    "Telekom <b>DE</b>",
    "DE",
);
const FR: (&str, &str, &str) = ("HW00000000000000000000000000000002", "Orange & Co", "FR");

/// Eight fleets, SIM 1 moving from fleet 2 to fleet 3, roaming, a cell
/// without a network, two days of hours.
fn cells() -> Vec<UsageCell> {
    let mut cells = Vec::new();
    for sim in 0..12usize {
        for h in 0..48u32 {
            if !(sim as u32 + h).is_multiple_of(5) {
                continue;
            }
            let fleet = match sim {
                1 if h >= 24 => 3,
                s => s % 8 + 1,
            };
            let network = match h % 3 {
                0 => Some(DE),
                1 => Some(FR),
                _ => None,
            };
            let at = hour(3 + h / 24, h % 24);
            cells.push(cell(
                sim,
                fleet,
                network,
                at,
                (
                    100 * sim as u64 + 7,
                    10_000 * (sim as u64 + 1) + u64::from(h),
                ),
            ));
        }
    }
    cells
}

fn scope() -> Scope {
    Scope {
        range: TimeRange::new(hour(3, 0), hour(5, 0)).unwrap(),
        buckets: Some(Buckets::Hour),
        group: Dimension::Fleet,
        filters: UsageFilters::default(),
        top: 12,
        home_countries: vec!["DE".into()],
        customers: None,
        zones: None,
    }
}

fn heading() -> Heading {
    Heading {
        title: "Acme & <Partners>, 3 and 4 November".into(),
        generated_at: "2024-12-01T00:00:00Z".into(),
        source: Source::Ledger,
    }
}

fn alerts() -> Vec<Alert> {
    let alert = |kind, day: u32| Alert {
        rule_id: "r".into(),
        kind,
        subject: "HS1".into(),
        period_start: format!("2024-11-0{day}T00:00:00Z"),
        threshold: Some(1),
        value: 2,
        crossed_by: None,
        raised_at: "2024-11-05T00:00:00Z".into(),
    };
    vec![
        alert(AlertKind::Usage, 3),
        alert(AlertKind::Usage, 3),
        alert(AlertKind::Silence, 4),
    ]
}

fn page() -> String {
    let scope = scope();
    let mut figures = model::figures(&scope, heading(), &cells(), &alerts()).unwrap();
    let gap = SessionSummary {
        sim_sid: "HS00000000000000000000000000000011".into(),
        session_sid: "PI1".into(),
        start_time: Some("2024-11-03T10:00:00Z".into()),
        end_time: Some("2024-11-03T11:00:00Z".into()),
        windows: DataVolume {
            upload: 1,
            download: 2,
            total: 3,
        },
        windows_received: 1,
        cumulative: Some(DataVolume {
            upload: 2,
            download: 4,
            total: 6,
        }),
    };
    let outside = SessionSummary {
        session_sid: "PI2".into(),
        start_time: Some("2024-10-01T10:00:00Z".into()),
        end_time: Some("2024-10-01T11:00:00Z".into()),
        ..gap.clone()
    };
    figures.sessions_with_gaps = model::gap_sessions(&scope, &[gap, outside]);
    render::page(&figures).unwrap()
}

#[test]
fn the_page_is_the_golden_file() {
    let page = page();
    assert_eq!(
        page,
        super::tests::page(),
        "the same figures, the same bytes"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &page).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).expect("the golden file");
    assert!(
        page == golden,
        "the page differs from {GOLDEN}; UPDATE_GOLDEN=1 rewrites it"
    );
}

#[test]
fn figures_group_a_moved_sim_under_both_fleets_and_chart_the_rest_as_other() {
    let figures = model::figures(&scope(), heading(), &cells(), &[]).unwrap();
    // Fleets 1..=8: eight lines, the eighth charted as "other".
    assert_eq!(figures.groups.len(), 8);
    let page = render::page(&figures).unwrap();
    assert!(page.contains("other (1 more)"));
    let moved = figures
        .top_sims
        .iter()
        .find(|s| s.sim_sid.ends_with("01"))
        .unwrap();
    assert_eq!(moved.fleets.len(), 2, "{moved:?}");
    assert!(
        figures
            .top_sims
            .iter()
            .filter(|s| s.fleets.len() == 2)
            .count()
            == 1
    );
    // The groups add up to the total; so do the buckets.
    let sum: u64 = figures.groups.iter().map(|g| g.sum.data_total).sum();
    assert_eq!(sum, figures.total.data_total);
    let buckets: u64 = figures.buckets.iter().map(|b| b.sum.data_total).sum();
    assert_eq!(buckets, figures.total.data_total);
    assert_eq!(figures.buckets.len(), 48);
    // Roaming: France; the cells without a network are unknown, not roaming.
    let roaming = figures.roaming.unwrap();
    let france = figures
        .countries
        .iter()
        .find(|c| c.value.as_deref() == Some("FR"))
        .unwrap();
    let unknown = figures
        .countries
        .iter()
        .find(|c| c.value.is_none())
        .unwrap();
    assert_eq!(roaming.roaming_data_total, france.sum.data_total);
    assert_eq!(roaming.unknown_data_total, unknown.sum.data_total);
    assert_eq!(figures.alerts_per_day.len(), 0);
}

#[test]
fn names_are_text_and_the_json_block_cannot_be_closed_early() {
    let page = page();
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("Telekom &lt;b&gt;DE&lt;/b&gt;"));
    assert!(page.contains("Acme &amp; &lt;Partners&gt;"));
    assert_eq!(page.matches("<script").count(), 1);
    assert_eq!(page.matches("</script>").count(), 1);
    assert!(page.contains("\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"));
}

/// Session times come with milliseconds; the period's bounds are compared as times.
#[test]
fn gap_sessions_are_those_that_touch_the_period_by_time_not_text() {
    let session = |sid: &str, start: Option<&str>, end: Option<&str>| SessionSummary {
        sim_sid: "HS1".into(),
        session_sid: sid.into(),
        start_time: start.map(str::to_owned),
        end_time: end.map(str::to_owned),
        windows: DataVolume {
            upload: 0,
            download: 1,
            total: 1,
        },
        windows_received: 1,
        cumulative: Some(DataVolume {
            upload: 0,
            download: 2,
            total: 2,
        }),
    };
    let sessions = [
        session(
            "PIstarts-at-the-end",
            Some("2024-11-05T00:00:00.000Z"),
            None,
        ),
        session(
            "PIends-just-inside",
            Some("2024-11-02T23:00:00.000Z"),
            Some("2024-11-03T00:00:00.500Z"),
        ),
        session(
            "PIends-before",
            Some("2024-11-02T22:00:00.000Z"),
            Some("2024-11-02T23:59:59.999Z"),
        ),
        session("PIwithout-times", None, None),
    ];
    let shown: Vec<String> = model::gap_sessions(&scope(), &sessions)
        .into_iter()
        .map(|s| s.session_sid)
        .collect();
    assert_eq!(shown, ["PIwithout-times", "PIends-just-inside"]);
}
