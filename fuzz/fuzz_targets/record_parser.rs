//! The bytes of a Kinesis record (one CloudEvent, or a KORE batch as a JSON array): every
//! outcome is a value, and every event that parses keeps the invariants the ledger relies on.
#![no_main]

use kore_ingest_core::event::parse_events;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(items) = parse_events(data) else {
        return;
    };
    for item in items {
        match item {
            Ok(event) => {
                assert!(!event.key.as_str().is_empty(), "a parsed event has a key");
                if event.usage.is_some() {
                    assert!(event.sim_sid.is_some(), "a usage event names its SIM");
                }
                assert!(
                    !event.raw.is_empty(),
                    "the raw event is kept for the quarantine"
                );
            }
            Err(rejected) => {
                // The error is shown to senders and operators: it must render.
                assert!(!rejected.error.to_string().is_empty());
            }
        }
    }
});
