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
