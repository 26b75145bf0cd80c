//! `kore-usage quarantine redrive`: each payload re-run through the shared path, the entry
//! removed only once everything in it is stored.

use std::process::ExitCode;

use http::{HeaderMap, HeaderValue};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::callback::{
    CallbackKind, KORE_IDEMPOTENCY_HEADER, TWILIO_IDEMPOTENCY_HEADER, parse_callback,
};
use kore_ingest_core::delivery::{Delivery, Origin, Outcome, OutcomeCounts};
use kore_ingest_core::event::{Provider, parse_events};
use kore_ingest_core::port::{CallbackOutcome, Ledger};
use kore_ingest_core::quarantine::{QuarantineKind, QuarantinedPayload, quarantine_id};
use kore_ingest_core::spill;
use serde::Serialize;

use crate::args::Format;
use crate::failure::{self, OrFail, Result};
use crate::output::{Align, Table, json, one_line, print};

/// What a redrive did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Disposition {
    /// Everything in it is stored: the entry was removed.
    Removed,
    /// Still not storable: the entry stays, with the reason.
    Kept,
    /// A passing failure (throttling, timeout): run the redrive again.
    Retry,
    /// No such entry.
    Missing,
    /// `--dry-run`: it parses, so a redrive would store it (or find it stored).
    #[serde(rename = "would-redrive")]
    WouldRedrive,
    /// `--dry-run`: a redrive would keep it, with the reason.
    #[serde(rename = "would-keep")]
    WouldKeep,
}

#[derive(Debug, Clone, Serialize)]
struct Redriven {
    id: String,
    kind: String,
    result: Disposition,
    new: u64,
    duplicate: u64,
    conflict: u64,
    /// Why it was kept, or what failed.
    reason: Option<String>,
}

impl Redriven {
    fn new(id: &str, kind: &str) -> Self {
        Redriven {
            id: id.to_owned(),
            kind: kind.to_owned(),
            result: Disposition::Kept,
            new: 0,
            duplicate: 0,
            conflict: 0,
            reason: None,
        }
    }

    fn kept(mut self, reason: impl Into<String>) -> Self {
        self.result = Disposition::Kept;
        self.reason = Some(reason.into());
        self
    }

    fn retry(mut self, reason: impl Into<String>) -> Self {
        self.result = Disposition::Retry;
        self.reason = Some(reason.into());
        self
    }
}

pub async fn redrive(
    ledger: &UsageLedger,
    ids: Vec<String>,
    dry_run: bool,
    format: Format,
) -> Result<ExitCode> {
    let ids = if ids.is_empty() {
        ledger
            .quarantined()
            .list(usize::MAX)
            .await
            .or_fail(ledger)?
            .into_iter()
            .map(|entry| entry.id)
            .collect()
    } else {
        ids
    };
    let mut results = Vec::with_capacity(ids.len());
    for id in &ids {
        results.push(if dry_run {
            plan_one(ledger, id).await?
        } else {
            redrive_one(ledger, id).await?
        });
    }

    let text = match format {
        Format::Json => json(&results)?,
        Format::Table if results.is_empty() => "The quarantine is empty.\n".to_owned(),
        Format::Table => {
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("KIND", Align::Left),
                ("RESULT", Align::Left),
                ("NEW", Align::Right),
                ("DUPLICATE", Align::Right),
                ("CONFLICT", Align::Right),
                ("REASON", Align::Left),
            ]);
            for r in &results {
                let result = match r.result {
                    Disposition::Removed => "stored, removed",
                    Disposition::Kept => "kept",
                    Disposition::Retry => "retry",
                    Disposition::Missing => "not found",
                    Disposition::WouldRedrive => "would redrive",
                    Disposition::WouldKeep => "would keep",
                };
                table.row(vec![
                    r.id.clone(),
                    r.kind.clone(),
                    result.to_owned(),
                    r.new.to_string(),
                    r.duplicate.to_string(),
                    r.conflict.to_string(),
                    r.reason.as_deref().map(one_line).unwrap_or_default(),
                ]);
            }
            table.render()
        }
    };
    print(&text)?;

    let failed: Vec<&Redriven> = results
        .iter()
        .filter(|r| matches!(r.result, Disposition::Retry | Disposition::Missing))
        .collect();
    let Some(first) = failed.first() else {
        return Ok(ExitCode::SUCCESS);
    };
    let names: Vec<&str> = failed.iter().map(|r| r.id.as_str()).collect();
    eprintln!(
        "error: {}",
        failure::sentence(&format!(
            "{} of {} quarantine entries could not be redriven ({}): {}",
            failed.len(),
            results.len(),
            first.reason.as_deref().unwrap_or("unknown reason"),
            names.join(", ")
        ))
    );
    Ok(ExitCode::from(1))
}

