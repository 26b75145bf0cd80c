//! `kore-usage quarantine`: inspect quarantined payloads and, after a fix, re-process them
//! through the same path as the functions. A redrive is idempotent and removes an entry only
//! once everything in it is stored.

mod redrive;

use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Subcommand;
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::callback::CallbackKind;
use kore_ingest_core::event::Provider;
use kore_ingest_core::quarantine::{QuarantineKind, QuarantinedPayload};
use serde::Serialize;

use crate::args::Format;
use crate::failure::{Failure, OrFail, Result};
use crate::output::{Align, Table, json, one_line, print};
use redrive::redrive;

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
    let entries = ledger.quarantined().list(limit).await.or_fail(ledger)?;
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

async fn fetch(ledger: &UsageLedger, id: &str) -> Result<QuarantinedPayload> {
    ledger
        .quarantined()
        .get(id)
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
