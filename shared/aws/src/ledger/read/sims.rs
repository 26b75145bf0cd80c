//! SIMs over a range: which were active on which UTC days, from their status history (the
//! callbacks) and the usage booked to them (the rollups).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use futures::StreamExt;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::sim_status::{Activity, StatusChange, activity};
use kore_ingest_core::time::TimeRange;

use crate::ledger::callbacks::Callbacks;
use crate::ledger::items::callback::SimStatusEntry;
use crate::ledger::items::rollup::BOOKING_ONLY;
use crate::ledger::read::rollups::Rollups;

/// One SIM known in a range: it had usage booked in it, or a status sent before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimActivity {
    pub sim_sid: String,
    pub account_sid: Option<String>,
    pub activity: Activity,
    /// Per day with usage, the fleet it was booked to (the greatest SID if several): the
    /// callbacks do not name fleets, and an invoice bills a SIM-day to its fleet's customer.
    pub fleets: BTreeMap<NaiveDate, String>,
}

/// What the rollups tell of one SIM's usage in the range.
#[derive(Debug, Clone, Default)]
struct Usage {
    account_sid: Option<String>,
    days: BTreeSet<NaiveDate>,
    fleets: BTreeMap<NaiveDate, String>,
}

/// Every SIM known in `range` (whole UTC days), by SIM; with `account`, the SIMs whose
/// status or booked usage names it (and only the usage booked to it).
pub async fn sims_active(
    callbacks: &Callbacks,
    rollups: &Rollups,
    range: &TimeRange,
    account: Option<&str>,
    concurrency: usize,
) -> Result<Vec<SimActivity>, LedgerError> {
    let days = range.days();
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for rollup in rollups
        .of_days(&days, None, false, Some(BOOKING_ONLY))
        .await?
    {
        let booking = rollup.booking;
        if account.is_some_and(|a| booking.account_sid.as_deref() != Some(a)) {
            continue;
        }
        let entry = usage.entry(booking.sim_sid).or_default();
        entry.account_sid = entry.account_sid.take().or(booking.account_sid);
        entry.days.insert(rollup.day);
        if let Some(fleet) = booking.fleet_sid {
            let on_day = entry.fleets.entry(rollup.day).or_default();
            *on_day = fleet.max(std::mem::take(on_day));
        }
    }
    let statuses: Vec<SimStatusEntry> = callbacks
        .statuses()
        .await?
        .into_iter()
        .filter(|s| account.is_none() || s.account_sid.as_deref() == account)
        .collect();

    // A status sent before the range holds through it: the SIM's history is read only when
    // its current status was sent in the range or after it.
    let histories = statuses.iter().map(|status| async move {
        let entries: Vec<StatusChange> = if status.change.sent_at < range.start() {
            vec![status.change.clone()]
        } else {
            callbacks
                .history(&status.sim_sid)
                .await?
                .into_iter()
                .map(|e| e.change)
                .collect()
        };
        Ok::<_, LedgerError>((status.sim_sid.clone(), status.account_sid.clone(), entries))
    });
    let mut results = futures::stream::iter(histories).buffer_unordered(concurrency);
    let mut known: BTreeMap<String, (Option<String>, Vec<StatusChange>)> = BTreeMap::new();
    while let Some(result) = results.next().await {
        let (sim, account_sid, entries) = result?;
        known.insert(sim, (account_sid, entries));
    }

    let sims: BTreeSet<&String> = usage.keys().chain(known.keys()).collect();
    let mut records = Vec::new();
    for sim in sims {
        let (status_account, entries) = known.get(sim).cloned().unwrap_or_default();
        let used = usage.get(sim).cloned().unwrap_or_default();
        let status_in_range = entries.iter().any(|e| e.sent_at < range.end());
        if !status_in_range && used.days.is_empty() {
            continue;
        }
        records.push(SimActivity {
            sim_sid: sim.clone(),
            account_sid: status_account.or(used.account_sid),
            activity: activity(entries, range, &used.days),
            fleets: used.fleets,
        });
    }
    Ok(records)
}