/// What [`redrive_one`] would do, from parsing alone: nothing is written.
async fn plan_one(ledger: &UsageLedger, id: &str) -> Result<Redriven> {
    let Some(entry) = ledger.quarantined().get(id).await.or_fail(ledger)? else {
        let mut missing = Redriven::new(id, "-");
        missing.result = Disposition::Missing;
        missing.reason = Some("no quarantined payload has this id".into());
        return Ok(missing);
    };
    let mut plan = Redriven::new(id, entry.kind.name());
    let keep = if entry.truncated {
        Some("only the start of this payload was kept, so it cannot be re-processed".to_owned())
    } else {
        match &entry.kind {
            QuarantineKind::Event | QuarantineKind::Conflict => {
                let replayed = || {
                    Delivery::now(Origin::Replay {
                        source: id.to_owned(),
                    })
                };
                let events = spill::delivery_of(&entry.payload, replayed)
                    .map_err(|e| e.to_string())
                    .and_then(|(_, payload)| parse_events(payload).map_err(|e| e.to_string()));
                match events {
                    Err(error) => Some(format!("still unparseable: {error}")),
                    Ok(items) => {
                        let bad: Vec<String> = items
                            .iter()
                            .filter_map(|item| item.as_ref().err())
                            .map(|bad| {
                                format!("element {} is still unparseable: {}", bad.index, bad.error)
                            })
                            .collect();
                        (!bad.is_empty()).then(|| bad.join("; "))
                    }
                }
            }
            QuarantineKind::Callback {
                kind,
                idempotency_token,
            } => match callback_headers(entry.provider, idempotency_token.as_deref()) {
                Err(reason) => Some(reason),
                Ok(headers) => parse_callback(*kind, &entry.payload, &headers)
                    .err()
                    .map(|error| format!("still unparseable: {error}")),
            },
        }
    };
    match keep {
        Some(reason) => {
            plan.result = Disposition::WouldKeep;
            plan.reason = Some(reason);
        }
        None => {
            plan.result = Disposition::WouldRedrive;
            if entry.kind == QuarantineKind::Conflict {
                plan.reason = Some("a conflicting copy: it is kept if it still conflicts".into());
            }
        }
    }
    Ok(plan)
}

async fn redrive_one(ledger: &UsageLedger, id: &str) -> Result<Redriven> {
    let Some(entry) = ledger.quarantined().get(id).await.or_fail(ledger)? else {
        let mut missing = Redriven::new(id, "-");
        missing.result = Disposition::Missing;
        missing.reason = Some("no quarantined payload has this id".into());
        return Ok(missing);
    };
    let result = Redriven::new(id, entry.kind.name());
    if entry.truncated {
        return Ok(result.kept(
            "only the start of this payload was kept (it was larger than a DynamoDB item), so it cannot be re-processed",
        ));
    }
    let mut delivery = Delivery {
        provider_hint: entry.provider,
        ..Delivery::now(Origin::Replay {
            source: format!("quarantine:{id}"),
        })
    };
    // A callback's arrival orders a SIM's statuses when it has no `Date` (the quarantine
    // does not keep headers): the original arrival, never the redrive's.
    if let (QuarantineKind::Callback { .. }, Ok(arrived)) = (
        &entry.kind,
        chrono::DateTime::parse_from_rfc3339(&entry.received_at),
    ) {
        delivery.received_at = arrived.to_utc();
    }
    let result = match &entry.kind {
        QuarantineKind::Event | QuarantineKind::Conflict => {
            redrive_events(ledger, &entry, &delivery, result).await?
        }
        QuarantineKind::Callback {
            kind,
            idempotency_token,
        } => {
            let headers = callback_headers(entry.provider, idempotency_token.as_deref());
            redrive_callback(ledger, *kind, headers, &entry, &delivery, result).await
        }
    };
    if result.result == Disposition::Removed {
        ledger.quarantined().delete(id).await.or_fail(ledger)?;
    }
    Ok(result)
}

