//! The canonical JSON form that [`super::DataHash`] hashes.

use serde_json::{Map, Value};

/// Canonical JSON: keys sorted by their UTF-8 bytes at every level, no whitespace, strings
/// and numbers as serde_json writes them. Sorting here (rather than relying on the map's
/// order) keeps the hash stable even if a dependency turns on `preserve_order`.
pub(super) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            // Writing a scalar into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_canonical_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    write_canonical_entries(map.iter(), out);
}

pub(super) fn write_canonical_entries<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
) {
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}
