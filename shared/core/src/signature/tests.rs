use super::*;

const KORE: &str = KORE_SIGNATURE_HEADER;
const TWILIO: &str = TWILIO_SIGNATURE_HEADER;
const NO_SECRETS: &[&str] = &[];

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ----- KORE -------------------------------------------------------------------------------

const KORE_VECTOR_BODY: &[u8] = b"field1=value1&field2=value2";
const KORE_VECTOR_URL: &str = "https://testendpoint.com";
// Protocol vector; also: python3 -c "import hashlib; print(hashlib.sha256(b'12345POSThttps://testendpoint.comfield1=value1&field2=value2').hexdigest())"
const KORE_VECTOR_SIG: &str = "f562d3959f68b5a30fc7a63f8bbf40987f633575f4231ffceb4f76dd154ea3ce";

/// Body `{"a":1}` posted to `https://h.example/cb…`, used by several KORE tests.
const KORE_JSON: &[u8] = br#"{"a":1}"#;

/// Issue 13, item 9: KORE's plain SHA-256 lets anyone who saw one signed request append
/// bytes to its body (length extension). The glue padding is never UTF-8 (it starts with
/// 0x80), so a signed body that is not UTF-8 is refused before any parser sees it.
#[test]
fn kore_refuses_a_signed_body_that_is_not_utf8() {
    let url = "https://h.example/events";
    let mut extended = br#"[{"a":1}]"#.to_vec();
    extended.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0x01, 0x38]);
    extended.extend_from_slice(br#",{"forged":true}]"#);
    let signature = kore_signature(b"s3cr3t", "POST", url, &extended);
    let result = verify_kore_signature(&["s3cr3t"], "POST", url, &extended, Some(&signature));
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err("kore-signature covers a body that is not UTF-8".to_owned())
    );
}

#[test]
fn kore_vector_verifies() {
    assert_eq!(
        verify_kore_signature(
            &["12345"],
            "POST",
            KORE_VECTOR_URL,
            KORE_VECTOR_BODY,
            Some(KORE_VECTOR_SIG)
        ),
        Ok(Verified::Signed)
    );
}

#[test]
fn kore_signature_round_trips_vector() {
    assert_eq!(
        kore_signature(b"12345", "POST", KORE_VECTOR_URL, KORE_VECTOR_BODY),
        KORE_VECTOR_SIG
    );
    // KORE signs the method upper-cased, whatever case the caller hands over.
    assert_eq!(
        kore_signature(b"12345", "post", KORE_VECTOR_URL, KORE_VECTOR_BODY),
        KORE_VECTOR_SIG
    );
}

#[test]
fn kore_drops_query_and_fragment() {
    // python3 -c "import hashlib; print(hashlib.sha256(b's3cr3tPOSThttps://h.example/cb{\"a\":1}').hexdigest())"
    let expected = "a42d053c645f91776d1a5b3cccb525a3e230beb7bc6e252878ed5f25dd86cb4d";
    let url = "https://h.example/cb?x=1#frag";
    assert_eq!(kore_signature(b"s3cr3t", "POST", url, KORE_JSON), expected);
    assert_eq!(
        verify_kore_signature(&["s3cr3t"], "POST", url, KORE_JSON, Some(expected)),
        Ok(Verified::Signed)
    );
    // A fragment alone is dropped too.
    assert_eq!(
        verify_kore_signature(
            &["s3cr3t"],
            "POST",
            "https://h.example/cb#frag",
            KORE_JSON,
            Some(expected)
        ),
        Ok(Verified::Signed)
    );
}

#[test]
fn kore_accepts_signature_over_minified_json() {
    // Key order b, a, c kept; whitespace inside strings and escaped quotes kept.
    let pretty = "{\n  \"b\": 1,\n  \"a\": \"x y \\\" z\",\n  \"c\": [true, null, \"\u{e9}\"]\n}";
    // python3 -c 'import hashlib,json; b="{\n  \"b\": 1,\n  \"a\": \"x y \\\" z\",\n  \"c\": [true, null, \"\u00e9\"]\n}"; m=json.dumps(json.loads(b),separators=(",",":"),ensure_ascii=False); print(hashlib.sha256(("s3cr3tPOSThttps://h.example/cb"+m).encode()).hexdigest())'
    let expected = "2d568dd1905e938a4f4e7cd300a5c018cd36722ab043aa33bdef3dabc155d577";
    assert_eq!(
        verify_kore_signature(
            &["s3cr3t"],
            "POST",
            "https://h.example/cb",
            pretty.as_bytes(),
            Some(expected)
        ),
        Ok(Verified::Signed)
    );
    assert_eq!(
        minify_json(pretty.as_bytes()).as_deref(),
        Some("{\"b\":1,\"a\":\"x y \\\" z\",\"c\":[true,null,\"\u{e9}\"]}".as_bytes())
    );
}

