//! `Kore-Signature` and `X-Twilio-Signature` verification.
//!
//! Both schemes are reproduced quirk for quirk, because a "cleaner" reading of either one
//! rejects genuine deliveries:
//!
//! - **KORE** signs `secret + METHOD + url + body` with a plain SHA-256 (not an HMAC), over the
//!   configured callback URL without its query or fragment. One documented example hashes the
//!   minified JSON instead of the raw body, so that is tried as a fallback. Rotation switches
//!   secrets instantly, so a list of secrets is accepted. An empty header means the account has
//!   no secret at all; that is reported as [`Verified::Unsigned`] and the caller decides. A
//!   plain SHA-256 can be extended by anyone who saw one signed request, so a body that is not
//!   UTF-8 (as every such extension is) is refused.
//! - **Twilio** signs the full URL (query included) plus the sorted form parameters with
//!   HMAC-SHA1 keyed by the Auth Token. JSON bodies are covered indirectly through a
//!   `bodySHA256` query parameter. Twilio is inconsistent about default ports, so the URL is
//!   tried with the port removed and with the scheme's default port added.
//!
//! All comparisons are constant time, all crypto comes from the `RustCrypto` crates, and nothing
//! here panics on any input: URLs are only ever split on ASCII delimiters.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a successful check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The signature matched one of the configured secrets.
    Signed,
    /// KORE sent an empty `Kore-Signature`: the account has no secret. Whether that is
    /// acceptable is a deployment decision (`ALLOW_UNSIGNED`), not the verifier's.
    Unsigned,
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing {header} header")]
    Missing { header: &'static str },
    #[error("malformed {header} header: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error("{header} does not match any configured secret")]
    Mismatch { header: &'static str },
    #[error("{header} received but no secret is configured")]
    NoSecrets { header: &'static str },
    #[error("bodySHA256 in the URL does not match the body")]
    BodyHashMismatch,
    /// KORE signs with a plain SHA-256, which an attacker can extend from one captured
    /// request; the bytes such an extension needs are never valid UTF-8, and KORE only sends
    /// JSON and form text.
    #[error("{header} covers a body that is not UTF-8")]
    BodyNotUtf8 { header: &'static str },
    /// Without `bodySHA256` and form parameters, Twilio's signature covers the URL alone.
    #[error("x-twilio-signature does not cover the body (no form parameters, no bodySHA256)")]
    BodyNotCovered,
}

/// Header carrying KORE's signature (lowercase, as HTTP/2 and Lambda deliver header names).
pub const KORE_SIGNATURE_HEADER: &str = "kore-signature";
/// Header carrying Twilio's signature (lowercase, as HTTP/2 and Lambda deliver header names).
pub const TWILIO_SIGNATURE_HEADER: &str = "x-twilio-signature";

type HmacSha1 = Hmac<Sha1>;

/// Length of a SHA-256 digest, which is what `Kore-Signature` and `bodySHA256` carry.
const SHA256_LEN: usize = 32;
/// Length of an HMAC-SHA1 tag, which is what `X-Twilio-Signature` carries.
const HMAC_SHA1_LEN: usize = 20;
/// Base64 length (padded) of an HMAC-SHA1 tag; checked up front so decoding needs no heap.
const TWILIO_SIGNATURE_B64_LEN: usize = 28;

// ---------------------------------------------------------------------------------------------
// KORE
// ---------------------------------------------------------------------------------------------

/// Verifies a `Kore-Signature` header against every configured secret.
///
/// `url` is the callback URL as configured at KORE; its query and fragment are dropped here
/// because KORE signs without them. `body` is the raw request body (empty for GET). The raw
/// body is tried first, then (only if it is JSON) its minified form, because one KORE example
/// signs the minified JSON.
///
/// `signature`: `None` is [`SignatureError::Missing`]; `Some("")` is [`Verified::Unsigned`]
/// whatever the secrets, since KORE sends an empty header for accounts without a secret.
///
/// # Errors
/// [`SignatureError::Missing`] without the header, [`SignatureError::NoSecrets`] when a
/// signature arrives but `secrets` is empty, [`SignatureError::Malformed`] unless it is 64 hex
/// characters, [`SignatureError::BodyNotUtf8`] for a body that is not UTF-8 (see the
/// variant), [`SignatureError::Mismatch`] when no secret and body variant reproduces it.
pub fn verify_kore_signature<S: AsRef<[u8]>>(
    secrets: &[S],
    method: &str,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<Verified, SignatureError> {
    let header = KORE_SIGNATURE_HEADER;
    let signature = trim_ows(signature.ok_or(SignatureError::Missing { header })?);
    if signature.is_empty() {
        return Ok(Verified::Unsigned);
    }
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets { header });
    }
    let expected = decode_kore_header(signature)?;
    // Checked before any hashing: a length-extended body always carries SHA-256 padding
    // (0x80 then zeros), which is not UTF-8.
    if std::str::from_utf8(body).is_err() {
        return Err(SignatureError::BodyNotUtf8 { header });
    }
    let method = uppercase_method(method);
    let url = kore_signed_url(url);

    if kore_any_secret_matches(secrets, &method, url, body, &expected) {
        return Ok(Verified::Signed);
    }
    // The fallback allocates, so it only runs once the raw body has failed for every secret.
    if let Some(minified) = minify_json(body)
        && minified != body
        && kore_any_secret_matches(secrets, &method, url, &minified, &expected)
    {
        return Ok(Verified::Signed);
    }
    Err(SignatureError::Mismatch { header })
}

/// Computes the header value KORE would send (used by `kore-usage send`, tests and benches): lowercase hex SHA-256 of `secret + METHOD + url + body`, with the
/// URL's query and fragment dropped exactly as the verifier does.
#[must_use]
pub fn kore_signature(secret: &[u8], method: &str, url: &str, body: &[u8]) -> String {
    hex::encode(kore_digest(
        secret,
        &uppercase_method(method),
        kore_signed_url(url),
        body,
    ))
}

/// Plain SHA-256 over the concatenation, fed in pieces so no joined string is allocated.
fn kore_digest(
    secret: &[u8],
    method: &str,
    url: &str,
    body: &[u8],
) -> sha2::digest::Output<Sha256> {
    Sha256::new()
        .chain_update(secret)
        .chain_update(method.as_bytes())
        .chain_update(url.as_bytes())
        .chain_update(body)
        .finalize()
}

fn kore_any_secret_matches<S: AsRef<[u8]>>(
    secrets: &[S],
    method: &str,
    url: &str,
    body: &[u8],
    expected: &[u8; SHA256_LEN],
) -> bool {
    secrets.iter().any(|secret| {
        let actual = kore_digest(secret.as_ref(), method, url, body);
        bool::from(actual.as_slice().ct_eq(expected.as_slice()))
    })
}

/// KORE signs the callback URL without its query string and fragment.
fn kore_signed_url(url: &str) -> &str {
    url.find(['?', '#']).map_or(url, |end| &url[..end])
}

/// KORE signs the method in upper case; only allocate in the unusual case it arrives otherwise.
fn uppercase_method(method: &str) -> Cow<'_, str> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(method.to_ascii_uppercase())
    } else {
        Cow::Borrowed(method)
    }
}

