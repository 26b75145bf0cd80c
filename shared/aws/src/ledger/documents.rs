//! Files operators apply whole (the customers mapping, the zones, the plans), kept in the
//! ledger: each text in parts under a partition named by its SHA-256, and a head item naming
//! the version in force and its hash. Applying writes the parts first and moves the head last,
//! on a condition on the version it read, so a reader sees the old file or the new one, never
//! a mixture; two operators applying at once cannot both win, and since parts are keyed by
//! content, neither (nor an apply that crashed halfway) can spoil the other's parts.

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
        let sha256 = string_attr(&head, SHA256).ok_or_else(|| corrupt("no hash".into()))?;
        let parts_pk = keys::document_parts_pk(name, sha256);
        let query = Query::prefix(parts_pk.clone(), keys::PART_SK_PREFIX).consistent(true);
        let mut text = String::new();
        for item in self.table.query(query).await? {
            text.push_str(&text_part_text(&parts_pk, &item)?);
        }
        if sha256 != sha256_hex(&text) {
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
        let sha256 = sha256_hex(text);
        let parts_pk = keys::document_parts_pk(name, &sha256);
        for (index, chunk) in split_lines(text, PART_TEXT_BYTES).into_iter().enumerate() {
            self.table
                .put(text_part_item(parts_pk.clone(), index, chunk))
                .await?;
        }
        let mut values = Item::new();
        values.insert(":v".into(), n(version));
        values.insert(":h".into(), s(sha256));
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
