//! Closed periods: an invoice's usage frozen once, and the usage that arrives late booked as
//! adjustments of it.
//!
//! `kore-usage close` registers the period (account, or every account; whole UTC days), waits
//! until every function has seen it, then stores a snapshot: one line per booking (account,
//! SIM, fleet, network, country) with its usage and names, in a canonical text whose SHA-256
//! is kept with it. From the moment a function has seen the close, each new usage event it
//! books into the period is also written, in the same transaction, as an adjustment of the
//! period and counted in its rollup's late counters (`xu`, `xd`, `xt`, `xn`). The snapshot is
//! each rollup's usage minus its late counters, read from one item at once, so it holds
//! exactly what was committed before the functions saw the close, whatever arrives during
//! the reading: snapshot + adjustments = live rollups, always.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::items::{self, key, number_attr, string_attr};
use super::{Item, LedgerError, PutIfAbsent, UsageLedger, timestamp};
use crate::event::DataVolume;
use crate::usage::{Booking, BookingNames, HourUsage, UsageCell, days_between, z_time};

/// The partition that lists every close: closes are few, and every function reads them all.
const REGISTRY_PK: &str = "CLOSES";
/// A snapshot part holds at most this much canonical text before deflating (items hold
/// 400 KB).
const PART_TEXT_BYTES: usize = 300_000;

/// Whether the snapshot is stored yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    /// Registered; the functions are learning of it; no snapshot yet.
    Settling,
    Closed,
}

/// A closed (or closing) period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// `None`: every account.
    pub account_sid: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub closed_at: String,
    pub state: CloseState,
    /// SHA-256 (hex) of the snapshot's canonical text, once stored.
    pub snapshot_sha256: Option<String>,
    pub snapshot_at: Option<String>,
    pub lines: u64,
    pub parts: u64,
}

impl Close {
    /// `<account or *>#<start>#<end>`.
    pub fn id(&self) -> String {
        close_id(self.account_sid.as_deref(), self.start, self.end)
    }

