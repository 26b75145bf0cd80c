//! `kore-usage quarantine`: inspect quarantined payloads and, after a fix, re-process them
//! through the same path as the functions. A redrive is idempotent and removes an entry only
//! once everything in it is stored.

use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Subcommand;
use http::{HeaderMap, HeaderValue};
use kore_ingest_shared::callback::{
    CallbackKind, KORE_IDEMPOTENCY_HEADER, TWILIO_IDEMPOTENCY_HEADER, parse_callback,
};
use kore_ingest_shared::event::{Provider, parse_events};
use kore_ingest_shared::ledger::callbacks::CallbackOutcome;
use kore_ingest_shared::ledger::quarantine::quarantine_id;
use kore_ingest_shared::ledger::{
    Delivery, Origin, Outcome, OutcomeCounts, QuarantineKind, QuarantinedPayload, UsageLedger,
};
use serde::Serialize;

use crate::failure::{self, Failure, OrFail, Result};
use crate::output::{Align, Format, Table, json, print};

const EXAMPLES: &str = "\
Examples:
  kore-usage quarantine list
  kore-usage quarantine list --limit 20 --format json
  kore-usage quarantine show 3f9a0c1d2e4b5a697880011223344556
  kore-usage quarantine redrive 3f9a0c1d2e4b5a697880011223344556
  kore-usage quarantine redrive --all --dry-run   # what a redrive of everything would do
  kore-usage quarantine redrive --all             # every quarantined payload

A redrive re-runs each payload through the shared path (events: parse, then the exactly-once
write; callbacks: parse with the stored provider and idempotency token, then store). It
removes an entry only when everything in it was stored (new or duplicate); an entry that
still fails stays, with the reason shown. Running it again changes nothing. --dry-run parses
each payload and says whether it would be redriven or kept, and writes nothing.";

