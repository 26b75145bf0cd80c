//! The archive's seal of the 100,000 events the export row loaded: the Parquet it writes
//! per usage event, the read units one seal pass takes from the ledger per event, and how
//! long it takes, into a folder (the S3 upload is not measured here).

use std::time::Instant;

use chrono::NaiveDate;
use kore_ingest_aws::archive::{ArchiveStore, Archiver};
use kore_ingest_aws::ledger::UsageLedger;

use crate::figures;
use crate::rows::row;

/// Seals `days` of `ledger` (holding `events` usage events) into a new folder, and reports.
pub async fn seal_row(ledger: &UsageLedger, days: &[NaiveDate], events: u64) -> Result<(), String> {
    let folder = std::env::temp_dir().join(format!("bench-archive-{}", std::process::id()));
    let store = ArchiveStore::Folder(folder.clone());
    let archiver = Archiver {
        ledger,
        store: &store,
    };
    let reads = ledger.table().consumed_read_units();
    let started = Instant::now();
    let mut rows = 0;
    for day in days {
        let manifest = archiver.seal(*day).await.map_err(|e| e.to_string())?;
        rows += manifest.usage_events.rows;
    }
    let seconds = started.elapsed().as_secs_f64();
    let read_units = ledger.table().consumed_read_units() - reads;
    let parquet: usize = kore_test_support::archive::files_under(&folder.join("usage_events"))
        .values()
        .map(Vec::len)
        .sum();
    let _ = std::fs::remove_dir_all(&folder);
    if rows != events {
        return Err(format!("the seal holds {rows} usage events, not {events}"));
    }
    let per_event = |figure: f64| figure / events as f64;
    figures::record(figures::PARQUET_BYTES, per_event(parquet as f64));
    figures::record(figures::SEAL_READ_UNITS, per_event(read_units));
    row(
        "archive seal of 100,000 usage events: Parquet per event",
        &format!("{:.0} bytes", per_event(parquet as f64)),
        "<= 250 bytes",
    );
    row(
        "archive seal: ledger read units per archived event (one seal pass)",
        &format!("{:.2}", per_event(read_units)),
        "<= 0.6",
    );
    row(
        "archive seal: seconds for 100,000 usage events (into a folder, DynamoDB Local)",
        &format!("{seconds:.1} s"),
        "",
    );
    Ok(())
}
