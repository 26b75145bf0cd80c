//! Files operators apply whole (the customers mapping, the zones), kept in the ledger: each
//! version's text in parts under a partition of its own, and a head item naming the version
//! in force with its SHA-256. Applying writes the new version's parts first and moves the
//! head last, on a condition on the version it read, so a reader sees the old file or the
//! new one, never a mixture, and two operators applying at once cannot both win.

use chrono::Utc;
use kore_ingest_core::closes::sha256_hex;
use kore_ingest_core::port::LedgerError;
use kore_ingest_core::time::timestamp;

use super::closes::{PART_TEXT_BYTES, split_lines};
use super::items::attrs::{Item, key, n, number_attr, s, string_attr};
use super::items::close::{text_part_item, text_part_text};
use super::keys;
use super::table::{Query, Table};

const VERSION: &str = "version";
const SHA256: &str = "sha256";
const APPLIED_AT: &str = "applied_at";

/// A document in force: its text and when it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    pub version: u64,
    pub applied_at: String,
}

/// The documents of one ledger table.
#[derive(Debug, Clone)]
pub struct Documents {
    table: Table,
}

impl Documents {
    pub fn new(table: Table) -> Self {
        Documents { table }
    }

    /// The document `name` in force, its hash checked; `None` if never applied.
    pub async fn get(&self, name: &str) -> Result<Option<Document>, LedgerError> {
        let head_pk = keys::document_pk(name);
        let Some(head) = self.table.get(key(head_pk.clone(), keys::SINGLE)).await? else {
            return Ok(None);
        };
        let corrupt = |reason: String| LedgerError::CorruptItem {
            pk: head_pk.clone(),
            reason,
        };
        let version = number_attr(&head, VERSION).ok_or_else(|| corrupt("no version".into()))?;
        let parts_pk = keys::document_version_pk(name, version);
        let query = Query::prefix(parts_pk.clone(), keys::PART_SK_PREFIX).consistent(true);
        let mut text = String::new();
        for item in self.table.query(query).await? {
            text.push_str(&text_part_text(&parts_pk, &item)?);
        }
        if string_attr(&head, SHA256) != Some(sha256_hex(&text).as_str()) {
            return Err(corrupt(format!(
                "version {version} does not hash to what was applied"
            )));
        }
        Ok(Some(Document {
            text,
            version,
            applied_at: string_attr(&head, APPLIED_AT).unwrap_or("").to_owned(),
        }))
    }

    /// Puts `text` in force as the next version of `name`; `false` when another apply moved
    /// the head meanwhile (nothing of this one is in force: apply again).
    pub async fn put(&self, name: &str, text: &str) -> Result<bool, LedgerError> {
        // Parts are cut after whole lines: the last line ends with one too.
        let text = &if text.is_empty() || text.ends_with('\n') {
            text.to_owned()
        } else {
            format!("{text}\n")
        };
        let head_pk = keys::document_pk(name);
        let before = self
            .table
            .get(key(head_pk.clone(), keys::SINGLE))
            .await?
            .and_then(|head| number_attr(&head, VERSION));
        let version = before.map_or(1, |v| v + 1);
        let parts_pk = keys::document_version_pk(name, version);
        for (index, chunk) in split_lines(text, PART_TEXT_BYTES).into_iter().enumerate() {
            self.table
                .put(text_part_item(parts_pk.clone(), index, chunk))
                .await?;
        }
        let mut values = Item::new();
        values.insert(":v".into(), n(version));
        values.insert(":h".into(), s(sha256_hex(text)));
        values.insert(":at".into(), s(timestamp(Utc::now())));
        let condition = match before {
            None => "attribute_not_exists(#v)".to_owned(),
            Some(previous) => {
                values.insert(":before".into(), n(previous));
                "#v = :before".to_owned()
            }
        };
        self.table
            .update_if(
                key(head_pk, keys::SINGLE),
                "SET #v = :v, sha256 = :h, applied_at = :at",
                &condition,
                &[("#v", VERSION)],
                values,
            )
            .await
    }
}
