//! A table's rows for a day as Parquet parts: `part-00000.parquet`, ... in the order given,
//! each at most `rows_per_part` rows, written with fixed properties so that the same rows
//! always give the same bytes.

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::row::ArchiveRow;

/// Why a day cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{row}: {field} is {value}, past what a signed 64-bit column holds")]
    TooLarge {
        row: String,
        field: &'static str,
        value: u64,
    },
    #[error("event {event_sid} in the archive: {reason}")]
    BadRow { event_sid: String, reason: String },
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("cannot build the columns: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// One written part: its name within the day, its rows, bytes and their SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub rows: u64,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// The name of part `index` of a day.
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// Who wrote the files, in their footer: fixed, so that the bytes do not depend on the
/// library's version string.
const CREATED_BY: &str = "kore-ingest-archive";

/// Rows of one archived table: its columns and how rows become them.
pub trait Table: Sized {
    /// The table's columns: those of its Parquet files and of its Glue table.
    fn schema() -> SchemaRef;
    /// `rows` as one batch of the schema's columns.
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArchiveError>;
    /// The row's line in the manifest's digest: what identifies it and what it counts.
    fn digest_line(&self) -> String;
}

/// Timestamps: milliseconds, adjusted to UTC (Athena's and DuckDB's `timestamp`).
pub(crate) fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn event_schema() -> SchemaRef {
    let time = time_type;
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let count = |name: &str| Field::new(name, DataType::Int64, true);
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    Arc::new(Schema::new(vec![
        text("event_sid", false),
        text("event_type", false),
        text("kind", false),
        Field::new("event_time", time(), false),
        Field::new("booked_hour", time(), true),
        text("account_sid", true),
        text("sim_sid", true),
        text("fleet_sid", true),
        text("network_sid", true),
        text("network_name", true),
        text("iso_country", true),
        text("data_session_sid", true),
        Field::new("window_start", time(), true),
        Field::new("window_end", time(), true),
        count("data_upload"),
        count("data_download"),
        count("data_total"),
        Field::new("deliveries", DataType::List(item), false),
        Field::new("received_at", time(), true),
        text("data_sha256", true),
        text("data", false),
    ]))
}

fn millis(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|t| t.timestamp_millis())
}

/// A count as a signed column value, or the row and field it does not fit.
pub(crate) fn signed(
    row: &str,
    field: &'static str,
    value: Option<u64>,
) -> Result<Option<i64>, ArchiveError> {
    value
        .map(|v| {
            i64::try_from(v).map_err(|_| ArchiveError::TooLarge {
                row: row.to_owned(),
                field,
                value: v,
            })
        })
        .transpose()
}

impl Table for ArchiveRow {
    fn schema() -> SchemaRef {
        event_schema()
    }

    fn batch(rows: &[ArchiveRow]) -> Result<RecordBatch, ArchiveError> {
        event_batch(rows)
    }

    fn digest_line(&self) -> String {
        format!(
            "{}\t{}\t{}\n",
            self.event_sid,
            self.data_sha256.as_deref().unwrap_or(""),
            self.deliveries.join(",")
        )
    }
}

