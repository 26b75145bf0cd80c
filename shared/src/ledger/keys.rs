//! Every key the ledger writes, in one place. One table holds all item types; the partition
//! key spreads writes (one event, one SIM), and the three overloaded indexes serve the
//! period queries. See the README's "Storage design" for the access patterns.

use sha2::{Digest, Sha256};

use crate::event::DedupeKey;

/// Sort key of items that are alone in their partition.
pub const SINGLE: &str = "#";

/// How many partitions the time-ordered event index and the period index are spread over,
/// so that a busy hour or month never lands on one index partition.
pub const SHARDS: u8 = 8;

pub fn event_pk(key: &DedupeKey) -> String {
    format!("EVENT#{key}")
}

pub fn sim_pk(sim_sid: &str) -> String {
    format!("SIM#{sim_sid}")
}

/// Period is `YYYY-MM-DD` (a day) or `YYYY-MM` (a month).
pub fn rollup_sk(period: &str) -> String {
    format!("USAGE#{period}")
}

pub fn session_sk(session_sid: &str) -> String {
    format!("SESSION#{session_sid}")
}

pub const SESSION_SK_PREFIX: &str = "SESSION#";
pub const USAGE_SK_PREFIX: &str = "USAGE#";
pub const SIM_STATUS_SK: &str = "STATUS";

pub fn callback_pk(provider: &str, token: &str) -> String {
    format!("CALLBACK#{provider}#{token}")
}

pub fn quarantine_pk(id: &str) -> String {
    format!("QUARANTINE#{id}")
}

/// The quarantine list lives under one index partition: quarantined payloads are rare, and
/// listing them newest first is what operators need.
pub const QUARANTINE_INDEX_PK: &str = "QUARANTINE";

pub fn account_period_pk(account_sid: &str, period: &str) -> String {
    format!("ACCOUNT#{account_sid}#{period}")
}

pub fn fleet_period_pk(fleet_sid: &str, period: &str) -> String {
    format!("FLEET#{fleet_sid}#{period}")
}

pub fn period_pk(period: &str, shard: u8) -> String {
    format!("PERIOD#{period}#{shard}")
}

pub fn events_by_day_pk(day: &str, shard: u8) -> String {
    format!("EVENTS#{day}#{shard}")
}

/// A stable shard in `0..SHARDS` for any string.
pub fn shard_of(value: &str) -> u8 {
    Sha256::digest(value.as_bytes())[0] % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("HS1"), shard_of("HS1"));
        let used: std::collections::BTreeSet<u8> =
            (0..200).map(|i| shard_of(&format!("HS{i}"))).collect();
        assert_eq!(used.len(), usize::from(SHARDS));
        assert!(used.iter().all(|s| *s < SHARDS));
    }
}
