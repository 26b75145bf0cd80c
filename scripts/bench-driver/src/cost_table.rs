//! The README's cost table: dollars per million usage events kept for 13 months, by ledger
//! retention, with and without point-in-time recovery, worked out from the figures this
//! bench measured ([`crate::figures`]) and us-east-1 list prices. Each event is delivered
//! once (KORE alone, as for every user since November 2024); the bench measures with the
//! events as Twilio's Kinesis records, whose `data` KORE's deliveries carry too.
//!
//! - **Requests**: the write units of a new event (with `expires_at` when the ledger
//!   expires it) and the read unit of its duplicate check.
//! - **Ledger storage**: event records and booking lists for as long as they live (13
//!   months, or from their arrival, mid-day on average, to the `expires_at` the ledger gives
//!   them, plus [`TTL_LAG_DAYS`] until DynamoDB deletes them), rollups for 13 months;
//!   point-in-time recovery bills the same bytes again at its own price.
//! - **Archive**: the Parquet for 13 months in S3 Standard and the read units of one seal
//!   pass. Its requests (a few objects a day) and Athena's scans are not per event.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use kore_ingest_core::retention::Retention;
use kore_ingest_core::time::midnight;

use crate::cost::{DOLLARS_PER_MILLION_READ_UNITS, DOLLARS_PER_MILLION_WRITE_UNITS};
use crate::figures::{self, RECOMMENDED_RETENTION_DAYS};

/// DynamoDB Standard storage and continuous backups, and S3 Standard, dollars per GB-month
/// (us-east-1; a GB being 2^30 bytes).
const DYNAMODB_PER_GB_MONTH: f64 = 0.25;
const PITR_PER_GB_MONTH: f64 = 0.20;
const S3_PER_GB_MONTH: f64 = 0.023;
const GB: f64 = 1_073_741_824.0;
/// How long history is kept, in months of 365.25 / 12 days.
const HORIZON_MONTHS: f64 = 13.0;
const DAYS_PER_MONTH: f64 = 365.25 / 12.0;
/// DynamoDB deletes an expired item some time after its `expires_at` (AWS says within a few
/// days) and bills it until then: the table counts two days.
const TTL_LAG_DAYS: f64 = 2.0;

/// One line of the table: how long the ledger keeps event records, and whether the archive
/// is on.
struct Plan {
    label: String,
    retention_days: Option<u64>,
    archive: bool,
}

/// Prints the table from the figures in `path`.
pub fn print(path: &str) -> Result<(), String> {
    let figures = figures::read(path)?;
    let plans = [
        Plan {
            label: "0: kept forever, no archive (`ArchiveEnabled=false`)".into(),
            retention_days: None,
            archive: false,
        },
        Plan {
            label: "0: kept forever, archived (the defaults)".into(),
            retention_days: None,
            archive: true,
        },
        Plan {
            label: "90, archived".into(),
            retention_days: Some(90),
            archive: true,
        },
        Plan {
            label: format!("{RECOMMENDED_RETENTION_DAYS}, archived (recommended)"),
            retention_days: Some(RECOMMENDED_RETENTION_DAYS),
            archive: true,
        },
    ];
    println!(
        "| `LedgerRetentionDays` | DynamoDB requests | ledger storage | archive (S3, seal reads) | in all, without point-in-time recovery | **in all, with it (the template's)** |"
    );
    println!("|---|---|---|---|---|---|");
    for plan in &plans {
        let cost = Cost::of(plan, &figures)?;
        println!(
            "| {} | ${:.2} | ${:.2} | {} | ${:.2} | **${:.2}** |",
            plan.label,
            cost.requests,
            cost.storage,
            match plan.archive {
                true => format!("${:.2}", cost.archive),
                false => "none".to_owned(),
            },
            cost.requests + cost.storage + cost.archive,
            cost.requests + cost.storage + cost.archive + cost.pitr,
        );
    }
    Ok(())
}

/// Days an event record lives with a retention of `days`: from its arrival at mid-day on
/// its own day to the `expires_at` the ledger writes, then until DynamoDB deletes it.
fn lifetime_days(days: u64) -> f64 {
    let retention = Retention {
        ledger_days: Some(days),
        ..Retention::default()
    };
    let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap_or_default();
    let arrival = midnight(day) + chrono::Duration::hours(12);
    let expires = retention
        .expires_at(day, arrival)
        .unwrap_or(arrival.timestamp());
    (expires - arrival.timestamp()) as f64 / 86_400.0 + TTL_LAG_DAYS
}

/// Dollars per million usage events over the horizon.
struct Cost {
    requests: f64,
    storage: f64,
    pitr: f64,
    archive: f64,
}

