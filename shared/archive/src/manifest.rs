//! A sealed day: its tables written as parts under deterministic keys, and the manifest
//! written after them: what the parts must hold (rows, per booking sums the rollups can be
//! checked against, a digest of every row: for an event its sid, data hash and deliveries)
//! and the parts themselves by name, rows and SHA-256. Its JSON is deterministic, so sealing
//! again writes the same manifest.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::parts::{ArchiveError, Part, Table, write_parts};
use crate::rollup::RollupRow;
use crate::row::ArchiveRow;

/// One booking's usage over the day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingSum {
    pub account_sid: Option<String>,
    pub sim_sid: Option<String>,
    pub fleet_sid: Option<String>,
    pub network_sid: Option<String>,
    pub iso_country: Option<String>,
    pub data_upload: u64,
    pub data_download: u64,
    pub data_total: u64,
    pub usage_events: u64,
}

/// A part as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub name: String,
    pub rows: u64,
    pub sha256: String,
}

/// One table of the day: its rows, its parts and a digest of its rows' lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub rows: u64,
    pub parts: Vec<PartEntry>,
    /// SHA-256 over one line per row in the parts' order ([`Table::digest_line`]): for an
    /// event its sid, data hash and deliveries.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub day: String,
    /// A final seal: readers take the day from the archive (`--source auto`) and the
    /// archiver does not seal it again.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The usage events booked on the day, in export order.
    pub usage_events: TableEntry,
    /// The events without usage whose time is on the day, by time.
    pub other_events: TableEntry,
    /// The ledger's day rollups, one per booking.
    pub usage_rollups: TableEntry,
    /// Sids over both event tables: equal to their rows, since each event is held once.
    pub distinct_event_sids: u64,
    /// Per booking, the usage events' sums, sorted by account, SIM, fleet, network and
    /// country: what the rollups must say.
    pub usage: Vec<BookingSum>,
}

/// A sum past 2^64 cannot be in the ledger, which checks every sum: here it saturates
/// rather than panic, and the comparison with the rollups then fails loudly.
fn add(sum: &mut u64, value: Option<u64>) {
    *sum = sum.saturating_add(value.unwrap_or(0));
}

/// A day's tables as read from the ledger, each in the order its parts hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTables {
    pub usage_events: Vec<ArchiveRow>,
    pub other_events: Vec<ArchiveRow>,
    pub usage_rollups: Vec<RollupRow>,
}

/// A day as written: its objects by key (parts), then its manifest, written last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDay {
    pub objects: Vec<(String, Part)>,
    pub manifest: Manifest,
}

/// The archive's tables, by the folder their parts live in.
pub const TABLES: [&str; 3] = ["usage_events", "other_events", "usage_rollups"];

/// Where part `name` of `table` for `day` lives in the archive.
pub fn part_key(table: &str, day: NaiveDate, name: &str) -> String {
    format!("{table}/day={day}/{name}")
}

/// Where the manifest of `day` lives in the archive.
pub fn manifest_key(day: NaiveDate) -> String {
    format!("{MANIFESTS}day={day}.json")
}

/// Where the manifests are: the prefix of every `manifest_key`.
pub const MANIFESTS: &str = "manifests/";

