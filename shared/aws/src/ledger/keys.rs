//! Every key the ledger writes and reads, in one place. One table holds all item types
//! (`docs/DESIGN.md` has the access patterns and the cost of each write):
//!
//! - event record: `EVENT#<event_sid>` / `#` (the conditional put that makes it exactly once);
//! - usage rollup: `USAGE#<day>#<shard>` / `<booking>`, one item per SIM, UTC day and
//!   booking (account, fleet, network, country), with the day's hours as attributes. The day
//!   partitions are what period queries read; sharding by SIM keeps each under DynamoDB's
//!   per-key write limit;
//! - booking list: `SIM#<sim_sid>` / `BOOKED#<day>#<first event_sid>`, the event sids one
//!   commit booked for that SIM and day, so a SIM's or a day's events can be found again
//!   without an index entry per event;
//! - events without usage: the time index `gsi1`, `EVENTS#<day>#<shard>` /
//!   `<event time>#<event_sid>`;
//! - callbacks `CALLBACK#<provider>#<token>` / `#`; each SIM-update callback's status in the
//!   SIM's history `SIM#<sim>` / `STATUS#<sent at>#<received at>#<callback id>`, and the
//!   SIM's current status `SIMSTATUS#<shard>` / `<sim>`; the callbacks not yet on the event
//!   bus `CALLBACKS#UNFORWARDED` / `<callback id>`;
//! - the quarantine: `QUARANTINE#<id>` / `#` (and `PART#00000`... for large payloads), listed
//!   newest first through `gsi1` under `QUARANTINE`;
//! - closes: the registry `CLOSES` / `<close id>`, and under `CLOSE#<close id>` the snapshot's
//!   parts `PART#00000`... and the adjustments `ADJ#<event_sid>`; the marker of each closed
//!   day `CLOSEDDAY#<day>` / `#`, and the registration lock `CLOSES#LOCK` / `#`;
//! - the archived days: `ARCHIVED` / `<day>`, whose new events every writer quarantines;
//! - alerts: the rules `ALERTRULES` / `#`; each alert `ALERTS#<month of its period>` /
//!   `<its key>`; a `per: total` rule's sums `ALERTSUM#<rule>#<period's first day>#<subject>`
//!   / `#`, and the checkpoint of a `per: sim` rule's sum `ALERTSIM#<rule>#<first day>#<sim>`
//!   / `#`; what was applied of a stream batch `ALERTBATCH#<its first record's eventID>` / `#`;
//!   the SIMs a silence rule has seen `ALERTSEEN#<rule>#<shard>` / `<sim>`;
//! - documents applied whole (`customers`, `zones`, `plans`): the head `DOC#<name>` / `#`
//!   naming the version in force and its hash, each text in parts `DOC#<name>#<sha256>` /
//!   `PART#00000`...;
//! - pushes of invoice lines: `PUSH#<target>#<period start>#<period end>` / `<line id>`.

use chrono::NaiveDate;
use kore_ingest_core::event::DedupeKey;
use kore_ingest_core::time::day_text;
use kore_ingest_core::usage::Booking;
use sha2::{Digest, Sha256};

/// Sort key of items that are alone in their partition.
pub const SINGLE: &str = "#";

/// How many partitions the time index of events without usage is spread over: at a burst of
/// 11,000 such events a second, about 350 index writes a second each, well under
/// DynamoDB's 1,000 per key.
pub const SHARDS: u8 = 32;

/// How many partitions each day's usage rollups are spread over. At a burst of 11,000 new
/// usage events a second (1,000,000 SIMs, 96 windows a day, ten times the mean), each
/// partition key takes about 350 WCU/s, well under DynamoDB's 1,000 per key.
pub const USAGE_SHARDS: u8 = 64;

/// The time index and the quarantine list.
pub const TIME_INDEX: &str = "gsi1";

// ---- event records --------------------------------------------------------------------

pub const EVENT_PK_PREFIX: &str = "EVENT#";

pub fn event_pk(key: &DedupeKey) -> String {
    format!("{EVENT_PK_PREFIX}{key}")
}

/// The event key of an event record's partition key.
pub fn event_of_pk(pk: &str) -> Option<&str> {
    pk.strip_prefix(EVENT_PK_PREFIX)
}