impl Cost {
    fn of(plan: &Plan, figures: &BTreeMap<String, f64>) -> Result<Cost, String> {
        let figure = |name: &str| {
            figures
                .get(name)
                .copied()
                .ok_or_else(|| format!("the figures hold no {name}: run `storage` and `export`"))
        };
        let write_units = match plan.retention_days {
            None => figure(figures::WCU_PER_NEW_EVENT)?,
            Some(_) => figure(figures::WCU_PER_NEW_EXPIRING_EVENT)?,
        };
        let requests = write_units * DOLLARS_PER_MILLION_WRITE_UNITS
            + figure(figures::READ_UNITS_PER_DELIVERY)? * DOLLARS_PER_MILLION_READ_UNITS;
        let expiring_months = match plan.retention_days {
            None => HORIZON_MONTHS,
            Some(days) => (lifetime_days(days) / DAYS_PER_MONTH).min(HORIZON_MONTHS),
        };
        // Bytes per event times a million events, in GB-months.
        let gb_months = |bytes: f64, months: f64| bytes * 1e6 / GB * months;
        let ledger = gb_months(figure(figures::LEDGER_BYTES_EXPIRING)?, expiring_months)
            + gb_months(figure(figures::LEDGER_BYTES_KEPT)?, HORIZON_MONTHS);
        let archive = match plan.archive {
            true => {
                gb_months(figure(figures::PARQUET_BYTES)?, HORIZON_MONTHS) * S3_PER_GB_MONTH
                    + figure(figures::SEAL_READ_UNITS)? * DOLLARS_PER_MILLION_READ_UNITS
            }
            false => 0.0,
        };
        Ok(Cost {
            requests,
            storage: ledger * DYNAMODB_PER_GB_MONTH,
            pitr: ledger * PITR_PER_GB_MONTH,
            archive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> BTreeMap<String, f64> {
        [
            (figures::WCU_PER_NEW_EVENT, 6.0),
            (figures::WCU_PER_NEW_EXPIRING_EVENT, 7.0),
            (figures::READ_UNITS_PER_DELIVERY, 1.0),
            (figures::LEDGER_BYTES_EXPIRING, 1_000.0),
            (figures::LEDGER_BYTES_KEPT, 10.0),
            (figures::PARQUET_BYTES, 150.0),
            (figures::SEAL_READ_UNITS, 0.5),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    fn plan(retention_days: Option<u64>, archive: bool) -> Plan {
        Plan {
            label: String::new(),
            retention_days,
            archive,
        }
    }

    #[test]
    fn a_retention_bills_event_records_for_its_days_and_rollups_for_the_horizon() {
        let cost = Cost::of(&plan(Some(45), true), &measured()).unwrap();
        let gb = 1e6 / GB;
        // From mid-day of its day to the end of the day 45 days later, and the TTL's lag.
        let months = (45.5 + TTL_LAG_DAYS) / DAYS_PER_MONTH;
        let ledger = 1_000.0 * gb * months + 10.0 * gb * 13.0;
        assert!(
            (cost.storage - ledger * 0.25).abs() < 1e-9,
            "{}",
            cost.storage
        );
        assert!((cost.pitr - ledger * 0.20).abs() < 1e-9, "{}", cost.pitr);
        // The expiring ledger's write units, and the duplicate check's read.
        assert!((cost.requests - (7.0 * 0.625 + 0.125)).abs() < 1e-9);
        let archive = 150.0 * gb * 13.0 * 0.023 + 0.5 * 0.125;
        assert!((cost.archive - archive).abs() < 1e-9, "{}", cost.archive);
    }

    #[test]
    fn kept_forever_without_the_archive_bills_thirteen_months_and_no_archive() {
        let cost = Cost::of(&plan(None, false), &measured()).unwrap();
        let ledger = 1_010.0 * 1e6 / GB * 13.0;
        assert!((cost.storage - ledger * 0.25).abs() < 1e-9);
        assert!((cost.requests - (6.0 * 0.625 + 0.125)).abs() < 1e-9);
        assert_eq!(cost.archive, 0.0);
    }

    #[test]
    fn a_retention_longer_than_the_horizon_costs_what_keeping_forever_does() {
        let forever = Cost::of(&plan(None, true), &measured()).unwrap();
        let longer = Cost::of(&plan(Some(500), true), &measured()).unwrap();
        assert!((longer.storage - forever.storage).abs() < 1e-9);
    }

    #[test]
    fn a_short_retention_still_keeps_records_until_their_day_can_be_sealed() {
        // Settled 3 days after the day, and 10 days of margin: never gone before 13 days.
        assert!(
            lifetime_days(1) >= 13.0 + TTL_LAG_DAYS,
            "{}",
            lifetime_days(1)
        );
    }

    #[test]
    fn a_figure_the_run_did_not_measure_is_named() {
        let mut figures = measured();
        figures.remove(figures::PARQUET_BYTES);
        let error = Cost::of(&plan(Some(45), true), &figures).err().unwrap();
        assert!(error.contains(figures::PARQUET_BYTES), "{error}");
    }
}
