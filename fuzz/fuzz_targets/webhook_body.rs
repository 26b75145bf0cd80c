//! A webhook body as the Function URL hands it over (raw, or base64 when flagged), then the
//! property that makes Twilio's and KORE's copies of one event meet: rewriting the same JSON
//! with other whitespace must give the same keys, hashes and usage.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kore_ingest_core::event::{ParsedItem, parse_events};
use libfuzzer_sys::fuzz_target;

/// What the ledger stores from a parsed event, for comparing two readings.
fn ledger_view(items: &[ParsedItem]) -> Vec<Option<String>> {
    items
        .iter()
        .map(|item| {
            item.as_ref().ok().map(|e| {
                format!(
                    "{}|{:?}|{}|{:?}|{:?}|{:?}|{}",
                    e.key.as_str(),
                    e.data_hash,
                    e.billing_day,
                    e.usage,
                    e.session,
                    e.sim_sid,
                    e.event_time
                )
            })
        })
        .collect()
}

fuzz_target!(|input: (bool, &[u8])| {
    let (is_base64_encoded, raw) = input;
    let decoded;
    let body = if is_base64_encoded {
        match BASE64.decode(raw) {
            Ok(bytes) => {
                decoded = bytes;
                &decoded[..]
            }
            Err(_) => return,
        }
    } else {
        raw
    };
    let Ok(items) = parse_events(body) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let Ok(pretty) = serde_json::to_string_pretty(&value) else {
        return;
    };
    let reread = parse_events(pretty.as_bytes()).expect("the same JSON, pretty-printed, parses");
    assert_eq!(ledger_view(&items), ledger_view(&reread));
});