/// The time index entry of an event without usage: partition and sort key.
pub fn time_index_keys(key: &DedupeKey, day: NaiveDate, event_time: &str) -> (String, String) {
    (
        events_by_day_pk(day, shard_of(key.as_str())),
        format!("{event_time}#{key}"),
    )
}

pub fn events_by_day_pk(day: NaiveDate, shard: u8) -> String {
    format!("EVENTS#{}#{shard}", day_text(day))
}

/// `(event time, event sid)` of a time index sort key.
pub fn time_index_entry(sk: &str) -> Option<(&str, &str)> {
    sk.split_once('#')
}

/// A stable shard in `0..SHARDS` for any string.
pub fn shard_of(value: &str) -> u8 {
    Sha256::digest(value.as_bytes())[0] % SHARDS
}

// ---- usage rollups ----------------------------------------------------------------------

const USAGE_PK_PREFIX: &str = "USAGE#";

/// The partition of one day's rollups for the SIMs of one shard.
pub fn usage_pk(day: NaiveDate, shard: u8) -> String {
    format!("{USAGE_PK_PREFIX}{}#{shard}", day_text(day))
}

/// The day of a rollup's partition key.
pub fn day_of_usage_pk(pk: &str) -> Option<NaiveDate> {
    let day = pk.strip_prefix(USAGE_PK_PREFIX)?.split('#').next()?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The shard of a SIM's rollups.
pub fn usage_shard(sim_sid: &str) -> u8 {
    let digest = Sha256::digest(sim_sid.as_bytes());
    (u16::from_be_bytes([digest[0], digest[1]]) % u16::from(USAGE_SHARDS)) as u8
}

/// The key of the rollup of one booking on one day.
pub fn rollup_key(day: NaiveDate, booking: &Booking) -> (String, String) {
    (
        usage_pk(day, usage_shard(&booking.sim_sid)),
        booking_sk(booking),
    )
}

/// A rollup's sort key: the booking, `#`-separated, unknown parts empty. `%` and `#` inside
/// a value are escaped, so any value round-trips.
pub fn booking_sk(booking: &Booking) -> String {
    [
        escape(&booking.sim_sid),
        escape(booking.account_sid.as_deref().unwrap_or_default()),
        escape(booking.fleet_sid.as_deref().unwrap_or_default()),
        escape(booking.network_sid.as_deref().unwrap_or_default()),
        escape(booking.iso_country.as_deref().unwrap_or_default()),
    ]
    .join("#")
}

pub fn booking_of_sk(sk: &str) -> Option<Booking> {
    let parts: Vec<Option<String>> = sk
        .split('#')
        .map(|p| (!p.is_empty()).then(|| p.replace("%23", "#").replace("%25", "%")))
        .collect();
    let [sim, account, fleet, network, country] = <[Option<String>; 5]>::try_from(parts).ok()?;
    Some(Booking {
        sim_sid: sim?,
        account_sid: account,
        fleet_sid: fleet,
        network_sid: network,
        iso_country: country,
    })
}

/// The prefix of every rollup sort key of one SIM.
pub fn sim_sk_prefix(sim_sid: &str) -> String {
    format!("{}#", escape(sim_sid))
}

fn escape(value: &str) -> String {
    value.replace('%', "%25").replace('#', "%23")
}

// ---- booking lists and SIM status ------------------------------------------------------

pub fn sim_pk(sim_sid: &str) -> String {
    format!("SIM#{sim_sid}")
}

pub const BOOKED_SK_PREFIX: &str = "BOOKED#";

/// Sort key of a booking list: the day, then the first event of the commit (unique).
pub fn booked_sk(day: NaiveDate, first_event: &DedupeKey) -> String {
    format!("{BOOKED_SK_PREFIX}{}#{first_event}", day_text(day))
}

/// The lowest and highest sort keys of the booking lists of the days `first` to `last`.
pub fn booked_sk_range(first: NaiveDate, last: NaiveDate) -> (String, String) {
    (
        format!("{BOOKED_SK_PREFIX}{}", day_text(first)),
        // `$` is the byte after the `#` that follows the day: every key of the last day,
        // whatever its event id (free text, any UTF-8), sorts below it, and the next day's
        // above it.
        format!("{BOOKED_SK_PREFIX}{}$", day_text(last)),
    )
}

/// The day of a booking list's sort key.
pub fn day_of_booked_sk(sk: &str) -> Option<NaiveDate> {
    let day = sk.strip_prefix(BOOKED_SK_PREFIX)?.get(..10)?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The status history of a SIM, under its partition: one entry per SIM-update callback.
pub const STATUS_SK_PREFIX: &str = "STATUS#";

/// A history entry's sort key: send time, arrival (both as stored, sortable text), then the
/// callback's id, which makes it unique.
pub fn status_history_sk(sent_at: &str, received_at: &str, callback_id: &str) -> String {
    format!("{STATUS_SK_PREFIX}{sent_at}#{received_at}#{callback_id}")
}

/// The current statuses, one item per SIM (sort key: the SIM), spread over [`SHARDS`]
/// partitions so that listing them all is a few parallel queries.
pub fn sim_status_pk(sim_sid: &str) -> String {
    sim_status_shard_pk(shard_of(sim_sid))
}

pub fn sim_status_shard_pk(shard: u8) -> String {
    format!("SIMSTATUS#{shard}")
}

// ---- callbacks and the quarantine ------------------------------------------------------

const CALLBACK_PK_PREFIX: &str = "CALLBACK#";

/// A callback's id: its provider and idempotency token. What the ledger de-duplicates on, so
/// it is the id consumers de-duplicate on too.
pub fn callback_id(provider: &str, token: &str) -> String {
    format!("{provider}#{token}")
}

pub fn callback_pk(provider: &str, token: &str) -> String {
    callback_pk_of_id(&callback_id(provider, token))
}

pub fn callback_pk_of_id(id: &str) -> String {
    format!("{CALLBACK_PK_PREFIX}{id}")
}

pub fn callback_id_of_pk(pk: &str) -> Option<&str> {
    pk.strip_prefix(CALLBACK_PK_PREFIX)
}

/// The callbacks the forwarder could not put on the event bus, kept for redrive (sort key:
/// the callback's id). One partition: they are rare, and the redrive reads them all.
pub const UNFORWARDED_PK: &str = "CALLBACKS#UNFORWARDED";

pub fn quarantine_pk(id: &str) -> String {
    format!("QUARANTINE#{id}")
}

/// The quarantine list lives under one index partition: quarantined payloads are rare, and
/// listing them newest first is what operators need.
pub const QUARANTINE_INDEX_PK: &str = "QUARANTINE";

/// The list entry of a quarantined payload: newest first by receipt.
pub fn quarantine_index_sk(received_at: &str, id: &str) -> String {
    format!("{received_at}#{id}")
}

/// Sort keys of the parts of a large payload or snapshot, under its partition.
pub const PART_SK_PREFIX: &str = "PART#";

pub fn part_sk(index: usize) -> String {
    format!("{PART_SK_PREFIX}{index:05}")
}

// ---- alerts --------------------------------------------------------------------------------

/// The rules in force, one item: what `kore-usage alerts apply` wrote last.
pub const ALERT_RULES_PK: &str = "ALERTRULES";

/// The head of a document applied whole: which version is in force.
pub fn document_pk(name: &str) -> String {
    format!("DOC#{name}")
}

/// The parts of one text of a document, by its SHA-256 (hex).
pub fn document_parts_pk(name: &str, sha256: &str) -> String {
    format!("DOC#{name}#{sha256}")
}

/// What was pushed of one period's invoice lines to one billing system.
pub fn push_pk(target: &str, start: &str, end: &str) -> String {
    format!("PUSH#{target}#{start}#{end}")
}

const ALERTS_PK_PREFIX: &str = "ALERTS#";

/// The alerts whose period starts in one month (`YYYY-MM`), sorted by their key
/// (`kore_ingest_core::alerts::Alert::key`, which starts with the period's start).
pub fn alerts_pk(period_start: &str) -> String {
    format!(
        "{ALERTS_PK_PREFIX}{}",
        period_start.get(..7).unwrap_or(period_start)
    )
}

/// Whether a partition key is one of the alerts' months.
pub fn is_alerts_pk(pk: &str) -> bool {
    pk.starts_with(ALERTS_PK_PREFIX)
}

/// The running sum of a `per: total` usage rule for one subject and period (sort key `#`).
pub fn alert_sum_pk(rule_id: &str, subject: &str, first_day: NaiveDate) -> String {
    format!("ALERTSUM#{rule_id}#{}#{subject}", day_text(first_day))
}

/// The checkpoint of a `per: sim` rule's sum for one SIM and period: the settled days as
/// they were last read (sort key `#`).
pub fn alert_sim_sum_pk(rule_id: &str, sim_sid: &str, first_day: NaiveDate) -> String {
    format!("ALERTSIM#{rule_id}#{}#{sim_sid}", day_text(first_day))
}

/// What the alert function applied of the stream batch whose first record has the
/// `eventID` `first_record` (unique in the stream).
pub fn alert_batch_pk(first_record: &str) -> String {
    format!("ALERTBATCH#{first_record}")
}

/// The SIMs a silence rule has seen, spread over [`SHARDS`] partitions (sort key: the SIM)
/// so that the scheduled check reads them with a few parallel queries, never a scan.
pub fn alert_seen_pk(rule_id: &str, sim_sid: &str) -> String {
    alert_seen_shard_pk(rule_id, shard_of(sim_sid))
}

pub fn alert_seen_shard_pk(rule_id: &str, shard: u8) -> String {
    format!("ALERTSEEN#{rule_id}#{shard}")
}

// ---- archived days -----------------------------------------------------------------------

/// The partition that lists the archived days (sort key `YYYY-MM-DD`): few, and every writer
/// reads them all.
pub const ARCHIVED_PK: &str = "ARCHIVED";

// ---- closes ------------------------------------------------------------------------------

/// The partition that lists every close: closes are few, and every function reads them all.
pub const CLOSES_PK: &str = "CLOSES";

/// The item whose version every registration of a close bumps, so that two registrations
/// at once cannot both pass the overlap check.
pub const CLOSES_LOCK_PK: &str = "CLOSES#LOCK";

/// The marker of one UTC day: which closes cover it. Every commit of usage its writer does
/// not know to be in a closed period checks the marker of its day, so the commit itself
/// decides, whatever the writer's copy of the closes.
pub fn closed_day_pk(day: NaiveDate) -> String {
    format!("CLOSEDDAY#{}", day_text(day))
}

pub fn close_pk(close_id: &str) -> String {
    format!("CLOSE#{close_id}")
}

pub const ADJUSTMENT_SK_PREFIX: &str = "ADJ#";

pub fn adjustment_sk(event: &DedupeKey) -> String {
    format!("{ADJUSTMENT_SK_PREFIX}{event}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, item 4: an event id is free text (a CloudEvent `id` when `event_sid` is
    /// absent), so the booking list it starts may sort after any printable character.
    #[test]
    fn every_booking_list_of_the_last_day_is_in_the_range_whatever_its_first_id() {
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let (low, high) = booked_sk_range(day("2024-11-02"), day("2024-11-03"));
        for id in ["EZ1", "~", "~~zz", "é-vent", "\u{10FFFF}", "test-event"] {
            let key = DedupeKey::new(id, "id").unwrap();
            for listed in ["2024-11-02", "2024-11-03"] {
                let sk = booked_sk(day(listed), &key);
                assert!(low <= sk && sk <= high, "{sk} outside {low}..={high}");
            }
            for outside in ["2024-11-01", "2024-11-04"] {
                let sk = booked_sk(day(outside), &key);
                assert!(!(low <= sk && sk <= high), "{sk} inside {low}..={high}");
            }
        }
    }

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

    #[test]
    fn booking_sort_keys_round_trip_any_value() {
        let booking = Booking {
            sim_sid: "HS%1".into(),
            account_sid: Some("AC1".into()),
            fleet_sid: Some("HF#1".into()),
            network_sid: None,
            iso_country: Some("DE".into()),
        };
        let sk = booking_sk(&booking);
        assert_eq!(sk, "HS%251#AC1#HF%231##DE");
        assert_eq!(booking_of_sk(&sk), Some(booking));
        assert!(sk.starts_with(&sim_sk_prefix("HS%1")));
    }

    #[test]
    fn days_read_back_from_their_keys() {
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        assert_eq!(day_of_usage_pk(&usage_pk(day, 7)), Some(day));
        let key = DedupeKey::new("EZ1", "test").unwrap();
        assert_eq!(day_of_booked_sk(&booked_sk(day, &key)), Some(day));
        let (low, high) = booked_sk_range(day, day);
        assert!(low < booked_sk(day, &key) && booked_sk(day, &key) < high);
    }
}
