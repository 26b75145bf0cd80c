//! The items of closed periods: the registry entry of each close, the parts of its snapshot
//! (deflated canonical text), one adjustment per late usage event, the marker of each closed
//! day (which accounts' closes cover it) and the lock registrations take.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Utc};
use kore_ingest_core::closes::{Adjustment, Close, CloseState};
use kore_ingest_core::event::{ConnectionEvent, DataVolume};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::{TimeRange, timestamp, z_time};
use kore_ingest_core::usage::Booking;

use super::attrs::{Item, bytes_attr, key, n, number_attr, s, string_attr};
use crate::ledger::keys;

/// The marker's set of the accounts whose closes cover its day.
const CLOSERS: &str = "closers";
/// How the marker names a close for every account.
const EVERY_ACCOUNT: &str = "*";
/// The lock's version.
const LOCK_VERSION: &str = "v";

/// The marker of one closed day.
pub fn closed_day_key(day: NaiveDate) -> Item {
    key(keys::closed_day_pk(day), keys::SINGLE)
}

/// The update that adds a close to the markers of its days: `ADD closers :who`.
pub fn mark_update(close: &Close) -> (&'static str, Item) {
    let who = close
        .account_sid
        .as_deref()
        .unwrap_or(EVERY_ACCOUNT)
        .to_owned();
    (
        "ADD closers :who",
        Item::from([(":who".to_owned(), AttributeValue::Ss(vec![who]))]),
    )
}

/// The condition a commit puts on a day's marker: no close covers the day for any of
/// `accounts` (`None`: an event without an account, covered only by a close for every
/// account). It mirrors `Close::covers`. Returns the expression and its values.
pub fn unclosed_condition<'a>(
    accounts: impl IntoIterator<Item = Option<&'a str>>,
) -> (String, Item) {
    let mut values = Item::from([(":every".to_owned(), s(EVERY_ACCOUNT))]);
    let mut covered = vec![format!("contains({CLOSERS}, :every)")];
    let named: std::collections::BTreeSet<&str> = accounts.into_iter().flatten().collect();
    for (i, account) in named.into_iter().enumerate() {
        values.insert(format!(":a{i}"), s(account));
        covered.push(format!("contains({CLOSERS}, :a{i})"));
    }
    (
        format!(
            "attribute_not_exists({CLOSERS}) OR NOT ({})",
            covered.join(" OR ")
        ),
        values,
    )
}

/// The lock registrations of closes take.
pub fn lock_key() -> Item {
    key(keys::CLOSES_LOCK_PK, keys::SINGLE)
}

/// The lock's version as read (0 when it was never taken).
pub fn lock_version(item: Option<&Item>) -> u64 {
    item.and_then(|item| number_attr(item, LOCK_VERSION))
        .unwrap_or(0)
}

/// Taking the lock after reading version `seen`: (update, condition, values).
pub fn lock_update(seen: u64) -> (String, String, Item) {
    (
        format!("SET {LOCK_VERSION} = :next"),
        format!("attribute_not_exists({LOCK_VERSION}) OR {LOCK_VERSION} = :seen"),
        Item::from([
            (":next".to_owned(), n(seen + 1)),
            (":seen".to_owned(), n(seen)),
        ]),
    )
}

/// A snapshot part inflates to at most this much text.
const MAX_PART_TEXT: usize = 64 << 20;

/// The registry key of a close.
pub fn registry_key(close_id: &str) -> Item {
    key(keys::CLOSES_PK, close_id)
}

/// The registry entry of a close just registered (settling, no snapshot).
pub fn registry_item(close: &Close) -> Item {
    let mut item = registry_key(&close.id());
    item.insert(
        "account_sid".into(),
        s(close.account_sid.as_deref().unwrap_or("*")),
    );
    item.insert("start".into(), s(z_time(close.period.start())));
    item.insert("end".into(), s(z_time(close.period.end())));
    item.insert("closed_at".into(), s(close.closed_at.as_str()));
    item.insert("state".into(), s("settling"));
    item
}

/// The `SET` of a close whose snapshot is stored, and its condition: still settling.
pub fn closed_update(sha256: &str, snapshot_at: &str, lines: u64, parts: u64) -> (String, Item) {
    let values = Item::from([
        (":closed".to_owned(), s("closed")),
        (":settling".to_owned(), s("settling")),
        (":sha".to_owned(), s(sha256)),
        (":at".to_owned(), s(snapshot_at)),
        (":lines".to_owned(), n(lines)),
        (":parts".to_owned(), n(parts)),
    ]);
    (
        "SET #state = :closed, snapshot_sha256 = :sha, snapshot_at = :at, #lines = :lines, parts = :parts"
            .to_owned(),
        values,
    )
}