/// Decodes the 64 hex characters (either case) into the digest they encode.
fn decode_kore_header(signature: &str) -> Result<[u8; SHA256_LEN], SignatureError> {
    let header = KORE_SIGNATURE_HEADER;
    if signature.len() != 2 * SHA256_LEN {
        return Err(SignatureError::Malformed {
            header,
            reason: "expected 64 hexadecimal characters",
        });
    }
    let mut decoded = [0u8; SHA256_LEN];
    hex::decode_to_slice(signature, &mut decoded).map_err(|_| SignatureError::Malformed {
        header,
        reason: "not hexadecimal",
    })?;
    Ok(decoded)
}

/// The body with every insignificant whitespace byte removed, key order and everything else
/// kept byte for byte; `None` when the body is not JSON (then there is no fallback).
///
/// Validating with `serde_json` first is what makes the simple string-tracking scan below
/// correct: in valid JSON, a `"` outside a string always opens one, and inside a string only
/// an unescaped `"` closes it.
fn minify_json(body: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_string = true;
                    out.push(byte);
                }
                _ => out.push(byte),
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

/// Verifies an `X-Twilio-Signature` header against every configured Auth Token.
///
/// `url` is the full request URL, query included. If its query carries `bodySHA256` (Twilio's
/// scheme for JSON bodies), that hash is checked against `body` and the signature covers the
/// URL alone; otherwise it covers the URL followed by the sorted `form_params` (pass an empty
/// slice for GET callbacks, whose parameters are already in the URL).
///
/// Each token is tried over the URL as given and over its port variant (port removed, or the
/// scheme's default port added), because Twilio's own validators accept both.
///
/// # Errors
/// [`SignatureError::Missing`] for an absent or empty header, [`SignatureError::NoSecrets`]
/// when `tokens` is empty, [`SignatureError::Malformed`] unless it is base64 of 20 bytes,
/// [`SignatureError::BodyHashMismatch`] when `bodySHA256` does not match `body`,
/// [`SignatureError::BodyNotCovered`] for a non-empty `body` with neither `bodySHA256` nor
/// form parameters, and [`SignatureError::Mismatch`] when no token and URL variant reproduces it.
pub fn verify_twilio_signature<S: AsRef<[u8]>>(
    tokens: &[S],
    url: &str,
    form_params: &[(String, String)],
    body: &[u8],
    signature: Option<&str>,
) -> Result<Verified, SignatureError> {
    let header = TWILIO_SIGNATURE_HEADER;
    // Twilio always signs, so an empty header is as good as none.
    let signature = signature
        .map(trim_ows)
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::Missing { header })?;
    if tokens.is_empty() {
        return Err(SignatureError::NoSecrets { header });
    }
    let tag = decode_twilio_header(signature)?;

    let sorted;
    let params: &[&(String, String)] = if let Some(claimed) = body_sha256_param(url) {
        if !body_hash_matches(&claimed, body) {
            return Err(SignatureError::BodyHashMismatch);
        }
        &[]
    } else if form_params.is_empty() && !body.is_empty() {
        // The signature would cover the URL only: anyone holding one signed URL could post
        // any body with it.
        return Err(SignatureError::BodyNotCovered);
    } else {
        sorted = sorted_params(form_params);
        &sorted
    };

    let variants = twilio_url_variants(url);
    for token in tokens {
        for variant in variants.iter().flatten() {
            let Some(mac) = twilio_mac(token.as_ref(), variant, params) else {
                continue;
            };
            if mac.verify_slice(&tag).is_ok() {
                return Ok(Verified::Signed);
            }
        }
    }
    Err(SignatureError::Mismatch { header })
}

