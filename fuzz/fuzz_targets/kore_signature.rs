//! `Kore-Signature` verification on arbitrary requests, and the round trip: what
//! `kore_signature` computes for a request, the verifier accepts for that request unless its
//! body is not UTF-8, which is always refused.
#![no_main]

use kore_ingest_core::signature::{Verified, kore_signature, verify_kore_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, &str, &[u8], Option<&str>)| {
    let (secret, method, url, body, header) = input;
    let _ = verify_kore_signature(&[secret], method, url, body, header);
    let _ = verify_kore_signature::<&str>(&[], method, url, body, header);

    let signature = kore_signature(secret.as_bytes(), method, url, body);
    // A body that is not UTF-8 is refused whatever its signature (length extension).
    if std::str::from_utf8(body).is_err() {
        assert!(verify_kore_signature(&[secret], method, url, body, Some(&signature)).is_err());
        return;
    }
    assert_eq!(
        verify_kore_signature(&["retired", secret], method, url, body, Some(&signature)),
        Ok(Verified::Signed),
        "own signature rejected: method {method:?} url {url:?}"
    );
});
