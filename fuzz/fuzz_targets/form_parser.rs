//! Callback bodies and query strings (`application/x-www-form-urlencoded`) with arbitrary
//! provider headers: every outcome is a value, decoded fields encode back to themselves, and a
//! parsed callback has its idempotency token.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use kore_ingest_core::callback::{CallbackKind, parse_callback, parse_form};
use libfuzzer_sys::fuzz_target;

const HEADERS: [&str; 5] = [
    "kore-idempotency-token",
    "i-twilio-idempotency-token",
    "kore-signature",
    "x-twilio-signature",
    "user-agent",
];

fuzz_target!(|input: (&[u8], Vec<(u8, String)>)| {
    let (payload, header_values) = input;
    if let Ok(fields) = parse_form(payload) {
        // Decoding is lossless for what it returns: encoding the fields again reads back equal.
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        assert_eq!(parse_form(encoded.as_bytes()).ok(), Some(fields));
    }
    let mut headers = HeaderMap::new();
    for (which, value) in header_values {
        let name = HeaderName::from_static(HEADERS[usize::from(which) % HEADERS.len()]);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
    for kind in CallbackKind::ALL {
        if let Ok(callback) = parse_callback(kind, payload, &headers) {
            assert!(
                !callback.idempotency_token.is_empty(),
                "a stored callback has a token"
            );
        }
    }
});