/// A registry entry read back.
pub fn close_of(item: &Item) -> Result<Close, LedgerError> {
    let sk = string_attr(item, "sk").unwrap_or_default();
    let corrupt = |reason: &str| LedgerError::CorruptItem {
        pk: format!("{} {sk}", keys::CLOSES_PK),
        reason: reason.to_owned(),
    };
    let time = |name: &str| {
        string_attr(item, name)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| corrupt(&format!("no {name}")))
    };
    let text = |name: &str| string_attr(item, name).map(str::to_owned);
    let period = TimeRange::new(time("start")?, time("end")?)
        .map_err(|_| corrupt("its start is not before its end"))?;
    Ok(Close {
        account_sid: text("account_sid").filter(|a| a != "*"),
        period,
        closed_at: text("closed_at").unwrap_or_default(),
        state: match string_attr(item, "state") {
            Some("closed") => CloseState::Closed,
            _ => CloseState::Settling,
        },
        snapshot_sha256: text("snapshot_sha256"),
        snapshot_at: text("snapshot_at"),
        lines: number_attr(item, "lines").unwrap_or(0),
        parts: number_attr(item, "parts").unwrap_or(0),
    })
}

/// One part of a snapshot's canonical text.
pub fn snapshot_part_item(close_id: &str, index: usize, text: &str) -> Item {
    text_part_item(keys::close_pk(close_id), index, text)
}

/// The text of a snapshot part.
pub fn snapshot_part_text(close_id: &str, item: &Item) -> Result<String, LedgerError> {
    text_part_text(&keys::close_pk(close_id), item)
}

/// One part of a long text (a snapshot, a document), deflated, under `pk`.
pub fn text_part_item(pk: String, index: usize, text: &str) -> Item {
    let mut item = key(pk, keys::part_sk(index));
    let deflated = miniz_oxide::deflate::compress_to_vec(text.as_bytes(), 6);
    item.insert("z".into(), AttributeValue::B(Blob::new(deflated)));
    item
}

/// The text of a part [`text_part_item`] wrote under `pk`.
pub fn text_part_text(pk: &str, item: &Item) -> Result<String, LedgerError> {
    let corrupt = |reason: &str| LedgerError::CorruptItem {
        pk: pk.to_owned(),
        reason: reason.to_owned(),
    };
    let deflated = bytes_attr(item, "z").ok_or_else(|| corrupt("a text part without data"))?;
    let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, MAX_PART_TEXT)
        .map_err(|_| corrupt("a text part does not inflate"))?;
    String::from_utf8(raw).map_err(|_| corrupt("a text part is not UTF-8"))
}

/// The adjustment a late event's transaction writes.
pub fn adjustment_item(
    close: &Close,
    event: &ConnectionEvent,
    booking: &Booking,
    received_at: DateTime<Utc>,
    built_at: DateTime<Utc>,
) -> Item {
    let mut item = key(keys::close_pk(&close.id()), keys::adjustment_sk(&event.key));
    let usage = event.usage.unwrap_or_default();
    item.insert("booking".into(), s(keys::booking_sk(booking)));
    item.insert("hour".into(), s(z_time(event.booking_hour())));
    for (name, value) in [
        ("up", usage.upload),
        ("down", usage.download),
        ("total", usage.total),
    ] {
        item.insert(name.into(), n(value));
    }
    item.insert("ra".into(), s(timestamp(received_at)));
    item.insert("wa".into(), s(timestamp(built_at)));
    item
}

/// An adjustment read back.
pub fn adjustment_of(close_id: &str, item: &Item) -> Result<Adjustment, LedgerError> {
    let sk = string_attr(item, "sk").unwrap_or_default();
    let corrupt = |reason: &str| LedgerError::CorruptItem {
        pk: keys::close_pk(close_id),
        reason: format!("{sk}: {reason}"),
    };
    let booking = string_attr(item, "booking")
        .and_then(keys::booking_of_sk)
        .ok_or_else(|| corrupt("bad booking"))?;
    let booked_hour = string_attr(item, "hour")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| corrupt("bad hour"))?
        .with_timezone(&Utc);
    Ok(Adjustment {
        close_id: close_id.to_owned(),
        event_sid: sk
            .strip_prefix(keys::ADJUSTMENT_SK_PREFIX)
            .unwrap_or(sk)
            .to_owned(),
        booking,
        booked_hour,
        usage: DataVolume {
            upload: number_attr(item, "up").unwrap_or(0),
            download: number_attr(item, "down").unwrap_or(0),
            total: number_attr(item, "total").unwrap_or(0),
        },
        received_at: string_attr(item, "ra").unwrap_or_default().to_owned(),
        recorded_at: string_attr(item, "wa").map(str::to_owned),
    })
}
