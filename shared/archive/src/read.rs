//! Parts read back: the events of a sealed day as they were written, so that what is read
//! from the archive is what was read from the ledger.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::parts::ArchiveError;
use crate::row::ArchiveRow;

/// The events of one part, in its order.
pub fn read_events(part: Vec<u8>) -> Result<Vec<ArchiveRow>, ArchiveError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(part))?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(rows_of(&batch?)?);
    }
    Ok(rows)
}

fn missing(name: &str) -> ArchiveError {
    ArchiveError::Arrow(arrow_schema::ArrowError::SchemaError(format!(
        "the part has no column {name} of the archive's type"
    )))
}

fn rows_of(batch: &RecordBatch) -> Result<Vec<ArchiveRow>, ArchiveError> {
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| missing(name));
    let text = |name: &str| -> Result<Vec<Option<String>>, ArchiveError> {
        let array = column(name)?;
        let strings = array.as_string_opt::<i32>().ok_or_else(|| missing(name))?;
        Ok(strings.iter().map(|v| v.map(str::to_owned)).collect())
    };
    let time = |name: &str| -> Result<Vec<Option<DateTime<Utc>>>, ArchiveError> {
        let array = column(name)?;
        let times = array
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| missing(name))?;
        Ok(times
            .iter()
            .map(|v| v.and_then(DateTime::from_timestamp_millis))
            .collect())
    };
    let count = |name: &str| -> Result<Vec<Option<u64>>, ArchiveError> {
        let array = column(name)?;
        let counts = array
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| missing(name))?;
        Ok(counts
            .iter()
            .map(|v| v.and_then(|v| u64::try_from(v).ok()))
            .collect())
    };
    let deliveries = {
        let array = column("deliveries")?;
        let lists = array
            .as_list_opt::<i32>()
            .ok_or_else(|| missing("deliveries"))?;
        let mut all = Vec::with_capacity(lists.len());
        for index in 0..lists.len() {
            let items = lists.value(index);
            let strings = items
                .as_string_opt::<i32>()
                .ok_or_else(|| missing("deliveries"))?;
            all.push(strings.iter().flatten().map(str::to_owned).collect());
        }
        all
    };
    let (sid, event_type, kind, data) = (
        text("event_sid")?,
        text("event_type")?,
        text("kind")?,
        text("data")?,
    );
    let (account, sim, fleet) = (text("account_sid")?, text("sim_sid")?, text("fleet_sid")?);
    let (network_sid, network_name, country) = (
        text("network_sid")?,
        text("network_name")?,
        text("iso_country")?,
    );
    let (session, hash) = (text("data_session_sid")?, text("data_sha256")?);
    let (event_time, booked_hour, window_start, window_end, received_at) = (
        time("event_time")?,
        time("booked_hour")?,
        time("window_start")?,
        time("window_end")?,
        time("received_at")?,
    );
    let (up, down, total) = (
        count("data_upload")?,
        count("data_download")?,
        count("data_total")?,
    );
    let mut rows = Vec::with_capacity(batch.num_rows());
    for (i, deliveries) in deliveries.into_iter().enumerate() {
        let required =
            |values: &[Option<String>], name: &str| values[i].clone().ok_or_else(|| missing(name));
        rows.push(ArchiveRow {
            event_sid: required(&sid, "event_sid")?,
            event_type: required(&event_type, "event_type")?,
            kind: required(&kind, "kind")?,
            event_time: event_time[i].ok_or_else(|| missing("event_time"))?,
            booked_hour: booked_hour[i],
            account_sid: account[i].clone(),
            sim_sid: sim[i].clone(),
            fleet_sid: fleet[i].clone(),
            network_sid: network_sid[i].clone(),
            network_name: network_name[i].clone(),
            iso_country: country[i].clone(),
            data_session_sid: session[i].clone(),
            window_start: window_start[i],
            window_end: window_end[i],
            data_upload: up[i],
            data_download: down[i],
            data_total: total[i],
            deliveries,
            received_at: received_at[i],
            data_sha256: hash[i].clone(),
            data: required(&data, "data")?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::write_parts;

    #[test]
    fn events_read_back_are_the_rows_written() {
        let at = |s: i64| DateTime::from_timestamp_millis(1_730_592_000_123 + s);
        let rows: Vec<ArchiveRow> = (0..5u64)
            .map(|i| ArchiveRow {
                event_sid: format!("EZ{i:032x}"),
                event_type: "com.kore.supersim.connection.data-session.updated".into(),
                kind: "data-session.updated".into(),
                event_time: at(i as i64 * 60_000).unwrap(),
                booked_hour: (i % 2 == 0).then(|| at(0).unwrap()),
                account_sid: Some("AC1".into()),
                sim_sid: Some(format!("HS{i}")),
                network_name: (i == 3).then(|| "Telekom.de".into()),
                window_end: at(i as i64),
                data_upload: Some(i),
                data_download: (i != 4).then_some(i * 1_000),
                data_total: Some(i * 1_001),
                deliveries: vec!["kore#kinesis".into(), "twilio#webhook".into()][..i as usize % 3]
                    .to_vec(),
                received_at: at(999),
                data_sha256: Some(format!("{i:064x}")),
                data: format!("{{\"n\":{i}}}"),
                ..ArchiveRow::default()
            })
            .collect();
        let parts = write_parts(&rows, 2).unwrap();
        let mut read = Vec::new();
        for part in parts {
            read.extend(read_events(part.bytes).unwrap());
        }
        assert_eq!(read, rows);
    }

    #[test]
    fn a_part_that_is_not_parquet_is_an_error_not_a_panic() {
        assert!(read_events(b"not parquet".to_vec()).is_err());
    }
}