/// Inspect and re-process quarantined payloads.
#[derive(Debug, Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum Command {
    /// List quarantined payloads, newest first.
    #[command(after_help = EXAMPLES)]
    List {
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one quarantined payload: why and where from, and the payload itself (text, or
    /// base64 when it is not UTF-8).
    #[command(after_help = EXAMPLES)]
    Show {
        /// The quarantine id, from `quarantine list`.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Re-process quarantined payloads after a fix: the ids given, or every entry with --all.
    #[command(after_help = EXAMPLES)]
    Redrive {
        /// Quarantine ids, from `quarantine list`.
        ids: Vec<String>,
        /// Every quarantined payload (instead of ids).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Say what would be redriven or kept, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub async fn run(ledger: &UsageLedger, command: Command) -> Result<ExitCode> {
    match command {
        Command::List { limit, format } => list(ledger, limit, format).await,
        Command::Show { id, format } => show(ledger, &id, format).await,
        Command::Redrive {
            ids,
            all,
            dry_run,
            format,
        } => {
            if ids.is_empty() && !all {
                return Err(Failure::Usage(
                    "name the quarantine ids to redrive, or pass --all to redrive every entry (--dry-run shows what it would do)".into(),
                ));
            }
            redrive(ledger, ids, dry_run, format).await
        }
    }
}

#[derive(Debug, Serialize)]
struct ListEntry<'a> {
    id: &'a str,
    received_at: &'a str,
    path: &'a str,
    provider: Option<&'a str>,
    origin: &'a str,
    reason: &'a str,
}

async fn list(ledger: &UsageLedger, limit: usize, format: Format) -> Result<ExitCode> {
    let entries = ledger.list_quarantine(limit).await.or_fail(ledger)?;
    let text = match format {
        Format::Json => json(
            &entries
                .iter()
                .map(|e| ListEntry {
                    id: &e.id,
                    received_at: &e.received_at,
                    path: &e.path,
                    provider: e.provider.map(Provider::as_str),
                    origin: &e.origin,
                    reason: &e.reason,
                })
                .collect::<Vec<_>>(),
        )?,
        Format::Table if entries.is_empty() => "The quarantine is empty.\n".to_owned(),
        Format::Table => {
            let mut table = Table::new(&[
                ("RECEIVED", Align::Left),
                ("ID", Align::Left),
                ("PATH", Align::Left),
                ("PROVIDER", Align::Left),
                ("ORIGIN", Align::Left),
                ("REASON", Align::Left),
            ]);
            for e in &entries {
                table.row(vec![
                    e.received_at.clone(),
                    e.id.clone(),
                    e.path.clone(),
                    e.provider.map_or("-", Provider::as_str).to_owned(),
                    e.origin.clone(),
                    one_line(&e.reason),
                ]);
            }
            table.render()
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Table cells hold one line, and never two spaces in a row.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn fetch(ledger: &UsageLedger, id: &str) -> Result<QuarantinedPayload> {
    ledger
        .quarantined(id)
        .await
        .or_fail(ledger)?
        .ok_or_else(|| Failure::Failed(format!("no quarantined payload has the id `{id}`")))
}

#[derive(Debug, Serialize)]
struct ShowJson<'a> {
    id: &'a str,
    kind: &'a str,
    reason: &'a str,
    received_at: &'a str,
    path: &'a str,
    origin: &'a str,
    provider: Option<&'a str>,
    related_event_sid: Option<&'a str>,
    callback_kind: Option<&'a str>,
    idempotency_token: Option<&'a str>,
    truncated: bool,
    payload_size: usize,
    /// The original's size, when only its start is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    original_size: Option<u64>,
    /// `text` or `base64`.
    payload_encoding: &'static str,
    payload: String,
}

/// A callback's kind and idempotency token, when the entry is a callback.
fn callback_of(kind: &QuarantineKind) -> (Option<CallbackKind>, Option<&str>) {
    match kind {
        QuarantineKind::Callback {
            kind,
            idempotency_token,
        } => (Some(*kind), idempotency_token.as_deref()),
        QuarantineKind::Event | QuarantineKind::Conflict => (None, None),
    }
}

async fn show(ledger: &UsageLedger, id: &str, format: Format) -> Result<ExitCode> {
    let entry = fetch(ledger, id).await?;
    let (encoding, payload) = match std::str::from_utf8(&entry.payload) {
        Ok(text) => ("text", text.to_owned()),
        Err(_) => ("base64", BASE64.encode(&entry.payload)),
    };
    let (callback_kind, idempotency_token) = callback_of(&entry.kind);
    let text = match format {
        Format::Json => json(&ShowJson {
            id: &entry.id,
            kind: entry.kind.name(),
            reason: &entry.reason,
            received_at: &entry.received_at,
            path: &entry.path,
            origin: &entry.origin,
            provider: entry.provider.map(Provider::as_str),
            related_event_sid: entry.related_event_sid.as_deref(),
            callback_kind: callback_kind.map(CallbackKind::as_str),
            idempotency_token,
            truncated: entry.truncated,
            payload_size: entry.payload.len(),
            original_size: entry.original_size,
            payload_encoding: encoding,
            payload,
        })?,
        Format::Table => {
            let mut fields = vec![
                ("id", entry.id.clone()),
                ("kind", entry.kind.name().to_owned()),
                ("reason", entry.reason.clone()),
                ("received at", entry.received_at.clone()),
                ("path", entry.path.clone()),
                ("origin", entry.origin.clone()),
            ];
            let optional = [
                ("provider", entry.provider.map(Provider::as_str)),
                ("related event", entry.related_event_sid.as_deref()),
                ("callback kind", callback_kind.map(CallbackKind::as_str)),
                ("idempotency token", idempotency_token),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    fields.push((name, value.to_owned()));
                }
            }
            let size = entry.payload.len();
            let mut description = format!("{size} bytes, {encoding}");
            if entry.truncated {
                match entry.original_size {
                    Some(original) => description.push_str(&format!(
                        ", truncated: only the start of the original ({original} bytes) is kept"
                    )),
                    None => {
                        description.push_str(", truncated: only the start of the original is kept")
                    }
                }
            }
            fields.push(("payload", description));
            let mut out = String::new();
            for (name, value) in fields {
                out.push_str(&format!("{:<19}{value}\n", format!("{name}:")));
            }
            out.push('\n');
            out.push_str(&payload);
            if !payload.ends_with('\n') {
                out.push('\n');
            }
            out
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

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

async fn redrive(
    ledger: &UsageLedger,
    ids: Vec<String>,
    dry_run: bool,
    format: Format,
) -> Result<ExitCode> {
    let ids = if ids.is_empty() {
        ledger
            .list_quarantine(usize::MAX)
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
    let Some(entry) = ledger.quarantined(id).await.or_fail(ledger)? else {
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
                match parse_events(&entry.payload) {
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
    let Some(entry) = ledger.quarantined(id).await.or_fail(ledger)? else {
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
    let delivery = Delivery {
        provider_hint: entry.provider,
        ..Delivery::now(Origin::Replay {
            source: format!("quarantine:{id}"),
        })
    };
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
        ledger.delete_quarantined(id).await.or_fail(ledger)?;
    }
    Ok(result)
}

async fn redrive_events(
    ledger: &UsageLedger,
    entry: &QuarantinedPayload,
    delivery: &Delivery,
    mut result: Redriven,
) -> Result<Redriven> {
    let items = match parse_events(&entry.payload) {
        Ok(items) => items,
        Err(error) => return Ok(result.kept(format!("still unparseable: {error}"))),
    };
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
                if copy != entry.id && ledger.quarantined(&copy).await.or_fail(ledger)?.is_none() {
                    fresh_copies.push(copy);
                }
            }
        }
    }
    let outcomes = ledger.record_all(&inputs, None).await;
    let counts: OutcomeCounts = outcomes.iter().collect();
    (result.new, result.duplicate, result.conflict) =
        (counts.new, counts.duplicate, counts.conflict);
    let mut reasons = rejected;
    for outcome in &outcomes {
        match outcome {
            Outcome::Conflict { quarantine_id } => {
                if fresh_copies.contains(quarantine_id) {
                    ledger
                        .delete_quarantined(quarantine_id)
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
