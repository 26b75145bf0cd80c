//! A sealed day's manifest, written after its parts: what the parts must hold (rows, per
//! booking sums the rollups can be checked against, a digest of every event's sid, data
//! hash and deliveries) and the parts themselves by name, rows and SHA-256. Its JSON is
//! deterministic, so sealing again writes the same manifest.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::parts::Part;
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub day: String,
    /// A final seal: the day is archived (events booked on it later are refused).
    #[serde(rename = "final")]
    pub is_final: bool,
    pub rows: u64,
    pub distinct_event_sids: u64,
    pub parts: Vec<PartEntry>,
    /// Per booking, sorted by account, SIM, fleet, network and country.
    pub usage: Vec<BookingSum>,
    /// SHA-256 over one line per event in export order: sid, data hash, deliveries.
    pub digest: String,
}

/// A sum past 2^64 cannot be in the ledger, which checks every sum: here it saturates
/// rather than panic, and the comparison with the rollups then fails loudly.
fn add(sum: &mut u64, value: Option<u64>) {
    *sum = sum.saturating_add(value.unwrap_or(0));
}

/// The manifest of `day` for `rows` (export order) written as `parts`.
pub fn manifest(day: NaiveDate, is_final: bool, rows: &[ArchiveRow], parts: &[Part]) -> Manifest {
    let mut usage: BTreeMap<[Option<String>; 5], BookingSum> = BTreeMap::new();
    let mut digest = Sha256::new();
    let mut sids: Vec<&str> = Vec::with_capacity(rows.len());
    for row in rows {
        sids.push(&row.event_sid);
        digest.update(format!(
            "{}\t{}\t{}\n",
            row.event_sid,
            row.data_sha256.as_deref().unwrap_or(""),
            row.deliveries.join(",")
        ));
        if row.data_total.is_none() {
            continue;
        }
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
    sids.sort_unstable();
    sids.dedup();
    Manifest {
        day: day.format("%Y-%m-%d").to_string(),
        is_final,
        rows: rows.len() as u64,
        distinct_event_sids: sids.len() as u64,
        parts: parts
            .iter()
            .map(|p| PartEntry {
                name: p.name.clone(),
                rows: p.rows,
                sha256: p.sha256.clone(),
            })
            .collect(),
        usage: usage.into_values().collect(),
        digest: hex::encode(digest.finalize()),
    }
}

/// A booking as the rollups key it: account, SIM, fleet, network, country.
pub type BookingKey = [Option<String>; 5];

impl Manifest {
    /// Where the manifest's per-booking sums differ from the rollups' day totals (bytes and
    /// events per booking), each as one sentence.
    pub fn against_rollups(&self, rollups: &BTreeMap<BookingKey, (u64, u64)>) -> Vec<String> {
        let archived: BTreeMap<BookingKey, (u64, u64)> = self
            .usage
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
        let mut problems = Vec::new();
        for key in archived
            .keys()
            .chain(rollups.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (a, r) = (
                archived.get(key).copied().unwrap_or_default(),
                rollups.get(key).copied().unwrap_or_default(),
            );
            if a != r {
                problems.push(format!(
                    "{}: SIM {}: the archive holds {} B in {} events, the rollups {} B in {}",
                    self.day,
                    key[1].as_deref().unwrap_or("-"),
                    a.0,
                    a.1,
                    r.0,
                    r.1
                ));
            }
        }
        problems
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
    use crate::parts::write_parts;

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

    #[test]
    fn the_manifest_sums_each_booking_counts_distinct_sids_and_is_the_same_twice() {
        let rows = vec![
            row("EZ1", "HS2", Some(10)),
            row("EZ2", "HS1", Some(5)),
            row("EZ3", "HS2", Some(7)),
            row("EZ4", "HS1", None),
        ];
        let parts = write_parts(&rows, 3).unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        let sealed = manifest(day, true, &rows, &parts);
        let sums: Vec<(&str, u64, u64)> = sealed
            .usage
            .iter()
            .map(|u| (u.sim_sid.as_deref().unwrap(), u.data_total, u.usage_events))
            .collect();
        assert_eq!(sums, [("HS1", 5, 1), ("HS2", 17, 2)]);
        assert_eq!(
            (sealed.rows, sealed.distinct_event_sids, sealed.parts.len()),
            (4, 4, 2)
        );
        let again = manifest(day, true, &rows, &write_parts(&rows, 3).unwrap());
        assert_eq!(sealed.to_json(), again.to_json());
        assert!(sealed.to_json().contains("\"final\": true"));
        // Another delivery of one event changes the digest, nothing else.
        let mut delivered = rows.clone();
        delivered[1].deliveries.push("twilio#webhook".into());
        let changed = manifest(day, true, &delivered, &parts);
        assert_ne!(changed.digest, sealed.digest);
        assert_eq!(changed.usage, sealed.usage);
    }
}
