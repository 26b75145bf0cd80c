//! `X-Twilio-Signature` verification on arbitrary requests (form parameters, or a JSON body
//! with `bodySHA256`), and the round trip for signatures `twilio_signature` computes.
#![no_main]

use kore_ingest_core::signature::{
    Verified, twilio_signature, twilio_url_with_body_hash, verify_twilio_signature,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    |input: (&str, &str, Vec<(String, String)>, &[u8], Option<&str>)| {
        let (token, url, params, body, header) = input;
        let _ = verify_twilio_signature(&[token], url, &params, body, header);
        let _ = verify_twilio_signature::<&str>(&[], url, &params, body, header);

        if url.contains("bodySHA256") {
            return;
        }
        // A form callback: the URL and the sorted parameters are signed. A body with no
        // parameters would be covered by nothing, and is refused.
        let signature = twilio_signature(token.as_bytes(), url, &params);
        let verified =
            verify_twilio_signature(&["retired", token], url, &params, body, Some(&signature));
        if params.is_empty() && !body.is_empty() {
            assert!(verified.is_err(), "uncovered body accepted: url {url:?}");
        } else {
            assert_eq!(
                verified,
                Ok(Verified::Signed),
                "own form signature rejected: url {url:?}"
            );
        }
        // A JSON body: the URL carries the body's hash and no parameters are signed.
        let with_hash = twilio_url_with_body_hash(url, body);
        let signature = twilio_signature(token.as_bytes(), &with_hash, &[]);
        assert_eq!(
            verify_twilio_signature(&[token], &with_hash, &[], body, Some(&signature)),
            Ok(Verified::Signed),
            "own body-hash signature rejected: url {with_hash:?}"
        );
    }
);