#[test]
fn kore_has_no_minify_fallback_for_non_json() {
    // python3 -c "import hashlib; print(hashlib.sha256(b's3cr3tPOSThttps://h.example/cba=1').hexdigest())"
    let over_stripped = "96e89bd979832678dfa6ec3f2333c66a1d4f00e47a49eecd40274864c3fe2a5d";
    let url = "https://h.example/cb";
    assert_eq!(
        verify_kore_signature(&["s3cr3t"], "POST", url, b"a=1", Some(over_stripped)),
        Ok(Verified::Signed)
    );
    assert_eq!(
        verify_kore_signature(&["s3cr3t"], "POST", url, b"a = 1", Some(over_stripped)),
        Err(SignatureError::Mismatch { header: KORE })
    );
    assert_eq!(minify_json(b"a = 1"), None);
}

#[test]
fn kore_secret_rotation() {
    let url = "https://h.example/cb";
    // python3 -c "import hashlib; print(hashlib.sha256(b'newPOSThttps://h.example/cb{\"a\":1}').hexdigest())"
    let by_new = "c64989421ce349b5c17af09590af3f6a16f89ebe0ad1c79f6e64a739a3b2c2ec";
    // python3 -c "import hashlib; print(hashlib.sha256(b'retiredPOSThttps://h.example/cb{\"a\":1}').hexdigest())"
    let by_retired = "bdc617eb9edd2a2dbcee86865c6f3f90dc99eaceb4267f684dfa8825b34c010b";
    // Active and Pending both configured: the second one is accepted.
    assert_eq!(
        verify_kore_signature(&["old", "new"], "POST", url, KORE_JSON, Some(by_new)),
        Ok(Verified::Signed)
    );
    // Owned secrets work too.
    let owned = vec![b"old".to_vec(), b"new".to_vec()];
    assert_eq!(
        verify_kore_signature(&owned, "POST", url, KORE_JSON, Some(by_new)),
        Ok(Verified::Signed)
    );
    // A retired secret no longer in the list is rejected.
    assert_eq!(
        verify_kore_signature(&["old", "new"], "POST", url, KORE_JSON, Some(by_retired)),
        Err(SignatureError::Mismatch { header: KORE })
    );
}

#[test]
fn kore_empty_header_is_unsigned() {
    let url = "https://h.example/cb";
    assert_eq!(
        verify_kore_signature(&["s3cr3t"], "POST", url, KORE_JSON, Some("")),
        Ok(Verified::Unsigned)
    );
    assert_eq!(
        verify_kore_signature(NO_SECRETS, "POST", url, KORE_JSON, Some("")),
        Ok(Verified::Unsigned)
    );
}

#[test]
fn kore_missing_header() {
    assert_eq!(
        verify_kore_signature(&["s3cr3t"], "POST", "https://h.example/cb", KORE_JSON, None),
        Err(SignatureError::Missing { header: KORE })
    );
}

#[test]
fn kore_signature_without_secrets() {
    assert_eq!(
        verify_kore_signature(
            NO_SECRETS,
            "POST",
            KORE_VECTOR_URL,
            KORE_VECTOR_BODY,
            Some(KORE_VECTOR_SIG)
        ),
        Err(SignatureError::NoSecrets { header: KORE })
    );
}

#[test]
fn kore_get_without_body() {
    // python3 -c "import hashlib; print(hashlib.sha256(b's3cr3tGEThttps://h.example/cb').hexdigest())"
    let expected = "a26f5b76f0d8d17e65973905b28c4a7fb543418c5d0505d1a20c75153fce893f";
    let url = "https://h.example/cb?ping=1";
    assert_eq!(kore_signature(b"s3cr3t", "GET", url, b""), expected);
    assert_eq!(
        verify_kore_signature(&["s3cr3t"], "GET", url, b"", Some(expected)),
        Ok(Verified::Signed)
    );
}

#[test]
fn kore_uppercase_hex_accepted() {
    let upper = KORE_VECTOR_SIG.to_ascii_uppercase();
    assert_eq!(
        verify_kore_signature(
            &["12345"],
            "POST",
            KORE_VECTOR_URL,
            KORE_VECTOR_BODY,
            Some(&upper)
        ),
        Ok(Verified::Signed)
    );
}

