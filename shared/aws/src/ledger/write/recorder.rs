//! The order of a batch's writes. What is stored already is read first, in one batched
//! consistent read, so that a duplicate costs no write and no request of its own; what does
//! not parse is quarantined meanwhile. New usage events are committed in transactions with
//! their rollups (and, when they fall into a closed period, their adjustment); new events
//! without usage are one conditional put each. Then every copy of an event is classified
//! against what is stored ([`kore_ingest_core::copies`]) and its delivery added, or it is
//! quarantined as a conflict (or, for an archived day's event, with that day's reason).
//!
//! Nothing received is dropped: what cannot be parsed or stored goes to the quarantine with
//! its reason, and what failed for a passing reason is reported as retryable.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use futures::StreamExt;
use kore_ingest_core::closes::Close;
use kore_ingest_core::copies::{Verdict, chains, classify, conflict_reason};
use kore_ingest_core::delivery::{Delivery, Outcome, delivery_tag};
use kore_ingest_core::event::{ConnectionEvent, DedupeKey, ParsedItem};
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::quarantine::{
    DEADLINE_REASON, QuarantineEntry, QuarantineKind, archived_copy_reason, archived_day_reason,
    past,
};
use kore_ingest_core::stored::StoredDigest;
use tokio::time::Instant;
use tracing::warn;

use super::commit::{Committed, commit_waves};
use super::copies::{Copies, write_copies};
use super::plan::{Pending, plan_commits};
use super::stored::{Stored, existing_or_fetch, refused};
use crate::ledger::archived::ArchivedDays;
use crate::ledger::closes::Closes;
use crate::ledger::items::event::{DIGEST_PROJECTION, digest_of, event_item, event_key, key_of};
use crate::ledger::quarantine::QuarantineStore;
use crate::ledger::table::{PutIfAbsent, Table, Unprocessed};

/// The write path of one ledger table.
#[derive(Debug, Clone)]
pub struct Recorder {
    table: Table,
    quarantine: QuarantineStore,
    closes: Closes,
    archived: ArchivedDays,
}

/// The new events of a batch, sorted by how they are written.
#[derive(Default)]
struct NewEvents<'a> {
    usage: Vec<Pending<'a>>,
    plain: Vec<Pending<'a>>,
    /// Booked on an archived day: quarantined, never stored.
    archived: Vec<(Pending<'a>, NaiveDate)>,
    /// Usage events not attempted: the closed periods could not be read.
    waiting: Vec<(usize, Stored)>,
}

impl Recorder {
    pub fn new(
        table: Table,
        quarantine: QuarantineStore,
        closes: Closes,
        archived: ArchivedDays,
    ) -> Self {
        Recorder {
            table,
            quarantine,
            closes,
            archived,
        }
    }