/// The day of a `manifest_key`, `None` for any other key.
pub fn day_of_manifest_key(key: &str) -> Option<NaiveDate> {
    key.strip_prefix(MANIFESTS)?
        .strip_prefix("day=")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn table_entry<T: Table>(rows: &[T], parts: &[Part]) -> TableEntry {
    let mut digest = Sha256::new();
    for row in rows {
        digest.update(row.digest_line());
    }
    TableEntry {
        rows: rows.len() as u64,
        parts: parts
            .iter()
            .map(|p| PartEntry {
                name: p.name.clone(),
                rows: p.rows,
                sha256: p.sha256.clone(),
            })
            .collect(),
        digest: hex::encode(digest.finalize()),
    }
}

impl DayTables {
    /// The day written as parts of at most `rows_per_part` rows, and its manifest.
    pub fn seal(
        &self,
        day: NaiveDate,
        is_final: bool,
        rows_per_part: usize,
    ) -> Result<SealedDay, ArchiveError> {
        let usage_parts = write_parts(&self.usage_events, rows_per_part)?;
        let other_parts = write_parts(&self.other_events, rows_per_part)?;
        let rollup_parts = write_parts(&self.usage_rollups, rows_per_part)?;
        let manifest = Manifest {
            day: day.format("%Y-%m-%d").to_string(),
            is_final,
            usage_events: table_entry(&self.usage_events, &usage_parts),
            other_events: table_entry(&self.other_events, &other_parts),
            usage_rollups: table_entry(&self.usage_rollups, &rollup_parts),
            distinct_event_sids: self.distinct_event_sids(),
            usage: usage_sums(&self.usage_events),
        };
        let objects = [
            (TABLES[0], usage_parts),
            (TABLES[1], other_parts),
            (TABLES[2], rollup_parts),
        ]
        .into_iter()
        .flat_map(|(table, parts)| {
            parts
                .into_iter()
                .map(move |part| (part_key(table, day, &part.name), part))
        })
        .collect();
        Ok(SealedDay { objects, manifest })
    }

    fn distinct_event_sids(&self) -> u64 {
        let mut sids: Vec<&str> = self
            .usage_events
            .iter()
            .chain(&self.other_events)
            .map(|row| row.event_sid.as_str())
            .collect();
        sids.sort_unstable();
        sids.dedup();
        sids.len() as u64
    }
}

/// Per booking, the sums of the usage events.
fn usage_sums(rows: &[ArchiveRow]) -> Vec<BookingSum> {
    let mut usage: BTreeMap<BookingKey, BookingSum> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.data_total.is_some()) {
        let key = [
            row.account_sid.clone(),
            row.sim_sid.clone(),
            row.fleet_sid.clone(),
            row.network_sid.clone(),
            row.iso_country.clone(),
        ];
        let sum = usage.entry(key.clone()).or_insert_with(|| {
            let [account_sid, sim_sid, fleet_sid, network_sid, iso_country] = key;
            BookingSum {
                account_sid,
                sim_sid,
                fleet_sid,
                network_sid,
                iso_country,
                ..BookingSum::default()
            }
        });
        add(&mut sum.data_upload, row.data_upload);
        add(&mut sum.data_download, row.data_download);
        add(&mut sum.data_total, row.data_total);
        sum.usage_events += 1;
    }
    usage.into_values().collect()
}

/// Where per-booking sums (`usage`, held by `holder`) differ from the rollups' day totals,
/// each as one sentence naming the SIM.
fn differences(
    day: &str,
    holder: &str,
    usage: &[BookingSum],
    rollup_rows: &[RollupRow],
) -> Vec<String> {
    let mut rollups: BTreeMap<BookingKey, (u64, u64)> = BTreeMap::new();
    for row in rollup_rows {
        let sum = rollups.entry(row.key()).or_default();
        *sum = (
            sum.0.saturating_add(row.data_total),
            sum.1.saturating_add(row.usage_events),
        );
    }
    let held: BTreeMap<BookingKey, (u64, u64)> = usage
        .iter()
        .map(|u| {
            let key = [
                u.account_sid.clone(),
                u.sim_sid.clone(),
                u.fleet_sid.clone(),
                u.network_sid.clone(),
                u.iso_country.clone(),
            ];
            (key, (u.data_total, u.usage_events))
        })
        .collect();
    let keys: std::collections::BTreeSet<&BookingKey> = held.keys().chain(rollups.keys()).collect();
    let mut problems = Vec::new();
    for key in keys {
        let (h, r) = (
            held.get(key).copied().unwrap_or_default(),
            rollups.get(key).copied().unwrap_or_default(),
        );
        if h != r {
            problems.push(format!(
                "{day}: SIM {}: {holder} holds {} B in {} events, the rollups {} B in {}",
                key[1].as_deref().unwrap_or("-"),
                h.0,
                h.1,
                r.0,
                r.1
            ));
        }
    }
    problems
}

impl DayTables {
    /// Where the day's usage events do not add up to its rollups: records of the ledger
    /// expired or missing. Each as one sentence naming the SIM.
    pub fn differences(&self, day: NaiveDate) -> Vec<String> {
        let usage = usage_sums(&self.usage_events);
        differences(&day.to_string(), "the ledger", &usage, &self.usage_rollups)
    }
}