    /// Whether usage of `account` booked on `day` falls in this period.
    pub fn covers(&self, account_sid: Option<&str>, day: NaiveDate) -> bool {
        let Some(at) = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) else {
            return false;
        };
        let account_matches = match &self.account_sid {
            None => true,
            Some(account) => account_sid == Some(account.as_str()),
        };
        account_matches && self.start <= at && at < self.end
    }

    /// Two closes that could claim the same usage.
    pub fn overlaps(
        &self,
        account_sid: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> bool {
        let accounts_meet = match (&self.account_sid, account_sid) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        accounts_meet && self.start < end && start < self.end
    }

    fn from_item(item: &Item) -> Result<Self, LedgerError> {
        let sk = string_attr(item, "sk").unwrap_or_default();
        let corrupt = |reason: &str| LedgerError::CorruptItem {
            pk: format!("{REGISTRY_PK} {sk}"),
            reason: reason.to_owned(),
        };
        let time = |name: &str| {
            string_attr(item, name)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| corrupt(&format!("no {name}")))
        };
        let text = |name: &str| string_attr(item, name).map(str::to_owned);
        Ok(Close {
            account_sid: text("account_sid").filter(|a| a != "*"),
            start: time("start")?,
            end: time("end")?,
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
}

pub fn close_id(account_sid: Option<&str>, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!(
        "{}#{}#{}",
        account_sid.unwrap_or("*"),
        z_time(start),
        z_time(end)
    )
}

fn close_pk(id: &str) -> String {
    format!("CLOSE#{id}")
}

const PART_SK_PREFIX: &str = "PART#";
const ADJUSTMENT_SK_PREFIX: &str = "ADJ#";

/// One line of a snapshot: a booking's usage over the period, with its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotLine {
    pub booking: Booking,
    pub names: BookingNames,
    pub usage: HourUsage,
}

/// A snapshot's canonical text: one tab-separated line per booking, sorted by account, SIM,
/// fleet, network and country; tabs, newlines and backslashes inside a value escaped.
pub fn canonical_text(lines: &[SnapshotLine]) -> String {
    let mut sorted: Vec<&SnapshotLine> = lines.iter().collect();
    sorted.sort_by(|a, b| booking_order(&a.booking).cmp(&booking_order(&b.booking)));
    let mut text = String::new();
    for line in sorted {
        let b = &line.booking;
        let n = &line.names;
        let u = &line.usage;
        let fields = [
            escape(b.account_sid.as_deref()),
            escape(Some(&b.sim_sid)),
            escape(b.fleet_sid.as_deref()),
            escape(b.network_sid.as_deref()),
            escape(b.iso_country.as_deref()),
            u.usage.upload.to_string(),
            u.usage.download.to_string(),
            u.usage.total.to_string(),
            u.events.to_string(),
            escape(n.sim_iccid.as_deref()),
            escape(n.sim_unique_name.as_deref()),
            escape(n.network_name.as_deref()),
        ];
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    text
}

type BookingOrder<'a> = (
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn booking_order(b: &Booking) -> BookingOrder<'_> {
    (
        b.account_sid.as_deref(),
        &b.sim_sid,
        b.fleet_sid.as_deref(),
        b.network_sid.as_deref(),
        b.iso_country.as_deref(),
    )
}

fn escape(value: Option<&str>) -> String {
    value
        .unwrap_or_default()
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    Some(out)
}

/// The lines of a canonical text.
pub fn parse_canonical(text: &str) -> Result<Vec<SnapshotLine>, String> {
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [
                account,
                sim,
                fleet,
                network,
                country,
                up,
                down,
                total,
                events,
                iccid,
                name,
                network_name,
            ] = <[&str; 12]>::try_from(fields)
                .map_err(|_| format!("line {}: not 12 fields", n + 1))?;
            let number = |field: &str| {
                field
                    .parse::<u64>()
                    .map_err(|_| format!("line {}: `{field}` is not a count", n + 1))
            };
            Ok(SnapshotLine {
                booking: Booking {
                    sim_sid: unescape(sim).ok_or_else(|| format!("line {}: no SIM", n + 1))?,
                    account_sid: unescape(account),
                    fleet_sid: unescape(fleet),
                    network_sid: unescape(network),
                    iso_country: unescape(country),
                },
                names: BookingNames {
                    sim_iccid: unescape(iccid),
                    sim_unique_name: unescape(name),
                    network_name: unescape(network_name),
                },
                usage: HourUsage {
                    usage: DataVolume {
                        upload: number(up)?,
                        download: number(down)?,
                        total: number(total)?,
                    },
                    events: number(events)?,
                },
            })
        })
        .collect()
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A late usage event recorded against a closed period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub close_id: String,
    pub event_sid: String,
    pub booking: Booking,
    /// The UTC hour the usage was booked in.
    pub booked_hour: DateTime<Utc>,
    pub usage: DataVolume,
    pub received_at: String,
}

/// The adjustment item a late event's transaction writes.
pub(crate) fn adjustment_item(
    close: &Close,
    event: &crate::event::ConnectionEvent,
    booking: &Booking,
    received_at: DateTime<Utc>,
) -> Item {
    let mut item = key(
        close_pk(&close.id()),
        &format!("{ADJUSTMENT_SK_PREFIX}{}", event.key),
    );
    let usage = event.usage.unwrap_or_default();
    item.insert(
        "booking".into(),
        AttributeValue::S(items::booking_sk(booking)),
    );
    item.insert(
        "hour".into(),
        AttributeValue::S(z_time(event.booking_hour())),
    );
    for (name, value) in [
        ("up", usage.upload),
        ("down", usage.download),
        ("total", usage.total),
    ] {
        item.insert(name.into(), AttributeValue::N(value.to_string()));
    }
    item.insert("ra".into(), AttributeValue::S(timestamp(received_at)));
    item
}