/// Computes the header value Twilio would send for `url` (with query) and form params: base64
/// HMAC-SHA1 over the URL exactly as given followed by the sorted parameters.
#[must_use]
pub fn twilio_signature(token: &[u8], url: &str, form_params: &[(String, String)]) -> String {
    let url = SignedUrl {
        head: url,
        port: "",
        tail: "",
    };
    match twilio_mac(token, &url, &sorted_params(form_params)) {
        Some(mac) => BASE64.encode(mac.finalize().into_bytes()),
        // Unreachable: HMAC accepts keys of any length. An empty string never verifies.
        None => String::new(),
    }
}

/// Appends `bodySHA256=<hex>` to `url`'s query, as Twilio does for JSON bodies (before any
/// fragment, with `?` or `&` as needed).
#[must_use]
pub fn twilio_url_with_body_hash(url: &str, body: &[u8]) -> String {
    url_with_query(
        url,
        &format!("bodySHA256={}", hex::encode(Sha256::digest(body))),
    )
}

/// `url` with `query` (already encoded) appended to its query string: before any fragment,
/// with `?` or `&` as needed. How a GET callback's form and Twilio's `bodySHA256` are added to
/// the URL that is requested and signed.
#[must_use]
pub fn url_with_query(url: &str, query: &str) -> String {
    let (base, fragment) = url.find('#').map_or((url, ""), |i| url.split_at(i));
    let separator = if !base.contains('?') {
        "?"
    } else if base.ends_with(['?', '&']) {
        ""
    } else {
        "&"
    };
    format!("{base}{separator}{query}{fragment}")
}

/// A candidate signed URL, kept as borrowed pieces so port variants cost no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SignedUrl<'a> {
    head: &'a str,
    port: &'static str,
    tail: &'a str,
}

/// HMAC-SHA1 over `url` then every `name + value`; `None` only if the key were rejected,
/// which HMAC never does.
fn twilio_mac(token: &[u8], url: &SignedUrl<'_>, params: &[&(String, String)]) -> Option<HmacSha1> {
    let mut mac = HmacSha1::new_from_slice(token).ok()?;
    mac.update(url.head.as_bytes());
    mac.update(url.port.as_bytes());
    mac.update(url.tail.as_bytes());
    for param in params {
        mac.update(param.0.as_bytes());
        mac.update(param.1.as_bytes());
    }
    Some(mac)
}

/// Parameters sorted by name, then the values of one name sorted, as Twilio signs them.
/// Byte order on UTF-8 is code point order, which is what Twilio's validators use.
fn sorted_params(form_params: &[(String, String)]) -> Vec<&(String, String)> {
    let mut sorted: Vec<&(String, String)> = form_params.iter().collect();
    sorted.sort_unstable();
    sorted
}

