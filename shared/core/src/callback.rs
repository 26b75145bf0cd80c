//! Callbacks: form-urlencoded POST bodies (or GET query strings) sent when a SIM update
//! finishes, an SMS or IP Command changes status, or an eSIM profile changes status. Their
//! payloads did not change in the migration, only the headers did, and not every field is
//! documented, so every field received is kept, in order.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::event::Provider;
use crate::excerpt::{MAX_QUOTE_BYTES, excerpt};

pub const KORE_IDEMPOTENCY_HEADER: &str = "kore-idempotency-token";
pub const TWILIO_IDEMPOTENCY_HEADER: &str = "i-twilio-idempotency-token";
/// The time KORE sent the callback. Not covered by `Kore-Signature`: it orders callbacks
/// but proves nothing.
pub const DATE_HEADER: &str = "date";
/// How far a `Date` may lie ahead of the arrival (clocks differ) and still be believed. A
/// later one would pin the SIM's status until that time, whatever came after it.
pub const MAX_DATE_AHEAD: Duration = Duration::minutes(5);

/// The `{kind}` of `/callbacks/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    Sims,
    SmsCommands,
    IpCommands,
    EsimProfiles,
}

impl CallbackKind {
    pub const ALL: [CallbackKind; 4] = [
        CallbackKind::Sims,
        CallbackKind::SmsCommands,
        CallbackKind::IpCommands,
        CallbackKind::EsimProfiles,
    ];

    /// The path segment, also the stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackKind::Sims => "sims",
            CallbackKind::SmsCommands => "sms-commands",
            CallbackKind::IpCommands => "ip-commands",
            CallbackKind::EsimProfiles => "esim-profiles",
        }
    }

    pub fn from_path_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == segment)
    }
}

impl fmt::Display for CallbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the idempotency token came from. A KORE token cannot de-duplicate a Twilio
/// delivery and vice versa, so the token is only unique together with the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Kore-Idempotency-Token` or `I-Twilio-Idempotency-Token`.
    Header,
    /// No header: the SHA-256 of the kind and payload, so a retried delivery still matches.
    PayloadHash,
}

/// One parsed callback. Built only by [`parse_callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Callback {
    pub kind: CallbackKind,
    pub provider: Provider,
    pub idempotency_token: String,
    pub token_source: TokenSource,
    pub sim_sid: Option<String>,
    pub account_sid: Option<String>,
    /// `SimStatus` for SIM updates, `Status` for commands and eSIM profiles.
    pub status: Option<String>,
    /// Every field received, decoded, in the order received (names may repeat).
    pub fields: Vec<(String, String)>,
    /// The `Date` header, as far as it could be read.
    pub date: DateHeader,
}

/// The `Date` header of a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateHeader {
    Sent(DateTime<Utc>),
    Absent,
    /// Neither `2024-07-03T14:40:58Z` nor `Wed, 03 Jul 2024 14:40:58 GMT`.
    Unparseable,
}

/// Where a callback's send time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentAtSource {
    DateHeader,
    /// Arrival time: no `Date` header.
    ArrivalNoDate,
    /// Arrival time: a `Date` header that is not a time.
    ArrivalUnparseableDate,
    /// Arrival time: a `Date` more than [`MAX_DATE_AHEAD`] after the arrival.
    ArrivalDateAhead,
}

impl SentAtSource {
    pub const ALL: [SentAtSource; 4] = [
        SentAtSource::DateHeader,
        SentAtSource::ArrivalNoDate,
        SentAtSource::ArrivalUnparseableDate,
        SentAtSource::ArrivalDateAhead,
    ];

