//! Every key the ledger writes, in one place. One table holds all item types. See the
//! README's "Storage design" for the access patterns and the cost of each write.
//!
//! - event record: `EVENT#<event_sid>` / `#` (the conditional put that makes it exactly once);
//! - usage rollup: `USAGE#<day>#<shard>` / `<booking>`, one item per SIM, UTC day and
//!   booking (account, fleet, network, country), with the day's hours as attributes. The day
//!   partitions are what period queries read; sharding by SIM keeps each under DynamoDB's
//!   per-key write limit;
//! - booking list: `SIM#<sim_sid>` / `BOOKED#<day>#<first event_sid>`, the event sids one
//!   commit booked for that SIM and day, so a SIM's or a day's events can be found again
//!   without an index entry per event;
//! - events without usage: the time index `gsi1` (`EVENTS#<day>#<shard>`), as before;
//! - callbacks, SIM status and the quarantine keep their own partitions.

use sha2::{Digest, Sha256};

use crate::event::DedupeKey;

/// Sort key of items that are alone in their partition.
pub const SINGLE: &str = "#";

/// How many partitions the time-ordered index of events without usage is spread over: at a
/// burst of 11,000 such events a second, about 350 index writes a second each, well under
/// DynamoDB's 1,000 per key. (Raised from 8: readers query every shard, so events written
/// under the old count are still found.)
pub const SHARDS: u8 = 32;

/// How many partitions each day's usage rollups are spread over. At a burst of 11,000 new
/// usage events a second (1,000,000 SIMs, 96 windows a day, ten times the mean), each
/// partition key takes about 350 WCU/s, well under DynamoDB's 1,000 per key.
pub const USAGE_SHARDS: u8 = 64;

pub const EVENT_PK_PREFIX: &str = "EVENT#";

pub fn event_pk(key: &DedupeKey) -> String {
    format!("{EVENT_PK_PREFIX}{key}")
}

pub fn sim_pk(sim_sid: &str) -> String {
    format!("SIM#{sim_sid}")
}

/// The partition of one day's rollups for the SIMs of one shard.
pub fn usage_pk(day: &str, shard: u8) -> String {
    format!("USAGE#{day}#{shard}")
}

/// The shard of a SIM's rollups.
pub fn usage_shard(sim_sid: &str) -> u8 {
    (u16::from_be_bytes(first_two(sim_sid)) % u16::from(USAGE_SHARDS)) as u8
}

/// Sort key of a booking list: the day, then the first event of the commit (unique).
pub fn booked_sk(day: &str, first_event: &DedupeKey) -> String {
    format!("{BOOKED_SK_PREFIX}{day}#{first_event}")
}

pub const BOOKED_SK_PREFIX: &str = "BOOKED#";

/// Legacy layout (before per-booking rollups): `SIM#<sim>` / `USAGE#<period>` and
/// `SESSION#<session>` items. Nothing writes them any more; `kore-usage rebuild` replaces
/// what they held.
pub const LEGACY_USAGE_SK_PREFIX: &str = "USAGE#";
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

pub fn events_by_day_pk(day: &str, shard: u8) -> String {
    format!("EVENTS#{day}#{shard}")
}

/// A stable shard in `0..SHARDS` for any string.
pub fn shard_of(value: &str) -> u8 {
    Sha256::digest(value.as_bytes())[0] % SHARDS
}

fn first_two(value: &str) -> [u8; 2] {
    let digest = Sha256::digest(value.as_bytes());
    [digest[0], digest[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("HS1"), shard_of("HS1"));
        let used: std::collections::BTreeSet<u8> =
            (0..2000).map(|i| shard_of(&format!("HS{i}"))).collect();
        assert_eq!(used.len(), usize::from(SHARDS));
        assert!(used.iter().all(|s| *s < SHARDS));

        let used: std::collections::BTreeSet<u8> = (0..5_000)
            .map(|i| usage_shard(&format!("HS{i:032}")))
            .collect();
        assert_eq!(used.len(), usize::from(USAGE_SHARDS));
        assert_eq!(usage_shard("HS1"), usage_shard("HS1"));
    }
}