fn adjustment_of(close_id: &str, item: &Item) -> Result<Adjustment, LedgerError> {
    let sk = string_attr(item, "sk").unwrap_or_default();
    let corrupt = |reason: &str| LedgerError::CorruptItem {
        pk: close_pk(close_id),
        reason: format!("{sk}: {reason}"),
    };
    let booking = string_attr(item, "booking")
        .and_then(items::booking_of_sk)
        .ok_or_else(|| corrupt("bad booking"))?;
    let booked_hour = string_attr(item, "hour")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| corrupt("bad hour"))?
        .with_timezone(&Utc);
    Ok(Adjustment {
        close_id: close_id.to_owned(),
        event_sid: sk.trim_start_matches(ADJUSTMENT_SK_PREFIX).to_owned(),
        booking,
        booked_hour,
        usage: DataVolume {
            upload: number_attr(item, "up").unwrap_or(0),
            download: number_attr(item, "down").unwrap_or(0),
            total: number_attr(item, "total").unwrap_or(0),
        },
        received_at: string_attr(item, "ra").unwrap_or_default().to_owned(),
    })
}

/// Why a close cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseError {
    #[error("the period from {start} to {end} was already closed at {closed_at}")]
    AlreadyClosed {
        start: String,
        end: String,
        closed_at: String,
    },
    #[error("the period overlaps the closed period from {start} to {end} ({account})")]
    Overlaps {
        start: String,
        end: String,
        account: String,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The cache of closes every function keeps: read again once it is older than the TTL.
#[derive(Debug, Default)]
pub(crate) struct ClosesCache {
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Close>>)>>,
}

impl UsageLedger {
    /// Every close, read consistently.
    pub async fn closes(&self) -> Result<Vec<Close>, LedgerError> {
        let items = self
            .query_all(None, "pk = :pk", &[(":pk", REGISTRY_PK.to_owned())], true)
            .await?;
        items.iter().map(Close::from_item).collect()
    }

    /// The closes, from the per-process cache while it is younger than
    /// `closed_periods_ttl`: how the functions learn of a close without a read per batch.
    pub(crate) async fn cached_closes(&self) -> Result<Arc<Vec<Close>>, LedgerError> {
        let mut cached = self.closes_cache.cached.lock().await;
        if let Some((at, closes)) = cached.as_ref()
            && at.elapsed() < self.config.closed_periods_ttl
        {
            return Ok(closes.clone());
        }
        let closes = Arc::new(self.closes().await?);
        *cached = Some((Instant::now(), closes.clone()));
        Ok(closes)
    }