    /// Records many inputs; outcomes in input order. The first copy of an event in the
    /// input is the one stored; the others are duplicates or conflicts of it. Once
    /// `deadline` has passed no new write starts: what is left gets `Retry`.
    pub async fn record_batch(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> Vec<Outcome> {
        let chains = chains(inputs);
        let heads: Vec<(usize, &ConnectionEvent)> = chains
            .iter()
            .filter_map(|chain| inputs[chain[0]].0.as_ref().ok().map(|e| (chain[0], e)))
            .collect();
        let keys: Vec<&DedupeKey> = heads.iter().map(|(_, e)| &e.key).collect();
        let (stored, quarantined) = tokio::join!(
            self.stored_digests(&keys),
            self.quarantine_rejected(inputs, deadline)
        );
        // If the pre-check fails, the write conditions still tell.
        let mut stored = stored.unwrap_or_else(|error| {
            warn!(%error, "duplicate pre-check failed; relying on the write conditions");
            HashMap::new()
        });
        // Usage booked into a closed period is also an adjustment of it: the closes come from
        // a copy at most `closed_periods_ttl` old, and without them no usage event is written.
        let needs_closes = heads
            .iter()
            .any(|(_, e)| e.usage.is_some() && !stored.contains_key(&e.key));
        let closes = match needs_closes {
            true => Some(self.closes.cached().await),
            false => None,
        };
        // An event of an archived day is quarantined, new or a copy that would add a delivery:
        // the archived days come from a copy at most `closed_periods_ttl` old, and without
        // them neither is written.
        let archived = self.archived_days(!heads.is_empty()).await;
        let new = sort_new(inputs, &heads, &stored, closes.as_ref(), &archived);
        let refused_archived = self.quarantine_archived(&new.archived, deadline);
        let (committed, put, refused_archived) = tokio::join!(
            commit_waves(
                &self.table,
                &self.quarantine,
                plan_commits(&new.usage),
                deadline
            ),
            self.put_plain_events(&new.plain, deadline),
            refused_archived
        );
        let mut outcomes: Vec<Option<Outcome>> = vec![None; inputs.len()];
        for (index, outcome) in quarantined {
            outcomes[index] = Some(outcome);
        }
        let committed = self
            .replan_closed_meanwhile(inputs, committed, deadline)
            .await;
        let written: HashMap<usize, Stored> = committed
            .into_iter()
            .chain(put)
            .chain(new.waiting)
            .chain(refused_archived)
            .collect();
        let copies = settle_chains(
            inputs,
            &chains,
            written,
            &mut stored,
            &archived,
            &mut outcomes,
        );
        let copied = write_copies(&self.table, &self.quarantine, inputs, copies, deadline).await;
        for (index, outcome) in copied {
            outcomes[index] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Retry {
                    reason: "not attempted".into(),
                })
            })
            .collect()
    }

    /// Events whose transaction found their day closed after the batch read the closes:
    /// planned once more with the closes read afresh, now as adjustments of that close. One
    /// more close in between hands them back for retry.
    async fn replan_closed_meanwhile(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        committed: Committed,
        deadline: Option<Instant>,
    ) -> Vec<(usize, Stored)> {
        let Committed {
            mut stored,
            closed_meanwhile,
        } = committed;
        if closed_meanwhile.is_empty() {
            return stored;
        }
        let retry = |reason: String, indexes: Vec<usize>| -> Vec<(usize, Stored)> {
            indexes
                .into_iter()
                .map(|index| {
                    let outcome = Outcome::Retry {
                        reason: reason.clone(),
                    };
                    (index, Stored::Failed(outcome))
                })
                .collect()
        };
        let closes = match self.closes.refresh().await {
            Ok(closes) => closes,
            Err(error) => {
                let reason = format!("the closed periods could not be read: {error}");
                stored.extend(retry(reason, closed_meanwhile));
                return stored;
            }
        };
        let pending: Vec<Pending<'_>> = closed_meanwhile
            .iter()
            .filter_map(|index| {
                let (item, delivery) = &inputs[*index];
                let event = item.as_ref().ok()?;
                Some(Pending {
                    index: *index,
                    event,
                    delivery,
                    close: close_of(&closes, event),
                })
            })
            .collect();
        let again = commit_waves(
            &self.table,
            &self.quarantine,
            plan_commits(&pending),
            deadline,
        )
        .await;
        stored.extend(again.stored);
        stored.extend(retry(
            "closes of its booking day kept being registered while it was written".into(),
            again.closed_meanwhile,
        ));
        stored
    }

    /// The archived days; none are read for a batch without an event to check.
    async fn archived_days(
        &self,
        any_event: bool,
    ) -> Result<Arc<BTreeSet<NaiveDate>>, LedgerError> {
        match any_event {
            true => self.archived.cached().await,
            false => Ok(Arc::default()),
        }
    }

    /// The stored hash and deliveries of each key that exists (consistent batched reads, one
    /// round: keys DynamoDB leaves unprocessed count as not stored).
    async fn stored_digests(
        &self,
        keys: &[&DedupeKey],
    ) -> Result<HashMap<DedupeKey, StoredDigest>, LedgerError> {
        let items = self
            .table
            .batch_get(
                keys.iter().map(|k| event_key(k)).collect(),
                Some(DIGEST_PROJECTION),
                Unprocessed::LeaveOut,
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| Some((key_of(item).ok()?, digest_of(item))))
            .collect())
    }

    /// New events booked on an archived day, quarantined with that reason.
    async fn quarantine_archived(
        &self,
        archived: &[(Pending<'_>, NaiveDate)],
        deadline: Option<Instant>,
    ) -> Vec<(usize, Stored)> {
        let writes = archived.iter().map(|(pending, day)| async move {
            let reason = archived_day_reason(*day);
            let entry = QuarantineEntry {
                kind: QuarantineKind::Event,
                payload: pending.event.raw.as_bytes(),
                reason,
                delivery: pending.delivery,
                related_event: Some(&pending.event.key),
            };
            let outcome = self.quarantine.put_or_retry(entry, deadline).await;
            (pending.index, Stored::Failed(outcome))
        });
        futures::stream::iter(writes.collect::<Vec<_>>())
            .buffer_unordered(self.table.concurrency())
            .collect()
            .await
    }

    /// Elements that did not parse, quarantined with their reason.
    async fn quarantine_rejected(
        &self,
        inputs: &[(ParsedItem, Delivery)],
        deadline: Option<Instant>,
    ) -> Vec<(usize, Outcome)> {
        let rejected = inputs
            .iter()
            .enumerate()
            .filter_map(|(index, (item, delivery))| Some((index, item.as_ref().err()?, delivery)));
        let writes = rejected.map(|(index, rejected, delivery)| async move {
            let entry = QuarantineEntry {
                kind: QuarantineKind::Event,
                payload: rejected.raw.as_bytes(),
                reason: rejected.error.to_string(),
                delivery,
                related_event: None,
            };
            (index, self.quarantine.put_or_retry(entry, deadline).await)
        });
        futures::stream::iter(writes.collect::<Vec<_>>())
            .buffer_unordered(self.table.concurrency())
            .collect()
            .await
    }

    /// New events without usage: one conditional put each (no rollup to share a
    /// transaction with).
    async fn put_plain_events(
        &self,
        events: &[Pending<'_>],
        deadline: Option<Instant>,
    ) -> Vec<(usize, Stored)> {
        let writes = events.iter().map(|pending| async move {
            if past(deadline) {
                let retry = Outcome::Retry {
                    reason: DEADLINE_REASON.into(),
                };
                return (pending.index, Stored::Failed(retry));
            }
            let item = event_item(
                pending.event,
                pending.delivery,
                &self.table.config().retention,
            );
            let result = match self.table.put_if_absent(item).await {
                Ok(PutIfAbsent::Created) => Ok(Stored::New),
                Ok(PutIfAbsent::Exists(old)) => {
                    existing_or_fetch(&self.table, old, &pending.event.key)
                        .await
                        .map(Stored::Existing)
                }
                Err(error) => Err(error),
            };
            let stored = match result {
                Ok(stored) => stored,
                Err(error) => {
                    Stored::Failed(refused(&self.quarantine, pending, error, deadline).await)
                }
            };
            (pending.index, stored)
        });
        futures::stream::iter(writes.collect::<Vec<_>>())
            .buffer_unordered(self.table.concurrency())
            .collect()
            .await
    }
}

/// The heads not stored yet, sorted by how they are written; `closes` is `None` when no
/// new usage needed them.
fn sort_new<'a>(
    inputs: &'a [(ParsedItem, Delivery)],
    heads: &[(usize, &'a ConnectionEvent)],
    stored: &HashMap<DedupeKey, StoredDigest>,
    closes: Option<&'a Result<Arc<Vec<Close>>, LedgerError>>,
    archived: &Result<Arc<BTreeSet<NaiveDate>>, LedgerError>,
) -> NewEvents<'a> {
    let new: Vec<(usize, &ConnectionEvent)> = heads
        .iter()
        .copied()
        .filter(|(_, event)| !stored.contains_key(&event.key))
        .collect();
    let mut sorted = NewEvents::default();
    for (index, event) in new {
        let pending = Pending {
            index,
            event,
            delivery: &inputs[index].1,
            close: None,
        };
        match archived_day_of(archived, event) {
            Ok(Some(day)) => {
                sorted.archived.push((pending, day));
                continue;
            }
            Err(retry) => {
                sorted.waiting.push((index, Stored::Failed(retry)));
                continue;
            }
            Ok(None) => {}
        }
        match (closes, event.usage) {
            (_, None) => sorted.plain.push(pending),
            (Some(Ok(closes)), Some(_)) => sorted.usage.push(Pending {
                close: close_of(closes, event),
                ..pending
            }),
            (Some(Err(error)), Some(_)) => {
                let reason = format!("the closed periods could not be read: {error}");
                sorted
                    .waiting
                    .push((index, Stored::Failed(Outcome::Retry { reason })));
            }
            (None, Some(_)) => {}
        }
    }
    sorted
}

/// The event's day when it is archived, `None` when it is not, or the retry of an event
/// whose day is unknown because the archived days could not be read.
fn archived_day_of(
    archived: &Result<Arc<BTreeSet<NaiveDate>>, LedgerError>,
    event: &ConnectionEvent,
) -> Result<Option<NaiveDate>, Outcome> {
    let day = event.archive_day();
    match archived {
        Ok(days) => Ok(days.contains(&day).then_some(day)),
        Err(error) => Err(Outcome::Retry {
            reason: format!("the archived days could not be read: {error}"),
        }),
    }
}

/// Every chain: the head's outcome from what its write did, then its copies against what is
/// stored. Returns what the copies still need written.
///
/// A copy that would add a delivery to an event of an archived day is quarantined instead:
/// the record must stay what the day's seal holds (`archive verify` compares them while the
/// ledger keeps the day), and once it has expired such a copy is a new event of the day,
/// quarantined all the same.
fn settle_chains(
    inputs: &[(ParsedItem, Delivery)],
    chains: &[Vec<usize>],
    mut written: HashMap<usize, Stored>,
    stored: &mut HashMap<DedupeKey, StoredDigest>,
    archived: &Result<Arc<BTreeSet<NaiveDate>>, LedgerError>,
    outcomes: &mut [Option<Outcome>],
) -> Copies {
    let mut copies = Copies::default();
    for chain in chains {
        let head = chain[0];
        let Ok(event) = &inputs[head].0 else {
            continue;
        };
        let (mut digest, rest) = match written.remove(&head) {
            Some(Stored::New) => {
                outcomes[head] = Some(Outcome::New);
                let digest = StoredDigest {
                    data_hash: Some(event.data_hash),
                    deliveries: vec![delivery_tag(event.provider, &inputs[head].1.origin)],
                };
                (digest, &chain[1..])
            }
            Some(Stored::Existing(digest)) => (digest, &chain[..]),
            Some(Stored::Failed(outcome)) => {
                fail_copies(&outcome, &chain[1..], &mut copies, outcomes);
                outcomes[head] = Some(outcome);
                continue;
            }
            None => match stored.remove(&event.key) {
                Some(digest) => (digest, &chain[..]),
                None => continue,
            },
        };
        for &copy in rest {
            let Ok(copy_event) = &inputs[copy].0 else {
                continue;
            };
            match classify(&mut digest, copy_event, &inputs[copy].1) {
                Verdict::Duplicate { new_tag: None } => {
                    outcomes[copy] = Some(Outcome::Duplicate {
                        new_delivery: false,
                    });
                }
                Verdict::Duplicate { new_tag: Some(tag) } => {
                    // The chain's day, so that all its copies are held alike.
                    let held = archived_day_of(archived, event);
                    if !matches!(held, Ok(None)) {
                        // Not added, so a later copy through the same path is held too.
                        digest.deliveries.retain(|t| *t != tag);
                    }
                    match held {
                        Ok(None) => copies.tags.push((copy, tag)),
                        Ok(Some(day)) => copies.refused.push((copy, archived_copy_reason(day))),
                        Err(retry) => outcomes[copy] = Some(retry),
                    }
                }
                Verdict::Conflict { stored_hash } => copies
                    .conflicts
                    .push((copy, conflict_reason(copy_event, stored_hash))),
            }
        }
    }
    copies
}

/// The copies of an event whose write failed: refused for good (the same data would be
/// refused again) they are quarantined too, never retried forever; otherwise retried.
fn fail_copies(
    outcome: &Outcome,
    copies_of: &[usize],
    copies: &mut Copies,
    outcomes: &mut [Option<Outcome>],
) {
    for &copy in copies_of {
        match outcome {
            Outcome::Quarantined { reason, .. } => copies.refused.push((
                copy,
                format!("an earlier copy in this batch could not be stored: {reason}"),
            )),
            _ => {
                outcomes[copy] = Some(Outcome::Retry {
                    reason: "an earlier copy of this event was not stored".into(),
                });
            }
        }
    }
}

/// The close a usage event falls into, if any.
fn close_of<'a>(closes: &'a [Close], event: &ConnectionEvent) -> Option<&'a Close> {
    closes
        .iter()
        .find(|c| c.covers(event.account_sid.as_deref(), event.billing_day))
}
