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
mod tests;
