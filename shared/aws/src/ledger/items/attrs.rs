//! Items and their attributes: building a key, reading a string, a number or a set.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// An item as the SDK reads and writes it.
pub type Item = HashMap<String, AttributeValue>;

pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    Item::from([
        ("pk".to_owned(), AttributeValue::S(pk.into())),
        ("sk".to_owned(), AttributeValue::S(sk.into())),
    ])
}

/// The table's TTL attribute (epoch seconds): DynamoDB deletes the item some time after it.
pub const EXPIRES_AT: &str = "expires_at";

/// Sets the item's TTL attribute, when it expires at all.
pub fn expiring(mut item: Item, at: Option<i64>) -> Item {
    if let Some(at) = at {
        item.insert(EXPIRES_AT.into(), AttributeValue::N(at.to_string()));
    }
    item
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

pub fn number_attr(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

/// What a stored number holds when it is not a 64-bit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotACount {
    /// Only digits, more than `u64` holds: a sum DynamoDB stored exactly (it keeps 38
    /// digits) that no reader may turn into anything else.
    TooLarge,
    /// Something this code never writes as a count (a sign, a fraction).
    Malformed,
}

/// A count the ledger stored, `None` when absent, and never a different number: a sum
/// beyond `u64` or a malformed number is an error the caller names.
pub fn count_attr(item: &Item, name: &str) -> Result<Option<u64>, NotACount> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => match value.parse() {
            Ok(count) => Ok(Some(count)),
            Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                Err(NotACount::TooLarge)
            }
            Err(_) => Err(NotACount::Malformed),
        },
        _ => Ok(None),
    }
}

pub fn string_set(item: &Item, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(values)) => values.clone(),
        _ => Vec::new(),
    }
}

pub fn bytes_attr<'a>(item: &'a Item, name: &str) -> Option<&'a [u8]> {
    match item.get(name) {
        Some(AttributeValue::B(bytes)) => Some(bytes.as_ref()),
        _ => None,
    }
}

/// `pk` of an item, for errors that name it.
pub fn pk_of(item: &Item) -> &str {
    string_attr(item, "pk").unwrap_or_default()
}