#[test]
fn kore_malformed_header() {
    let verify = |sig: &str| {
        verify_kore_signature(
            &["12345"],
            "POST",
            KORE_VECTOR_URL,
            KORE_VECTOR_BODY,
            Some(sig),
        )
    };
    let malformed = |reason| {
        Err(SignatureError::Malformed {
            header: KORE,
            reason,
        })
    };
    assert_eq!(
        verify(&KORE_VECTOR_SIG[..63]),
        malformed("expected 64 hexadecimal characters")
    );
    assert_eq!(
        verify(&format!("{KORE_VECTOR_SIG}0")),
        malformed("expected 64 hexadecimal characters")
    );
    assert_eq!(
        verify(&format!("g{}", &KORE_VECTOR_SIG[1..])),
        malformed("not hexadecimal")
    );
    // 64 bytes of non-ASCII must be rejected, not sliced mid-character.
    assert_eq!(verify(&"\u{e9}".repeat(32)), malformed("not hexadecimal"));
    assert_eq!(
        verify("sha256=abc"),
        malformed("expected 64 hexadecimal characters")
    );
}

// ----- Twilio -----------------------------------------------------------------------------

const TWILIO_VECTOR_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
// Protocol vector; also: python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675309Digits1234From+14158675309To+18005551212', hashlib.sha1).digest()).decode())"
const TWILIO_VECTOR_SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
const TWILIO_JSON_BODY: &[u8] = br#"{"property": "value", "boolean": true}"#;
// python3 -c "import hashlib; print(hashlib.sha256(b'{\"property\": \"value\", \"boolean\": true}').hexdigest())"
const TWILIO_JSON_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
// Protocol vector; also: python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620', hashlib.sha1).digest()).decode())"
const TWILIO_JSON_SIG: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";
// python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://mycompany.com/x', hashlib.sha1).digest()).decode())"
const TWILIO_X_SIG: &str = "JBdRms30VeGWdwrFlqv1KCn20yU=";

fn vector_params() -> Vec<(String, String)> {
    // Deliberately not in sorted order: the verifier sorts.
    params(&[
        ("To", "+18005551212"),
        ("Digits", "1234"),
        ("CallSid", "CA1234567890ABCDE"),
        ("From", "+14158675309"),
        ("Caller", "+14158675309"),
    ])
}

#[test]
fn twilio_form_vector_verifies() {
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            TWILIO_VECTOR_URL,
            &vector_params(),
            b"",
            Some(TWILIO_VECTOR_SIG)
        ),
        Ok(Verified::Signed)
    );
}

#[test]
fn twilio_signature_round_trips_vectors() {
    assert_eq!(
        twilio_signature(b"12345", TWILIO_VECTOR_URL, &vector_params()),
        TWILIO_VECTOR_SIG
    );
    assert_eq!(
        twilio_signature(b"12345", TWILIO_JSON_URL, &[]),
        TWILIO_JSON_SIG
    );
}

#[test]
fn twilio_json_body_vector_verifies() {
    assert_eq!(
        twilio_url_with_body_hash(TWILIO_VECTOR_URL, TWILIO_JSON_BODY),
        TWILIO_JSON_URL
    );
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            TWILIO_JSON_URL,
            &[],
            TWILIO_JSON_BODY,
            Some(TWILIO_JSON_SIG)
        ),
        Ok(Verified::Signed)
    );
}

/// Issue 13, item 7: without `bodySHA256` and without form parameters, Twilio's signature
/// covers the URL alone, so a body next to it would be unauthenticated: refused.
#[test]
fn twilio_refuses_a_body_the_signature_does_not_cover() {
    let url = "https://h.example/events";
    let signature = twilio_signature(b"12345", url, &[]);
    let result =
        verify_twilio_signature(&["12345"], url, &[], br#"[{"forged":1}]"#, Some(&signature));
    assert!(result.is_err(), "{result:?}");
    // No body (a GET callback, whose parameters are in the signed URL): still fine.
    assert_eq!(
        verify_twilio_signature(&["12345"], url, &[], b"", Some(&signature)),
        Ok(Verified::Signed)
    );
}

#[test]
fn twilio_json_body_tampered() {
    let tampered = br#"{"property": "VALUE", "boolean": true}"#;
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            TWILIO_JSON_URL,
            &[],
            tampered,
            Some(TWILIO_JSON_SIG)
        ),
        Err(SignatureError::BodyHashMismatch)
    );
    // A bodySHA256 that is not even hex does not match either.
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "https://mycompany.com/x?bodySHA256=zz\u{e9}",
            &[],
            TWILIO_JSON_BODY,
            Some(TWILIO_JSON_SIG)
        ),
        Err(SignatureError::BodyHashMismatch)
    );
}