fn event_batch(rows: &[ArchiveRow]) -> Result<RecordBatch, ArchiveError> {
    let text = |get: fn(&ArchiveRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(get).collect::<StringArray>())
    };
    let time = |get: fn(&ArchiveRow) -> Option<DateTime<Utc>>| -> ArrayRef {
        let values: Vec<Option<i64>> = rows.iter().map(|r| millis(get(r))).collect();
        Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
    };
    let mut counts: [Vec<Option<i64>>; 3] = Default::default();
    for row in rows {
        let sid = &row.event_sid;
        counts[0].push(signed(sid, "data_upload", row.data_upload)?);
        counts[1].push(signed(sid, "data_download", row.data_download)?);
        counts[2].push(signed(sid, "data_total", row.data_total)?);
    }
    let [up, down, total] = counts.map(|c| Arc::new(Int64Array::from(c)) as ArrayRef);
    let mut deliveries = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for delivery in &row.deliveries {
            deliveries.values().append_value(delivery);
        }
        deliveries.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        text(|r| Some(&r.event_sid)),
        text(|r| Some(&r.event_type)),
        text(|r| Some(&r.kind)),
        time(|r| Some(r.event_time)),
        time(|r| r.booked_hour),
        text(|r| r.account_sid.as_deref()),
        text(|r| r.sim_sid.as_deref()),
        text(|r| r.fleet_sid.as_deref()),
        text(|r| r.network_sid.as_deref()),
        text(|r| r.network_name.as_deref()),
        text(|r| r.iso_country.as_deref()),
        text(|r| r.data_session_sid.as_deref()),
        time(|r| r.window_start),
        time(|r| r.window_end),
        up,
        down,
        total,
        Arc::new(deliveries.finish()),
        time(|r| r.received_at),
        text(|r| r.data_sha256.as_deref()),
        text(|r| Some(&r.data)),
    ];
    Ok(RecordBatch::try_new(event_schema(), columns)?)
}

/// The day's rows as parts of at most `rows_per_part` rows each (one row group each), in
/// the order given; no rows, no parts.
pub fn write_parts<T: Table>(rows: &[T], rows_per_part: usize) -> Result<Vec<Part>, ArchiveError> {
    let rows_per_part = rows_per_part.max(1);
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(CREATED_BY.to_owned())
        .set_max_row_group_size(rows_per_part)
        .build();
    let mut parts = Vec::new();
    for (index, chunk) in rows.chunks(rows_per_part).enumerate() {
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, T::schema(), Some(properties.clone()))?;
        writer.write(&T::batch(chunk)?)?;
        writer.close()?;
        parts.push(Part {
            name: part_name(index),
            rows: chunk.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes,
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn rows(n: usize) -> Vec<ArchiveRow> {
        let at = |s: i64| DateTime::from_timestamp(1_730_073_600 + s, 0);
        (0..n)
            .map(|i| ArchiveRow {
                event_sid: format!("EZ{i:032x}"),
                event_type: "com.kore.supersim.connection.data-session.updated".into(),
                kind: "data-session.updated".into(),
                event_time: at(i as i64 * 60).unwrap(),
                booked_hour: at(i as i64 * 60 / 3600 * 3600),
                sim_sid: Some(format!("HS{:032x}", i % 7)),
                network_name: (i % 3 == 0).then(|| "Telekom.de".into()),
                data_total: Some(i as u64 * 1_000),
                deliveries: vec!["kore#kinesis".into(), "twilio#webhook".into()][..1 + i % 2]
                    .to_vec(),
                data: format!("{{\"n\":{i}}}"),
                ..ArchiveRow::default()
            })
            .collect()
    }

    #[test]
    fn the_same_rows_give_the_same_parts_byte_for_byte_and_read_back_whole() {
        let rows = rows(2_500);
        let parts = write_parts(&rows, 1_000).unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "part-00000.parquet",
                "part-00001.parquet",
                "part-00002.parquet"
            ]
        );
        assert_eq!(
            parts,
            write_parts(&rows, 1_000).unwrap(),
            "sealing again writes the same bytes"
        );

        let mut read = 0;
        let mut total = 0i64;
        for part in &parts {
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(part.bytes.clone()))
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                read += batch.num_rows();
                let column = batch.column_by_name("data_total").unwrap();
                let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
                total += column.iter().flatten().sum::<i64>();
            }
        }
        assert_eq!(read, 2_500);
        assert_eq!(total, (0..2_500i64).sum::<i64>() * 1_000);
    }

    #[test]
    fn a_count_past_a_signed_column_is_refused_naming_the_event() {
        let mut rows = rows(1);
        rows[0].data_total = Some(u64::MAX);
        let error = write_parts(&rows, 10).unwrap_err().to_string();
        assert!(
            error.contains(&rows[0].event_sid) && error.contains("data_total"),
            "{error}"
        );
    }
}
