//! The month query: a month of rollups for 10,000 SIMs loaded directly, then `usage --group
//! sim` over it, timed, with the read units it took; then `kore-usage report-html` of the
//! month, timed, and the size of the page.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use chrono::{NaiveDate, TimeZone, Utc};
use futures::StreamExt;
use kore_ingest_aws::ledger::rollup_item;
use kore_ingest_core::event::DataVolume;
use kore_ingest_core::usage::{
    Booking, BookingNames, Granularity, GroupBy, HourUsage, UsageFilters, UsageQuery,
};

use crate::measured::{HashItem, counted_ledger, day};
use crate::rows::row;

/// A month of rollups for 10,000 SIMs (every hour of every day with usage) in twelve fleets
/// and five networks, loaded directly, then the month's usage grouped by SIM, and the
/// month's HTML report by the `kore_usage` binary given.
pub async fn month_query_row(kore_usage: Option<&str>) -> Result<(), String> {
    const SIMS: usize = 10_000;
    let (ledger, _) = counted_ledger("month").await?;
    let days: Vec<NaiveDate> = (1..=30).map(|d| day(2024, 11, d)).collect();
    let hours: BTreeMap<u32, HourUsage> = (0..24)
        .map(|h| {
            let usage = DataVolume {
                upload: 12_345 + u64::from(h),
                download: 234_567,
                total: 246_912 + u64::from(h),
            };
            (h, HourUsage { usage, events: 4 })
        })
        .collect();
    let loaded = Instant::now();
    load(&ledger, SIMS, &days, &hours).await?;
    let load_time = loaded.elapsed();
    let total_items = SIMS * days.len();

    let start = Utc.with_ymd_and_hms(2024, 11, 1, 0, 0, 0).unwrap();
    let query = UsageQuery::new(
        start,
        Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0).unwrap(),
        Granularity::All,
        Some(GroupBy::Sim),
        UsageFilters::default(),
    )
    .map_err(|e| e.to_string())?;
    let reads = ledger.table().consumed_read_units();
    let started = Instant::now();
    let records = ledger
        .rollups()
        .usage(&query)
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if records.len() != SIMS || records.iter().any(|r| r.usage_events != 30 * 24 * 4) {
        return Err(format!(
            "the month query returned {} records, or wrong counts",
            records.len()
        ));
    }
    row(
        "usage --group sim for a month of 10,000 SIMs (300,000 day rollups, every hour used; loaded in advance)",
        &format!(
            "{:.1} s, {:.0} read units ({total_items} items loaded in {:.0} s)",
            elapsed.as_secs_f64(),
            ledger.table().consumed_read_units() - reads,
            load_time.as_secs_f64()
        ),
        "< 30 s",
    );
    if let Some(kore_usage) = kore_usage {
        report_row(kore_usage, ledger.table_name())?;
    }
    Ok(())
}

/// `kore-usage report-html` of the month: the whole command (its one read of the month's
/// cells, the figures, the page), and the page's size.
fn report_row(kore_usage: &str, table: &str) -> Result<(), String> {
    let page = std::env::temp_dir().join(format!("bench-report-{}.html", std::process::id()));
    let started = Instant::now();
    let output = std::process::Command::new(kore_usage)
        .args([
            "--table",
            table,
            "report-html",
            "--start",
            "2024-11-01T00:00:00Z",
        ])
        .args([
            "--end",
            "2024-12-01T00:00:00Z",
            "--home-country",
            "DE",
            "--out",
        ])
        .arg(&page)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .map_err(|e| format!("cannot run {kore_usage}: {e}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "report-html failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let bytes = std::fs::metadata(&page).map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_file(&page);
    row(
        "kore-usage report-html for the same month (10,000 SIMs, 12 fleets, 5 networks): the whole command, and the page",
        &format!(
            "{:.1} s, {:.0} KiB ({bytes} bytes)",
            elapsed.as_secs_f64(),
            bytes as f64 / 1024.0
        ),
        "< 30 s, < 1 MB",
    );
    Ok(())
}

/// Writes the rollups of `sims` SIMs for `days`, every day with `hours`.
async fn load(
    ledger: &kore_ingest_aws::ledger::UsageLedger,
    sims: usize,
    days: &[NaiveDate],
    hours: &BTreeMap<u32, HourUsage>,
) -> Result<(), String> {
    // One SIM's month at a time: 30 items, in batches of 25, built when written.
    let month_of = |sim: usize| -> Result<Vec<HashItem>, String> {
        let booking = Booking {
            sim_sid: format!("HS{sim:032}"),
            account_sid: Some("AC0a1b2c3d4e5f60718293a4b5c6d7e8f9".into()),
            fleet_sid: Some(format!("HF{:032}", sim % 12)),
            network_sid: Some(format!("HW{:032}", sim % 5)),
            iso_country: Some(["DE", "DE", "FR", "AT", "US"][sim % 5].into()),
        };
        let names = BookingNames {
            sim_iccid: Some(format!("8988307000{sim:010}")),
            sim_unique_name: Some(format!("tracker-{sim:05}")),
            network_name: Some(format!("network {}", sim % 5)),
        };
        days.iter()
            .map(|d| rollup_item(*d, &booking, hours, &names).map_err(|e| e.to_string()))
            .collect()
    };
    let client = ledger.table().client().clone();
    let table = ledger.table_name().to_owned();
    let writes = (0..sims).map(|sim| {
        let (client, table, items) = (client.clone(), table.clone(), month_of(sim));
        async move {
            for chunk in items?.chunks(25) {
                let mut pending: Vec<WriteRequest> = chunk
                    .iter()
                    .map(|item| {
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder()
                                    .set_item(Some(item.clone()))
                                    .build()
                                    .expect("a put"),
                            )
                            .build()
                    })
                    .collect();
                while !pending.is_empty() {
                    let output = client
                        .batch_write_item()
                        .request_items(&table, pending)
                        .send()
                        .await
                        .map_err(|e| format!("load: {e}"))?;
                    pending = output
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&table))
                        .unwrap_or_default();
                }
            }
            Ok::<(), String>(())
        }
    });
    let mut writes = futures::stream::iter(writes).buffer_unordered(32);
    while let Some(done) = writes.next().await {
        done?;
    }
    Ok(())
}