#[test]
fn twilio_url_with_body_hash_separators() {
    let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let with = |url| twilio_url_with_body_hash(url, TWILIO_JSON_BODY);
    assert_eq!(
        with("https://h/x"),
        format!("https://h/x?bodySHA256={hash}")
    );
    assert_eq!(
        with("https://h/x?"),
        format!("https://h/x?bodySHA256={hash}")
    );
    assert_eq!(
        with("https://h/x?a=1&"),
        format!("https://h/x?a=1&bodySHA256={hash}")
    );
    assert_eq!(
        with("https://h/x#f"),
        format!("https://h/x?bodySHA256={hash}#f")
    );
}

#[test]
fn twilio_repeated_params_sorted_by_value() {
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://mycompany.com/myapp.php'+b'ay'+b'az'+b'b2', hashlib.sha1).digest()).decode())"
    let expected = "8VpKzI1ybSdfIr8r+AjiDINQ6Ww=";
    let url = "https://mycompany.com/myapp.php";
    let form = params(&[("b", "2"), ("a", "z"), ("a", "y")]);
    assert_eq!(twilio_signature(b"12345", url, &form), expected);
    assert_eq!(
        verify_twilio_signature(&["12345"], url, &form, b"", Some(expected)),
        Ok(Verified::Signed)
    );
}

#[test]
fn twilio_default_port_added() {
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://mycompany.com:443/myapp.php?foo=1', hashlib.sha1).digest()).decode())"
    let https = "unfAeyH+aNMhvX2agqhazTCScj4=";
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "https://mycompany.com/myapp.php?foo=1",
            &[],
            b"",
            Some(https)
        ),
        Ok(Verified::Signed)
    );
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'http://mycompany.com:80/myapp.php?foo=1', hashlib.sha1).digest()).decode())"
    let http = "OQrt0zAqYnH0Reth9r5i+ATQoJ0=";
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "http://mycompany.com/myapp.php?foo=1",
            &[],
            b"",
            Some(http)
        ),
        Ok(Verified::Signed)
    );
    // The default port belongs to the scheme: :443 is not tried for http.
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "http://mycompany.com/myapp.php?foo=1",
            &[],
            b"",
            Some(https)
        ),
        Err(SignatureError::Mismatch { header: TWILIO })
    );
}

#[test]
fn twilio_explicit_port_removed() {
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "https://mycompany.com:8443/x",
            &[],
            b"",
            Some(TWILIO_X_SIG)
        ),
        Ok(Verified::Signed)
    );
    // And the URL exactly as given (no port) still verifies.
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "https://mycompany.com/x",
            &[],
            b"",
            Some(TWILIO_X_SIG)
        ),
        Ok(Verified::Signed)
    );
}

#[test]
fn twilio_ipv6_port_variants() {
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://[2001:db8::1]:443/x', hashlib.sha1).digest()).decode())"
    let expected = "RsOK8fLbeOvQp0ERRXMiPWbdT4g=";
    assert_eq!(
        verify_twilio_signature(
            &["12345"],
            "https://[2001:db8::1]/x",
            &[],
            b"",
            Some(expected)
        ),
        Ok(Verified::Signed)
    );
}

#[test]
fn twilio_credentials_in_url_preserved() {
    let url = "https://user:pass@mycompany.com/x";
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://user:pass@mycompany.com/x', hashlib.sha1).digest()).decode())"
    let exact = "Me/zhEd+ZdhuPhfNpOnib1h5cbs=";
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'12345', b'https://user:pass@mycompany.com:443/x', hashlib.sha1).digest()).decode())"
    let with_port = "Wf+hHZr0RePHromnFhky6xXRNYI=";
    assert_eq!(twilio_signature(b"12345", url, &[]), exact);
    for sig in [exact, with_port] {
        assert_eq!(
            verify_twilio_signature(&["12345"], url, &[], b"", Some(sig)),
            Ok(Verified::Signed)
        );
        // An explicit port is removed after the '@', credentials kept.
        assert_eq!(
            verify_twilio_signature(
                &["12345"],
                "https://user:pass@mycompany.com:443/x",
                &[],
                b"",
                Some(sig)
            ),
            Ok(Verified::Signed)
        );
    }
    // Dropping the credentials would be a different signed string.
    assert_eq!(
        verify_twilio_signature(&["12345"], "https://mycompany.com/x", &[], b"", Some(exact)),
        Err(SignatureError::Mismatch { header: TWILIO })
    );
}

