//! Copies of stored events: new deliveries are added (one update per event, all its new
//! tags at once); conflicting copies, copies of an event DynamoDB refused, and new
//! deliveries of an archived day's event are quarantined.

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use kore_ingest_core::delivery::{Delivery, Outcome};
use kore_ingest_core::event::{DedupeKey, ParsedItem};
use kore_ingest_core::quarantine::{DEADLINE_REASON, QuarantineEntry, QuarantineKind, past};
use tokio::time::Instant;

use crate::ledger::items::attrs::Item;
use crate::ledger::items::event::{DELIVERIES, event_key};
use crate::ledger::quarantine::QuarantineStore;
use crate::ledger::table::Table;

/// What the copies of stored events need written, by input index.
#[derive(Debug, Default)]
pub struct Copies {
    /// New provider-and-path tags to add to the deliveries.
    pub tags: Vec<(usize, String)>,
    /// Copies with other data, and why.
    pub conflicts: Vec<(usize, String)>,
    /// Copies quarantined, and why: of an event DynamoDB refused to store, or that would
    /// add a delivery to an archived day's event.
    pub refused: Vec<(usize, String)>,
}

/// Writes what the copies need; each copy's outcome by input index.
pub async fn write_copies(
    table: &Table,
    quarantine: &QuarantineStore,
    inputs: &[(ParsedItem, Delivery)],
    copies: Copies,
    deadline: Option<Instant>,
) -> Vec<(usize, Outcome)> {
    let Copies {
        tags,
        conflicts,
        refused,
    } = copies;
    let additions = tag_groups(inputs, tags)
        .into_iter()
        .map(|(key, indexes, tags)| async move {
            let outcome = add_deliveries(table, key, tags, deadline).await;
            let outcomes: Vec<(usize, Outcome)> =
                indexes.into_iter().map(|i| (i, outcome.clone())).collect();
            outcomes
        });
    let additions = futures::stream::iter(additions.collect::<Vec<_>>())
        .buffer_unordered(table.concurrency())
        .collect::<Vec<_>>();
    let to_quarantine = conflicts
        .into_iter()
        .map(|(index, reason)| (index, reason, QuarantineKind::Conflict))
        .chain(
            refused
                .into_iter()
                .map(|(index, reason)| (index, reason, QuarantineKind::Event)),
        );
    let quarantines = to_quarantine.map(|(index, reason, kind)| {
        quarantine_copy(quarantine, inputs, index, reason, kind, deadline)
    });
    let quarantines = futures::stream::iter(quarantines.collect::<Vec<_>>())
        .buffer_unordered(table.concurrency())
        .collect::<Vec<_>>();
    let (additions, quarantines) = tokio::join!(additions, quarantines);
    additions
        .into_iter()
        .flatten()
        .chain(quarantines.into_iter().flatten())
        .collect()
}

/// The new tags of each event, with the inputs that brought them.
fn tag_groups(
    inputs: &[(ParsedItem, Delivery)],
    tags: Vec<(usize, String)>,
) -> Vec<(&DedupeKey, Vec<usize>, Vec<String>)> {
    let mut by_key: Vec<(&DedupeKey, Vec<usize>, Vec<String>)> = Vec::new();
    for (index, tag) in tags {
        let Ok(event) = &inputs[index].0 else {
            continue;
        };
        match by_key.iter_mut().find(|(key, _, _)| **key == event.key) {
            Some((_, indexes, tags)) => {
                indexes.push(index);
                tags.push(tag);
            }
            None => by_key.push((&event.key, vec![index], vec![tag])),
        }
    }
    by_key
}

/// Adds the tags to an event's deliveries: a duplicate with a new delivery, or a retry.
async fn add_deliveries(
    table: &Table,
    key: &DedupeKey,
    tags: Vec<String>,
    deadline: Option<Instant>,
) -> Outcome {
    if past(deadline) {
        return Outcome::Retry {
            reason: DEADLINE_REASON.into(),
        };
    }
    let values = Item::from([(":tags".to_owned(), AttributeValue::Ss(tags))]);
    let added = table
        .update(
            event_key(key),
            "ADD #deliveries :tags",
            &[("#deliveries", DELIVERIES)],
            values,
        )
        .await;
    match added {
        Ok(()) => Outcome::Duplicate { new_delivery: true },
        Err(error) => Outcome::Retry {
            reason: error.to_string(),
        },
    }
}

/// A conflicting or refused copy, quarantined (a conflict reports its quarantine id).
async fn quarantine_copy(
    quarantine: &QuarantineStore,
    inputs: &[(ParsedItem, Delivery)],
    index: usize,
    reason: String,
    kind: QuarantineKind,
    deadline: Option<Instant>,
) -> Option<(usize, Outcome)> {
    let (Ok(event), delivery) = &inputs[index] else {
        return None;
    };
    let conflict = kind == QuarantineKind::Conflict;
    let entry = QuarantineEntry {
        kind,
        payload: event.raw.as_bytes(),
        reason,
        delivery,
        related_event: Some(&event.key),
    };
    let outcome = quarantine.put_or_retry(entry, deadline).await;
    let outcome = match outcome {
        Outcome::Quarantined { quarantine_id, .. } if conflict => {
            Outcome::Conflict { quarantine_id }
        }
        other => other,
    };
    Some((index, outcome))
}