    /// The stored and printed name: says when the arrival time stands in, and why.
    pub fn as_str(self) -> &'static str {
        match self {
            SentAtSource::DateHeader => "date-header",
            SentAtSource::ArrivalNoDate => "arrival:no-date-header",
            SentAtSource::ArrivalUnparseableDate => "arrival:date-header-unparseable",
            SentAtSource::ArrivalDateAhead => "arrival:date-header-ahead-of-arrival",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl DateHeader {
    /// KORE writes UTC as `2024-07-03T14:40:58Z`; HTTP senders commonly use the RFC 7231 form
    /// `Wed, 03 Jul 2024 14:40:58 GMT`. Both are accepted.
    pub fn of(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(DATE_HEADER) else {
            return DateHeader::Absent;
        };
        let Ok(text) = value.to_str() else {
            return DateHeader::Unparseable;
        };
        let text = text.trim();
        DateTime::parse_from_rfc3339(text)
            .or_else(|_| DateTime::parse_from_rfc2822(text))
            .map(|at| DateHeader::Sent(at.to_utc()))
            .unwrap_or(DateHeader::Unparseable)
    }
}

impl Callback {
    /// When the callback was sent: its `Date`, else its arrival, with where it came from.
    pub fn sent_at(&self, received_at: DateTime<Utc>) -> (DateTime<Utc>, SentAtSource) {
        match self.date {
            DateHeader::Sent(at) if at <= received_at + MAX_DATE_AHEAD => {
                (at, SentAtSource::DateHeader)
            }
            DateHeader::Sent(_) => (received_at, SentAtSource::ArrivalDateAhead),
            DateHeader::Absent => (received_at, SentAtSource::ArrivalNoDate),
            DateHeader::Unparseable => (received_at, SentAtSource::ArrivalUnparseableDate),
        }
    }
}

impl Callback {
    /// The first value of a field, by exact name.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("callback payload is empty")]
    Empty,
    #[error("callback payload is not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: String, reason: &'static str },
    #[error("header `{header}` is invalid: {reason}")]
    InvalidHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error(
        "cannot tell whether KORE or Twilio sent this callback: no idempotency token, signature or known User-Agent header"
    )]
    UnknownProvider,
}

/// Decodes `application/x-www-form-urlencoded` text into name/value pairs, `+` as space.
pub fn parse_form(payload: &[u8]) -> Result<Vec<(String, String)>, CallbackError> {
    // Decoding is lossy for percent-escaped bytes that are not UTF-8; the raw payload must be
    // UTF-8 itself so that what is stored is what was sent.
    std::str::from_utf8(payload).map_err(|e| CallbackError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    Ok(form_urlencoded::parse(payload)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect())
}

/// Parses a callback body (POST) or query string (GET) with the request's headers.
pub fn parse_callback(
    kind: CallbackKind,
    payload: &[u8],
    headers: &HeaderMap,
) -> Result<Callback, CallbackError> {
    let fields = parse_form(payload)?;
    if fields.is_empty() {
        return Err(CallbackError::Empty);
    }
    if let Some((_, value)) = fields.iter().find(|(name, _)| name.is_empty()) {
        return Err(CallbackError::InvalidField {
            field: format!("={}", excerpt(value, MAX_QUOTE_BYTES)),
            reason: "a field has no name",
        });
    }

    let (provider, header_token) = provider_and_token(headers)?;
    let (idempotency_token, token_source) = match header_token {
        Some(token) => (token, TokenSource::Header),
        None => {
            let mut hasher = Sha256::new();
            hasher.update(kind.as_str().as_bytes());
            hasher.update(b"\n");
            hasher.update(payload);
            (
                format!("sha256:{}", hex::encode(hasher.finalize())),
                TokenSource::PayloadHash,
            )
        }
    };

    let first = |name: &str| {
        fields
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    Ok(Callback {
        kind,
        provider,
        idempotency_token,
        token_source,
        sim_sid: first("SimSid"),
        account_sid: first("AccountSid"),
        status: first("SimStatus").or_else(|| first("Status")),
        fields,
        date: DateHeader::of(headers),
    })
}

/// The idempotency token the headers carry, when they carry a usable one. A callback that
/// cannot be parsed is quarantined with it, so that a redrive keys it as the original would
/// have been keyed.
pub fn header_token(headers: &HeaderMap) -> Option<String> {
    provider_and_token(headers)
        .ok()
        .and_then(|(_, token)| token)
}

/// The provider from the idempotency token header, else the signature header, else the
/// User-Agent (`KoreProxy/1.1`, `TwilioProxy/1.1`). `HeaderMap` lookups ignore case.
fn provider_and_token(headers: &HeaderMap) -> Result<(Provider, Option<String>), CallbackError> {
    for (header, provider) in [
        (KORE_IDEMPOTENCY_HEADER, Provider::Kore),
        (TWILIO_IDEMPOTENCY_HEADER, Provider::Twilio),
    ] {
        if let Some(value) = headers.get(header) {
            let token = value.to_str().map_err(|_| CallbackError::InvalidHeader {
                header,
                reason: "not visible ASCII",
            })?;
            let token = token.trim();
            if token.is_empty() || token.len() > 256 {
                return Err(CallbackError::InvalidHeader {
                    header,
                    reason: "must be 1 to 256 characters",
                });
            }
            return Ok((provider, Some(token.to_owned())));
        }
    }
    if headers.contains_key(crate::signature::KORE_SIGNATURE_HEADER) {
        return Ok((Provider::Kore, None));
    }
    if headers.contains_key(crate::signature::TWILIO_SIGNATURE_HEADER) {
        return Ok((Provider::Twilio, None));
    }
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if user_agent.starts_with("KoreProxy") {
        Ok((Provider::Kore, None))
    } else if user_agent.starts_with("TwilioProxy") {
        Ok((Provider::Twilio, None))
    } else {
        Err(CallbackError::UnknownProvider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const COMMAND: &str = include_str!("../../../tests/fixtures/callback-command.form");
    const SIM_STATUS: &str = include_str!("../../../tests/fixtures/callback-sim-status.form");

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn kore_sim_status_callback() {
        let callback = parse_callback(
            CallbackKind::Sims,
            SIM_STATUS.trim_end().as_bytes(),
            &headers(&[(
                "Kore-Idempotency-Token",
                "RQa48ec9b6ef475034c35566c02b654243",
            )]),
        )
        .unwrap();
        assert_eq!(callback.provider, Provider::Kore);
        assert_eq!(
            callback.idempotency_token,
            "RQa48ec9b6ef475034c35566c02b654243"
        );
        assert_eq!(callback.token_source, TokenSource::Header);
        assert_eq!(
            callback.sim_sid.as_deref(),
            Some("HSab3f06be8f5d32caecb91e8a306c6c08")
        );
        assert_eq!(
            callback.account_sid.as_deref(),
            Some("AC3ba717b1d236e6c4a835e46130267eb4")
        );
        assert_eq!(callback.status.as_deref(), Some("active"));
        assert_eq!(callback.fields.len(), 5);
        assert_eq!(callback.field("SimUniqueName"), Some("my_super_sim"));
    }

    #[test]
    fn twilio_command_callback_decodes_every_field() {
        let callback = parse_callback(
            CallbackKind::SmsCommands,
            COMMAND.trim_end().as_bytes(),
            // Header names arrive in any case; HeaderMap normalizes them.
            &headers(&[(
                "I-TWILIO-IDEMPOTENCY-TOKEN",
                "6f1c2b9e-2d4a-4c8e-9a51-0d7e3b1f2a44",
            )]),
        )
        .unwrap();
        assert_eq!(callback.provider, Provider::Twilio);
        assert_eq!(callback.status.as_deref(), Some("received"));
        assert_eq!(callback.field("Command"), Some("Hello;1234;testing@!#"));
        assert_eq!(callback.field("Direction"), Some("from_sim"));
        assert_eq!(
            callback.field("CommandSid"),
            Some("HC3a954faf5a5573c0240be1e2701fef9e")
        );
        assert_eq!(callback.fields.len(), 10);
    }

    #[test]
    fn without_a_token_the_payload_hash_keys_the_callback() {
        let h = headers(&[("User-Agent", "KoreProxy/1.1")]);
        let first = parse_callback(CallbackKind::Sims, SIM_STATUS.as_bytes(), &h).unwrap();
        let again = parse_callback(CallbackKind::Sims, SIM_STATUS.as_bytes(), &h).unwrap();
        assert_eq!(first.provider, Provider::Kore);
        assert_eq!(first.token_source, TokenSource::PayloadHash);
        assert!(first.idempotency_token.starts_with("sha256:"));
        assert_eq!(first.idempotency_token, again.idempotency_token);
        let other_kind =
            parse_callback(CallbackKind::EsimProfiles, SIM_STATUS.as_bytes(), &h).unwrap();
        assert_ne!(first.idempotency_token, other_kind.idempotency_token);
    }

    #[test]
    fn provider_from_signature_header_when_no_token() {
        let callback = parse_callback(
            CallbackKind::Sims,
            b"SimSid=HS1",
            &headers(&[("X-Twilio-Signature", "abc=")]),
        )
        .unwrap();
        assert_eq!(callback.provider, Provider::Twilio);
    }

    #[test]
    fn repeated_names_and_plus_signs_are_kept() {
        let callback = parse_callback(
            CallbackKind::IpCommands,
            b"a=1&a=2&Payload=hello+world%21",
            &headers(&[("kore-idempotency-token", "RQ1")]),
        )
        .unwrap();
        assert_eq!(
            callback.fields,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("a".to_owned(), "2".to_owned()),
                ("Payload".to_owned(), "hello world!".to_owned())
            ]
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let kore = headers(&[("kore-idempotency-token", "RQ1")]);
        assert_eq!(
            parse_callback(CallbackKind::Sims, b"", &kore),
            Err(CallbackError::Empty)
        );
        assert_eq!(
            parse_callback(CallbackKind::Sims, b"a=\xff", &kore),
            Err(CallbackError::NotUtf8 { valid_up_to: 2 })
        );
        assert_eq!(
            parse_callback(CallbackKind::Sims, b"=x", &kore),
            Err(CallbackError::InvalidField {
                field: "=x".into(),
                reason: "a field has no name"
            })
        );
        assert_eq!(
            parse_callback(CallbackKind::Sims, b"SimSid=HS1", &HeaderMap::new()),
            Err(CallbackError::UnknownProvider)
        );
        assert_eq!(
            parse_callback(
                CallbackKind::Sims,
                b"SimSid=HS1",
                &headers(&[("kore-idempotency-token", " ")])
            ),
            Err(CallbackError::InvalidHeader {
                header: KORE_IDEMPOTENCY_HEADER,
                reason: "must be 1 to 256 characters"
            })
        );
    }

    #[test]
    fn the_send_time_is_the_date_header_in_either_form_else_the_arrival() {
        let arrival = DateTime::parse_from_rfc3339("2024-07-03T15:00:00Z")
            .unwrap()
            .to_utc();
        let sent = |date: Option<&'static str>| {
            let mut pairs = vec![("kore-idempotency-token", "RQ1")];
            pairs.extend(date.map(|d| ("Date", d)));
            parse_callback(CallbackKind::Sims, b"SimSid=HS1", &headers(&pairs))
                .unwrap()
                .sent_at(arrival)
        };
        let kore_form = DateTime::parse_from_rfc3339("2024-07-03T14:40:58Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            sent(Some("2024-07-03T14:40:58Z")),
            (kore_form, SentAtSource::DateHeader)
        );
        assert_eq!(
            sent(Some("Wed, 03 Jul 2024 14:40:58 GMT")),
            (kore_form, SentAtSource::DateHeader)
        );
        assert_eq!(sent(None), (arrival, SentAtSource::ArrivalNoDate));
        assert_eq!(
            sent(Some("yesterday")),
            (arrival, SentAtSource::ArrivalUnparseableDate)
        );
        // A clock a little ahead is believed; a Date hours ahead would pin the status.
        assert_eq!(
            sent(Some("2024-07-03T15:04:00Z")).1,
            SentAtSource::DateHeader
        );
        assert_eq!(
            sent(Some("2024-07-03T18:00:00Z")),
            (arrival, SentAtSource::ArrivalDateAhead)
        );
        for source in SentAtSource::ALL {
            assert_eq!(SentAtSource::parse(source.as_str()), Some(source));
        }
    }

    #[test]
    fn kinds_round_trip_through_their_path_segment() {
        for kind in CallbackKind::ALL {
            assert_eq!(CallbackKind::from_path_segment(kind.as_str()), Some(kind));
        }
        assert_eq!(CallbackKind::from_path_segment("calls"), None);
    }
}