async fn redrive_events(
    ledger: &UsageLedger,
    entry: &QuarantinedPayload,
    delivery: &Delivery,
    mut result: Redriven,
) -> Result<Redriven> {
    // A record the webhook spilled is redriven as that webhook delivery.
    let parsed = spill::delivery_of(&entry.payload, || delivery.clone())
        .map_err(|e| e.to_string())
        .and_then(|(delivery, payload)| {
            let items = parse_events(payload).map_err(|e| e.to_string())?;
            Ok((delivery, items))
        });
    let (delivery, items) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return Ok(result.kept(format!("still unparseable: {error}"))),
    };
    let delivery = &delivery;
    // Elements that still do not parse stay in this entry: recording them would only
    // quarantine a second copy under the replay path.
    let single = items.len() == 1;
    let mut rejected = Vec::new();
    let mut inputs = Vec::new();
    for item in items {
        match item {
            Ok(event) => inputs.push((Ok(event), delivery.clone())),
            Err(bad) if single => rejected.push(format!("still unparseable: {}", bad.error)),
            Err(bad) => rejected.push(format!(
                "element {} is still unparseable: {}",
                bad.index, bad.error
            )),
        }
    }
    // A conflict recorded again is quarantined again, under the replay path: that copy is
    // removed afterwards unless it existed before, so redrives do not pile up entries.
    let mut fresh_copies = Vec::new();
    if entry.kind == QuarantineKind::Conflict {
        for (item, _) in &inputs {
            if let Ok(event) = item {
                let copy = quarantine_id(&QuarantineKind::Conflict, "replay", event.raw.as_bytes());
                if copy != entry.id
                    && ledger
                        .quarantined()
                        .get(&copy)
                        .await
                        .or_fail(ledger)?
                        .is_none()
                {
                    fresh_copies.push(copy);
                }
            }
        }
    }
    let outcomes = ledger.record_batch(&inputs, None).await;
    let counts: OutcomeCounts = outcomes.iter().collect();
    (result.new, result.duplicate, result.conflict) =
        (counts.new, counts.duplicate, counts.conflict);
    let mut reasons = rejected;
    for outcome in &outcomes {
        match outcome {
            Outcome::Conflict { quarantine_id } => {
                if fresh_copies.contains(quarantine_id) {
                    ledger
                        .quarantined()
                        .delete(quarantine_id)
                        .await
                        .or_fail(ledger)?;
                    reasons.push(format!(
                        "still conflicts with the stored event{} (the first copy is kept)",
                        entry
                            .related_event_sid
                            .as_deref()
                            .map(|sid| format!(" {sid}"))
                            .unwrap_or_default()
                    ));
                } else {
                    reasons.push(format!(
                        "conflicts with the stored event (the first copy is kept; the copy is quarantined as {quarantine_id})"
                    ));
                }
            }
            Outcome::Quarantined {
                quarantine_id,
                reason,
            } => reasons.push(format!("{reason} (quarantined as {quarantine_id})")),
            _ => {}
        }
    }
    if let Some(reason) = &counts.first_retry_reason {
        return Ok(result.retry(failure::clean_reason(reason, ledger.table_name())));
    }
    if reasons.is_empty() {
        result.result = Disposition::Removed;
        return Ok(result);
    }
    reasons.dedup();
    Ok(result.kept(reasons.join("; ")))
}

async fn redrive_callback(
    ledger: &UsageLedger,
    kind: CallbackKind,
    headers: std::result::Result<HeaderMap, String>,
    entry: &QuarantinedPayload,
    delivery: &Delivery,
    mut result: Redriven,
) -> Redriven {
    let headers = match headers {
        Ok(headers) => headers,
        Err(reason) => return result.kept(reason),
    };
    let callback = match parse_callback(kind, &entry.payload, &headers) {
        Ok(callback) => callback,
        Err(error) => return result.kept(format!("still unparseable: {error}")),
    };
    match ledger
        .record_callback(&callback, &entry.payload, delivery)
        .await
    {
        Ok(outcome) => {
            if outcome == CallbackOutcome::New {
                result.new = 1;
            } else {
                result.duplicate = 1;
            }
            result.result = Disposition::Removed;
            result
        }
        Err(error) if error.is_retryable() => {
            result.retry(failure::describe(&error, ledger.table_name()))
        }
        Err(error) => result.kept(failure::describe(&error, ledger.table_name())),
    }
}

/// The headers the callback arrived with, as far as they matter: the provider's idempotency
/// token, or, without one, the provider's User-Agent (the token is then the payload hash).
fn callback_headers(
    provider: Option<Provider>,
    idempotency_token: Option<&str>,
) -> std::result::Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    match (provider, idempotency_token) {
        (Some(provider), Some(token)) => {
            let header = match provider {
                Provider::Kore => KORE_IDEMPOTENCY_HEADER,
                Provider::Twilio => TWILIO_IDEMPOTENCY_HEADER,
            };
            let value = HeaderValue::from_str(token).map_err(|_| {
                format!("the stored idempotency token `{token}` is not a valid header value")
            })?;
            headers.insert(header, value);
        }
        (Some(provider), None) => {
            let agent = match provider {
                Provider::Kore => "KoreProxy/1.1",
                Provider::Twilio => "TwilioProxy/1.1",
            };
            headers.insert(http::header::USER_AGENT, HeaderValue::from_static(agent));
        }
        (None, Some(_)) => {
            return Err(
                "the provider of this callback was not recorded, so its idempotency token cannot be used".into(),
            );
        }
        // parse_callback says why it cannot tell the provider.
        (None, None) => {}
    }
    Ok(headers)
}