#[test]
fn twilio_token_rotation() {
    // python3 -c "import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b'new-token', b'https://mycompany.com/x', hashlib.sha1).digest()).decode())"
    let by_new = "wNuh5zT/+eHzLW7c+MsoELcDAdY=";
    let url = "https://mycompany.com/x";
    assert_eq!(
        verify_twilio_signature(&["old-token", "new-token"], url, &[], b"", Some(by_new)),
        Ok(Verified::Signed)
    );
    let owned = vec![String::from("12345"), String::from("new-token")];
    assert_eq!(
        verify_twilio_signature(&owned, url, &[], b"", Some(TWILIO_X_SIG)),
        Ok(Verified::Signed)
    );
}

#[test]
fn twilio_wrong_token() {
    assert_eq!(
        verify_twilio_signature(
            &["54321"],
            TWILIO_VECTOR_URL,
            &vector_params(),
            b"",
            Some(TWILIO_VECTOR_SIG)
        ),
        Err(SignatureError::Mismatch { header: TWILIO })
    );
}

#[test]
fn twilio_garbage_base64() {
    let verify = |sig: &str| {
        verify_twilio_signature(
            &["12345"],
            TWILIO_VECTOR_URL,
            &vector_params(),
            b"",
            Some(sig),
        )
    };
    let malformed = |reason| {
        Err(SignatureError::Malformed {
            header: TWILIO,
            reason,
        })
    };
    assert_eq!(
        verify("not base64 at all!!!!!!!!!!!"),
        malformed("not base64")
    );
    assert_eq!(
        verify("RSOYDt4T1cUTdK1PDd93/VVr8B8"),
        malformed("expected 28 base64 characters")
    );
    assert_eq!(
        verify(
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"
        ),
        malformed("not base64")
    );
    // 21 valid base64 bytes in 28 characters: right length, wrong size.
    assert_eq!(
        verify("AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        malformed("not a 20-byte HMAC-SHA1")
    );
    // Well-formed but wrong.
    assert_eq!(
        verify("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        Err(SignatureError::Mismatch { header: TWILIO })
    );
}

#[test]
fn twilio_missing_or_empty_header() {
    for sig in [None, Some(""), Some("  ")] {
        assert_eq!(
            verify_twilio_signature(&["12345"], TWILIO_VECTOR_URL, &[], b"", sig),
            Err(SignatureError::Missing { header: TWILIO })
        );
    }
}

#[test]
fn twilio_signature_without_tokens() {
    assert_eq!(
        verify_twilio_signature(
            NO_SECRETS,
            TWILIO_VECTOR_URL,
            &vector_params(),
            b"",
            Some(TWILIO_VECTOR_SIG)
        ),
        Err(SignatureError::NoSecrets { header: TWILIO })
    );
}

#[test]
fn odd_urls_do_not_panic() {
    let urls = [
        "",
        "://",
        "https://",
        "https://@",
        "https://:",
        "https://[",
        "https://[::1",
        "https://[::1]x/",
        "https://h\u{e9}\u{e9}:\u{fc}/\u{e4}?\u{e9}#\u{e9}",
        "\u{e9}://\u{e9}@\u{e9}:443",
        "https://a@b@c:80?bodySHA256=",
        "https://h:/x",
        "https://h:12a/x",
        "?#",
        "#?bodySHA256=0",
        "\u{1f600}?\u{1f600}#\u{1f600}",
    ];
    for url in urls {
        let _ = verify_twilio_signature(&["t"], url, &[], b"", Some(TWILIO_X_SIG));
        let _ = verify_kore_signature(&["s"], "POST", url, b"{ }", Some(KORE_VECTOR_SIG));
        let _ = twilio_url_with_body_hash(url, b"");
        let _ = kore_signature(b"s", "post", url, b"");
    }
}

#[test]
fn port_variants_split_on_the_right_bytes() {
    let variants = |url| {
        twilio_url_variants(url)
            .iter()
            .flatten()
            .map(|v| format!("{}{}{}", v.head, v.port, v.tail))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        variants("https://u:p@h:8443/x?y=1"),
        ["https://u:p@h:8443/x?y=1", "https://u:p@h/x?y=1"]
    );
    assert_eq!(
        variants("HTTPS://h?y=1"),
        ["HTTPS://h?y=1", "HTTPS://h:443?y=1"]
    );
    assert_eq!(
        variants("https://[::1]:80"),
        ["https://[::1]:80", "https://[::1]"]
    );
    assert_eq!(variants("ftp://h/x"), ["ftp://h/x"]);
    assert_eq!(variants("https://h:abc/x"), ["https://h:abc/x"]);
    assert_eq!(variants("/p?u=http://h:80/x"), ["/p?u=http://h:80/x"]);
}