/// A booking as the rollups key it: account, SIM, fleet, network, country.
pub type BookingKey = [Option<String>; 5];

impl Manifest {
    /// Where the manifest's per-booking sums differ from the rollups' day totals (bytes and
    /// events per booking), each as one sentence.
    pub fn against_rollups(&self, rollup_rows: &[RollupRow]) -> Vec<String> {
        differences(&self.day, "the archive", &self.usage, rollup_rows)
    }

    /// [`Manifest::against_rollups`] for one SIM's bookings: `rollup_rows` are its rollups.
    pub fn against_rollups_of(&self, sim: &str, rollup_rows: &[RollupRow]) -> Vec<String> {
        let usage: Vec<BookingSum> = self
            .usage
            .iter()
            .filter(|sum| sum.sim_sid.as_deref() == Some(sim))
            .cloned()
            .collect();
        differences(&self.day, "the archive", &usage, rollup_rows)
    }

    /// The manifest as written: pretty JSON with a final newline, the same every time.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and lists cannot fail.
        serde_json::to_string_pretty(self).map_or_else(|_| String::new(), |text| text + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sid: &str, sim: &str, total: Option<u64>) -> ArchiveRow {
        ArchiveRow {
            event_sid: sid.into(),
            sim_sid: Some(sim.into()),
            data_total: total,
            data_download: total,
            data_sha256: Some(format!("h{sid}")),
            deliveries: vec!["kore#kinesis".into()],
            data: "{}".into(),
            ..ArchiveRow::default()
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 11, 3).unwrap()
    }

    fn tables() -> DayTables {
        DayTables {
            usage_events: vec![
                row("EZ1", "HS2", Some(10)),
                row("EZ2", "HS1", Some(5)),
                row("EZ3", "HS2", Some(7)),
            ],
            other_events: vec![row("EZ4", "HS1", None)],
            usage_rollups: vec![RollupRow {
                sim_sid: "HS1".into(),
                data_total: 5,
                usage_events: 1,
                ..RollupRow::default()
            }],
        }
    }

    #[test]
    fn the_manifest_sums_each_booking_counts_distinct_sids_and_is_the_same_twice() {
        let sealed = tables().seal(day(), true, 2).unwrap();
        let manifest = &sealed.manifest;
        let sums: Vec<(&str, u64, u64)> = manifest
            .usage
            .iter()
            .map(|u| (u.sim_sid.as_deref().unwrap(), u.data_total, u.usage_events))
            .collect();
        assert_eq!(sums, [("HS1", 5, 1), ("HS2", 17, 2)]);
        assert_eq!(
            (
                manifest.usage_events.rows,
                manifest.other_events.rows,
                manifest.distinct_event_sids
            ),
            (3, 1, 4)
        );
        let keys: Vec<&str> = sealed.objects.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "usage_events/day=2024-11-03/part-00000.parquet",
                "usage_events/day=2024-11-03/part-00001.parquet",
                "other_events/day=2024-11-03/part-00000.parquet",
                "usage_rollups/day=2024-11-03/part-00000.parquet",
            ]
        );
        assert_eq!(sealed, tables().seal(day(), true, 2).unwrap());
        assert!(manifest.to_json().contains("\"final\": true"));
        // Another delivery of one event changes the digest, nothing else.
        let mut delivered = tables();
        delivered.usage_events[1]
            .deliveries
            .push("twilio#webhook".into());
        let changed = delivered.seal(day(), true, 2).unwrap().manifest;
        assert_ne!(changed.usage_events.digest, manifest.usage_events.digest);
        assert_eq!(changed.usage, manifest.usage);
    }

    #[test]
    fn a_booking_whose_rollup_differs_from_its_events_is_named() {
        let manifest = tables().seal(day(), false, 10).unwrap().manifest;
        let problems = manifest.against_rollups(&tables().usage_rollups);
        assert_eq!(
            problems,
            ["2024-11-03: SIM HS2: the archive holds 17 B in 2 events, the rollups 0 B in 0"]
        );
    }
}