/// Decodes the base64 header into the 20-byte tag, on the stack.
fn decode_twilio_header(signature: &str) -> Result<[u8; HMAC_SHA1_LEN], SignatureError> {
    let header = TWILIO_SIGNATURE_HEADER;
    if signature.len() != TWILIO_SIGNATURE_B64_LEN {
        return Err(SignatureError::Malformed {
            header,
            reason: "expected 28 base64 characters",
        });
    }
    // Larger than the 21 bytes base64 estimates for 28 characters, so only bad input fails.
    let mut buf = [0u8; 32];
    let len = BASE64
        .decode_slice(signature, &mut buf)
        .map_err(|_| SignatureError::Malformed {
            header,
            reason: "not base64",
        })?;
    let mut tag = [0u8; HMAC_SHA1_LEN];
    match buf.get(..len) {
        Some(decoded) if decoded.len() == HMAC_SHA1_LEN => tag.copy_from_slice(decoded),
        _ => {
            return Err(SignatureError::Malformed {
                header,
                reason: "not a 20-byte HMAC-SHA1",
            });
        }
    }
    Ok(tag)
}

/// The first `bodySHA256` value in the URL's query (the one Twilio's validators read).
fn body_sha256_param(url: &str) -> Option<Cow<'_, str>> {
    let query_start = url.find('?')? + 1;
    let query = url.get(query_start..)?;
    let query = query.find('#').map_or(query, |end| &query[..end]);
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "bodySHA256")
        .map(|(_, value)| value)
}

/// Constant-time comparison of the claimed hex hash with SHA-256 of the body; a claim that is
/// not 64 hex characters simply does not match.
fn body_hash_matches(claimed: &str, body: &[u8]) -> bool {
    let mut claimed_bytes = [0u8; SHA256_LEN];
    if hex::decode_to_slice(claimed, &mut claimed_bytes).is_err() {
        return false;
    }
    bool::from(
        Sha256::digest(body)
            .as_slice()
            .ct_eq(claimed_bytes.as_slice()),
    )
}

/// The URL as given, plus the one port variant Twilio's validators also accept: with an
/// explicit port, the URL without it; without one, the URL with the scheme's default port.
///
/// A hand-written split on ASCII delimiters rather than a URL library, because the signed
/// string must be preserved byte for byte (credentials, case, percent-encoding), which a
/// normalizing parser would not do.
fn twilio_url_variants(url: &str) -> [Option<SignedUrl<'_>>; 2] {
    let given = SignedUrl {
        head: url,
        port: "",
        tail: "",
    };
    let variant = split_authority(url).and_then(|parts| match parts.port {
        Some(port_start) => Some(SignedUrl {
            head: &url[..port_start],
            port: "",
            tail: &url[parts.authority_end..],
        }),
        None => default_port(parts.scheme).map(|port| SignedUrl {
            head: &url[..parts.authority_end],
            port,
            tail: &url[parts.authority_end..],
        }),
    });
    [Some(given), variant]
}

/// Byte offsets into a URL, all on ASCII delimiters and so on char boundaries.
struct UrlParts<'a> {
    scheme: &'a str,
    /// Offset of the `:` introducing an explicit port, if there is one.
    port: Option<usize>,
    /// Offset just past the authority (the first `/`, `?` or `#` after `://`, or the end).
    authority_end: usize,
}

/// Splits `scheme://[userinfo@]host[:port]rest`; `None` when the URL does not look like that
/// (then only the URL as given is tried).
fn split_authority(url: &str) -> Option<UrlParts<'_>> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    // Without a real scheme the "://" found is somewhere else (e.g. inside the query).
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    let authority_start = scheme_end + 3;
    let rest = url.get(authority_start..)?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // Credentials may contain ':' themselves; the host starts after the last '@'.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    // In an IPv6 literal the colons belong to the address; a port can only follow ']'.
    let host_len = if host_port.starts_with('[') {
        host_port.find(']')? + 1
    } else {
        host_port.find(':').unwrap_or(host_port.len())
    };
    let after_host = &host_port[host_len..];
    let port = if after_host.is_empty() {
        None
    } else {
        let digits = after_host.strip_prefix(':')?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(authority_start + host_start + host_len)
    };
    Some(UrlParts {
        scheme,
        port,
        authority_end: authority_start + authority_len,
    })
}

fn default_port(scheme: &str) -> Option<&'static str> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(":443")
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(":80")
    } else {
        None
    }
}

/// Optional whitespace around a header value is not part of it (RFC 9110 §5.5).
fn trim_ows(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

#[cfg(test)]
mod tests {
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
    const KORE_VECTOR_SIG: &str =
        "f562d3959f68b5a30fc7a63f8bbf40987f633575f4231ffceb4f76dd154ea3ce";

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
        let pretty =
            "{\n  \"b\": 1,\n  \"a\": \"x y \\\" z\",\n  \"c\": [true, null, \"\u{e9}\"]\n}";
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
}