    /// Registers a close (or finds the one being settled for the same period, to resume it).
    pub async fn register_close(
        &self,
        account_sid: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Close, CloseError> {
        let id = close_id(account_sid, start, end);
        for close in self.closes().await? {
            if close.id() == id {
                return match close.state {
                    CloseState::Settling => Ok(close),
                    CloseState::Closed => Err(CloseError::AlreadyClosed {
                        start: z_time(start),
                        end: z_time(end),
                        closed_at: close.closed_at,
                    }),
                };
            }
            if close.overlaps(account_sid, start, end) {
                return Err(CloseError::Overlaps {
                    start: z_time(close.start),
                    end: z_time(close.end),
                    account: close
                        .account_sid
                        .clone()
                        .unwrap_or_else(|| "every account".into()),
                });
            }
        }
        let close = Close {
            account_sid: account_sid.map(str::to_owned),
            start,
            end,
            closed_at: timestamp(Utc::now()),
            state: CloseState::Settling,
            snapshot_sha256: None,
            snapshot_at: None,
            lines: 0,
            parts: 0,
        };
        let mut item = key(REGISTRY_PK.to_owned(), &id);
        let s = |v: String| AttributeValue::S(v);
        item.insert(
            "account_sid".into(),
            s(account_sid.unwrap_or("*").to_owned()),
        );
        item.insert("start".into(), s(z_time(start)));
        item.insert("end".into(), s(z_time(end)));
        item.insert("closed_at".into(), s(close.closed_at.clone()));
        item.insert("state".into(), s("settling".into()));
        match self.put_if_absent(item).await? {
            PutIfAbsent::Created => Ok(close),
            // Another close of the same period got there first: say when.
            PutIfAbsent::Exists(existing) => Err(CloseError::AlreadyClosed {
                start: z_time(start),
                end: z_time(end),
                closed_at: existing
                    .as_ref()
                    .and_then(|item| item.get("closed_at"))
                    .and_then(|value| value.as_s().ok())
                    .cloned()
                    .unwrap_or_else(|| "just now, by another close".into()),
            }),
        }
    }

    /// The snapshot lines of a period as the rollups say now: usage minus late usage, per
    /// booking, summed over the period's days.
    pub async fn snapshot_lines(&self, close: &Close) -> Result<Vec<SnapshotLine>, LedgerError> {
        let days = days_between(close.start, close.end);
        let rollups = self
            .rollups(&days, None, true, Some(items::CLOSE_READ))
            .await?;
        let mut lines: BTreeMap<BookingOrderOwned, SnapshotLine> = BTreeMap::new();
        let mut latest: HashMap<BookingOrderOwned, NaiveDate> = HashMap::new();
        for rollup in rollups {
            if !close.covers(rollup.booking.account_sid.as_deref(), rollup.day) {
                continue;
            }
            let (Some(day), late) = (rollup.day_total, rollup.late.unwrap_or_default()) else {
                continue;
            };
            let before = subtract(day, late)?;
            let order = owned_order(&rollup.booking);
            let line = lines.entry(order.clone()).or_insert_with(|| SnapshotLine {
                booking: rollup.booking.clone(),
                names: BookingNames::default(),
                usage: HourUsage::default(),
            });
            line.usage = line
                .usage
                .checked_add(before)
                .ok_or_else(|| LedgerError::Invalid("usage counts overflow".into()))?;
            if latest.get(&order).is_none_or(|d| *d <= rollup.day) {
                latest.insert(order, rollup.day);
                line.names = rollup.names.clone();
            }
        }
        Ok(lines.into_values().filter(|l| l.usage.events > 0).collect())
    }

    /// Stores the snapshot of a settling close and marks it closed. Returns the close.
    pub async fn store_snapshot(&self, close: &Close) -> Result<Close, LedgerError> {
        let lines = self.snapshot_lines(close).await?;
        let text = canonical_text(&lines);
        let sha256 = sha256_hex(&text);
        let id = close.id();
        let mut parts = 0u64;
        for chunk in split_lines(&text, PART_TEXT_BYTES) {
            let mut item = key(close_pk(&id), &format!("{PART_SK_PREFIX}{parts:05}"));
            let deflated = miniz_oxide::deflate::compress_to_vec(chunk.as_bytes(), 6);
            item.insert("z".into(), AttributeValue::B(Blob::new(deflated)));
            self.client
                .put_item()
                .table_name(self.table_name())
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| LedgerError::from_sdk("PutItem", e))?;
            parts += 1;
        }
        let snapshot_at = timestamp(Utc::now());
        self.client
            .update_item()
            .table_name(self.table_name())
            .set_key(Some(key(REGISTRY_PK.to_owned(), &id)))
            .update_expression(
                "SET #state = :closed, snapshot_sha256 = :sha, snapshot_at = :at, #lines = :lines, parts = :parts",
            )
            .condition_expression("#state = :settling")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#lines", "lines")
            .expression_attribute_values(":closed", AttributeValue::S("closed".into()))
            .expression_attribute_values(":settling", AttributeValue::S("settling".into()))
            .expression_attribute_values(":sha", AttributeValue::S(sha256.clone()))
            .expression_attribute_values(":at", AttributeValue::S(snapshot_at.clone()))
            .expression_attribute_values(":lines", AttributeValue::N(lines.len().to_string()))
            .expression_attribute_values(":parts", AttributeValue::N(parts.to_string()))
            .send()
            .await
            .map_err(|e| LedgerError::from_sdk("UpdateItem", e))?;
        Ok(Close {
            state: CloseState::Closed,
            snapshot_sha256: Some(sha256),
            snapshot_at: Some(snapshot_at),
            lines: lines.len() as u64,
            parts,
            ..close.clone()
        })
    }

