//! One archived day rollup: a booking's usage over the day as the ledger's rollups count it,
//! the late part of it too. The table lets a month be summed from a few thousand rows a day
//! instead of every event.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use kore_ingest_core::closes::RollupTotals;

use crate::parts::{ArchiveError, Table, signed};

/// A booking's day: who, where, and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollupRow {
    pub account_sid: Option<String>,
    pub sim_sid: String,
    pub fleet_sid: Option<String>,
    pub network_sid: Option<String>,
    pub iso_country: Option<String>,
    pub network_name: Option<String>,
    pub data_upload: u64,
    pub data_download: u64,
    pub data_total: u64,
    pub usage_events: u64,
    /// What of the day's total arrived after the day was first closed.
    pub late_data_total: u64,
    pub late_events: u64,
}

impl RollupRow {
    pub fn of(rollup: &RollupTotals) -> RollupRow {
        let b = &rollup.booking;
        RollupRow {
            account_sid: b.account_sid.clone(),
            sim_sid: b.sim_sid.clone(),
            fleet_sid: b.fleet_sid.clone(),
            network_sid: b.network_sid.clone(),
            iso_country: b.iso_country.clone(),
            network_name: rollup.names.network_name.clone(),
            data_upload: rollup.day_total.usage.upload,
            data_download: rollup.day_total.usage.download,
            data_total: rollup.day_total.usage.total,
            usage_events: rollup.day_total.events,
            late_data_total: rollup.late.usage.total,
            late_events: rollup.late.events,
        }
    }

    /// The counts, in the order of [`COUNTS`].
    fn counts(&self) -> [u64; 6] {
        [
            self.data_upload,
            self.data_download,
            self.data_total,
            self.usage_events,
            self.late_data_total,
            self.late_events,
        ]
    }

    /// The booking, as the manifest's usage sums key it.
    pub fn key(&self) -> crate::BookingKey {
        [
            self.account_sid.clone(),
            Some(self.sim_sid.clone()),
            self.fleet_sid.clone(),
            self.network_sid.clone(),
            self.iso_country.clone(),
        ]
    }
}

const COUNTS: [&str; 6] = [
    "data_upload",
    "data_download",
    "data_total",
    "usage_events",
    "late_data_total",
    "late_events",
];

impl Table for RollupRow {
    fn schema() -> SchemaRef {
        let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
        let mut fields = vec![
            text("account_sid", true),
            text("sim_sid", false),
            text("fleet_sid", true),
            text("network_sid", true),
            text("iso_country", true),
            text("network_name", true),
        ];
        fields.extend(COUNTS.map(|name| Field::new(name, DataType::Int64, false)));
        Arc::new(Schema::new(fields))
    }

    fn batch(rows: &[RollupRow]) -> Result<RecordBatch, ArchiveError> {
        let text = |get: fn(&RollupRow) -> Option<&str>| -> ArrayRef {
            Arc::new(rows.iter().map(get).collect::<StringArray>())
        };
        let mut columns = vec![
            text(|r| r.account_sid.as_deref()),
            text(|r| Some(&r.sim_sid)),
            text(|r| r.fleet_sid.as_deref()),
            text(|r| r.network_sid.as_deref()),
            text(|r| r.iso_country.as_deref()),
            text(|r| r.network_name.as_deref()),
        ];
        for (index, name) in COUNTS.into_iter().enumerate() {
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                let count = Some(row.counts()[index]);
                let value = signed(&format!("SIM {}", row.sim_sid), name, count)?;
                values.push(value.unwrap_or_default());
            }
            columns.push(Arc::new(Int64Array::from(values)) as ArrayRef);
        }
        Ok(RecordBatch::try_new(Self::schema(), columns)?)
    }

    fn digest_line(&self) -> String {
        let key = self.key().map(|k| k.unwrap_or_default()).join("\t");
        let counts = self.counts().map(|c| c.to_string()).join("\t");
        format!("{key}\t{counts}\n")
    }
}