    /// The close of exactly this period (for the account, else for every account).
    pub async fn find_close(
        &self,
        account_sid: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Option<Close>, LedgerError> {
        let closes = self.closes().await?;
        let exact = |account: Option<&str>| {
            closes
                .iter()
                .find(|c| c.account_sid.as_deref() == account && c.start == start && c.end == end)
                .cloned()
        };
        Ok(exact(account_sid).or_else(|| account_sid.and(exact(None))))
    }

    /// A stored snapshot's canonical text, as stored (parts in order).
    pub async fn snapshot_text(&self, close: &Close) -> Result<String, LedgerError> {
        let id = close.id();
        let items = self
            .query_prefix(close_pk(&id), PART_SK_PREFIX, true, None)
            .await?;
        let mut text = String::new();
        for item in items {
            let Some(AttributeValue::B(deflated)) = item.get("z") else {
                return Err(LedgerError::CorruptItem {
                    pk: close_pk(&id),
                    reason: "a snapshot part without data".into(),
                });
            };
            let raw =
                miniz_oxide::inflate::decompress_to_vec_with_limit(deflated.as_ref(), 64 << 20)
                    .map_err(|_| LedgerError::CorruptItem {
                        pk: close_pk(&id),
                        reason: "a snapshot part does not inflate".into(),
                    })?;
            text.push_str(
                &String::from_utf8(raw).map_err(|_| LedgerError::CorruptItem {
                    pk: close_pk(&id),
                    reason: "a snapshot part is not UTF-8".into(),
                })?,
            );
        }
        Ok(text)
    }

    /// The adjustments recorded against a close.
    pub async fn adjustments(&self, close: &Close) -> Result<Vec<Adjustment>, LedgerError> {
        let id = close.id();
        let items = self
            .query_prefix(close_pk(&id), ADJUSTMENT_SK_PREFIX, true, None)
            .await?;
        items.iter().map(|item| adjustment_of(&id, item)).collect()
    }

    /// Checks a close: the snapshot still hashes to what was stored, and, booking by booking,
    /// snapshot + adjustments = the live rollups (and the rollups' late counters = the
    /// adjustments). Returns every discrepancy, each as one sentence.
    pub async fn verify_close(&self, close: &Close) -> Result<Vec<String>, LedgerError> {
        let mut problems = Vec::new();
        let text = self.snapshot_text(close).await?;
        let sha256 = sha256_hex(&text);
        if close.snapshot_sha256.as_deref() != Some(sha256.as_str()) {
            problems.push(format!(
                "the snapshot hashes to {sha256}, not the {} recorded when it was closed",
                close.snapshot_sha256.as_deref().unwrap_or("(none)")
            ));
        }
        let snapshot = match parse_canonical(&text) {
            Ok(lines) => lines,
            Err(reason) => {
                problems.push(format!("the snapshot cannot be read: {reason}"));
                return Ok(problems);
            }
        };
        let days = days_between(close.start, close.end);
        let mut live: BTreeMap<BookingOrderOwned, (HourUsage, HourUsage)> = BTreeMap::new();
        for rollup in self
            .rollups(&days, None, true, Some(items::CLOSE_READ))
            .await?
        {
            if !close.covers(rollup.booking.account_sid.as_deref(), rollup.day) {
                continue;
            }
            let entry = live.entry(owned_order(&rollup.booking)).or_default();
            entry.0 = add(entry.0, rollup.day_total.unwrap_or_default())?;
            entry.1 = add(entry.1, rollup.late.unwrap_or_default())?;
        }
        let mut expected: BTreeMap<BookingOrderOwned, (HourUsage, HourUsage)> = BTreeMap::new();
        for line in &snapshot {
            expected.entry(owned_order(&line.booking)).or_default().0 = line.usage;
        }
        for adjustment in self.adjustments(close).await? {
            let entry = expected
                .entry(owned_order(&adjustment.booking))
                .or_default();
            entry.1 = add(entry.1, HourUsage::window(adjustment.usage))?;
        }
        let keys: std::collections::BTreeSet<&BookingOrderOwned> =
            live.keys().chain(expected.keys()).collect();
        for key in keys {
            let (live_usage, late) = live.get(key).copied().unwrap_or_default();
            let (snapshot_usage, adjusted) = expected.get(key).copied().unwrap_or_default();
            let booking = format!("{} {}", key.1, key.0.as_deref().unwrap_or("-"));
            if add(snapshot_usage, adjusted)? != live_usage {
                problems.push(format!(
                    "{booking}: snapshot {} B + adjustments {} B is not the live {} B",
                    snapshot_usage.usage.total, adjusted.usage.total, live_usage.usage.total
                ));
            } else if late != adjusted {
                problems.push(format!(
                    "{booking}: the rollups count {} B of late usage, the adjustments {} B",
                    late.usage.total, adjusted.usage.total
                ));
            }
        }
        Ok(problems)
    }
}

/// The snapshot lines of a close as usage cells: the whole period as one hour, its start.
pub fn snapshot_cells(close: &Close, lines: &[SnapshotLine]) -> Vec<UsageCell> {
    lines
        .iter()
        .map(|line| UsageCell {
            booking: line.booking.clone(),
            hour: close.start,
            usage: line.usage,
            names: line.names.clone(),
        })
        .collect()
}

type BookingOrderOwned = (
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn owned_order(b: &Booking) -> BookingOrderOwned {
    (
        b.account_sid.clone(),
        b.sim_sid.clone(),
        b.fleet_sid.clone(),
        b.network_sid.clone(),
        b.iso_country.clone(),
    )
}

fn add(a: HourUsage, b: HourUsage) -> Result<HourUsage, LedgerError> {
    a.checked_add(b)
        .ok_or_else(|| LedgerError::Invalid("usage counts overflow".into()))
}

fn subtract(a: HourUsage, b: HourUsage) -> Result<HourUsage, LedgerError> {
    let less = |x: u64, y: u64| {
        x.checked_sub(y).ok_or_else(|| {
            LedgerError::Invalid("a rollup counts more late usage than usage".into())
        })
    };
    Ok(HourUsage {
        usage: DataVolume {
            upload: less(a.usage.upload, b.usage.upload)?,
            download: less(a.usage.download, b.usage.download)?,
            total: less(a.usage.total, b.usage.total)?,
        },
        events: less(a.events, b.events)?,
    })
}

/// The text cut after whole lines, each piece at most `limit` bytes (a longer line alone).
fn split_lines(text: &str, limit: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (at, _) in text.match_indices('\n') {
        let line_end = at + 1;
        if line_end - start > limit && end > start {
            pieces.push(&text[start..end]);
            start = end;
        }
        end = line_end;
    }
    if end > start {
        pieces.push(&text[start..end]);
    }
    pieces
}

/// Whole UTC days: what a close covers.
pub fn is_whole_day(at: DateTime<Utc>) -> bool {
    at.hour() == 0 && at.minute() == 0 && at.second() == 0 && at.nanosecond() == 0
}

/// How long `close` waits, after registering a period, before it reads the snapshot: the
/// functions' cache of closes plus the longest a commit can take.
pub fn settle_time(closed_periods_ttl: Duration) -> Duration {
    closed_periods_ttl + Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(account: &str, sim: &str, name: &str, total: u64) -> SnapshotLine {
        SnapshotLine {
            booking: Booking {
                sim_sid: sim.into(),
                account_sid: Some(account.into()),
                fleet_sid: None,
                network_sid: Some("HW1".into()),
                iso_country: Some("DE".into()),
            },
            names: BookingNames {
                sim_iccid: Some("8988".into()),
                sim_unique_name: Some(name.into()),
                network_name: None,
            },
            usage: HourUsage {
                usage: DataVolume {
                    upload: 1,
                    download: total - 1,
                    total,
                },
                events: 2,
            },
        }
    }

    #[test]
    fn the_canonical_text_is_sorted_escaped_and_reads_back() {
        let lines = vec![
            line("AC2", "HS1", "plain", 10),
            line("AC1", "HS9", "tab\there\nand\\slash", 20),
        ];
        let text = canonical_text(&lines);
        assert!(
            text.starts_with(
                "AC1\tHS9\t\tHW1\tDE\t1\t19\t20\t2\t8988\ttab\\there\\nand\\\\slash\t\n"
            )
        );
        let back = parse_canonical(&text).unwrap();
        assert_eq!(back, vec![lines[1].clone(), lines[0].clone()]);
        // Order of the input does not change the hash; a changed count does.
        let reversed = canonical_text(&[lines[1].clone(), lines[0].clone()]);
        assert_eq!(sha256_hex(&text), sha256_hex(&reversed));
        assert_ne!(
            sha256_hex(&text),
            sha256_hex(&text.replace("\t20\t", "\t21\t"))
        );
    }

    #[test]
    fn closes_cover_their_account_and_days_and_overlap_as_claims_do() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let november = Close {
            account_sid: Some("AC1".into()),
            start: at("2024-11-01T00:00:00Z"),
            end: at("2024-12-01T00:00:00Z"),
            closed_at: String::new(),
            state: CloseState::Closed,
            snapshot_sha256: None,
            snapshot_at: None,
            lines: 0,
            parts: 0,
        };
        let day = |d: u32| NaiveDate::from_ymd_opt(2024, 11, d).unwrap();
        assert!(november.covers(Some("AC1"), day(30)));
        assert!(!november.covers(Some("AC2"), day(30)));
        assert!(!november.covers(Some("AC1"), NaiveDate::from_ymd_opt(2024, 12, 1).unwrap()));
        assert!(november.overlaps(
            Some("AC1"),
            at("2024-11-30T00:00:00Z"),
            at("2024-12-02T00:00:00Z")
        ));
        assert!(november.overlaps(None, at("2024-11-30T00:00:00Z"), at("2024-12-02T00:00:00Z")));
        assert!(!november.overlaps(
            Some("AC2"),
            at("2024-11-01T00:00:00Z"),
            at("2024-12-01T00:00:00Z")
        ));
        assert!(!november.overlaps(
            Some("AC1"),
            at("2024-12-01T00:00:00Z"),
            at("2025-01-01T00:00:00Z")
        ));
        assert_eq!(
            november.id(),
            "AC1#2024-11-01T00:00:00Z#2024-12-01T00:00:00Z"
        );
    }

    #[test]
    fn snapshot_parts_end_on_whole_lines() {
        let text = "aaaa\nbbbb\ncccc\n";
        assert_eq!(split_lines(text, 10), ["aaaa\nbbbb\n", "cccc\n"]);
        assert_eq!(split_lines(text, 3), ["aaaa\n", "bbbb\n", "cccc\n"]);
        assert_eq!(split_lines(text, 100), [text]);
        assert!(split_lines("", 10).is_empty());
    }
}
