//! Segment's batch endpoint over HTTPS: one request, and what its answer means. The
//! forwarder sends through the [`Sink`] trait, so its handler is tested in process against a
//! fake; [`Segment`] is the one that runs.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::config::{ConfigError, ForwarderConfig};

/// One request is given at most this long (less when the invocation's deadline is closer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What Segment's answer means for the calls in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: every call is in (Segment de-duplicates on `messageId`).
    Accepted,
    /// 400 or 413: a call is too large or the JSON malformed; sending it again unchanged
    /// cannot help.
    Refused { status: u16, detail: String },
    /// Anything else (5xx, 429, a timeout, no connection; also 401, 403 or 404, which a
    /// wrong key or endpoint gives and an operator can fix): send again later.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// The meaning of an HTTP status from the batch endpoint.
pub fn classify(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Accepted,
        400 | 413 => Answer::Refused {
            status,
            detail: String::new(),
        },
        _ => Answer::Retry {
            reason: format!("Segment answered {status}"),
            retry_after: None,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Segment).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Where batch bodies go: Segment, or a fake in the handler's tests.
pub trait Sink: Send + Sync {
    /// Sends one batch body within `timeout`; never errs, the answer says what to do.
    fn post(&self, body: String, timeout: Duration) -> impl Future<Output = Answer> + Send;
}

/// A client of Segment's `POST /v1/batch`, built once per container.
#[derive(Clone)]
pub struct Segment {
    http: reqwest::Client,
    url: String,
    authorization: String,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("url", &self.url).finish()
    }
}

impl Segment {
    pub fn new(config: &ForwarderConfig) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                "kore-ingest-segment-forwarder/",
                env!("CARGO_PKG_VERSION")
            ))
            // A redirect would carry the write key elsewhere; it is an answer to retry instead.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Segment {
            http,
            url: format!("{}/v1/batch", config.endpoint),
            // HTTP basic auth: the write key as the user name, no password.
            authorization: format!("Basic {}", BASE64.encode(format!("{}:", config.write_key))),
        })
    }
}

impl Sink for Segment {
    async fn post(&self, body: String, timeout: Duration) -> Answer {
        let sent = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return Answer::Retry {
                    reason: format!("request failed: {}", without_url(&error)),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        match classify(status) {
            Answer::Accepted => Answer::Accepted,
            Answer::Refused { status, .. } => Answer::Refused {
                status,
                detail: short(&response.text().await.unwrap_or_default()),
            },
            Answer::Retry { reason, .. } => Answer::Retry {
                reason,
                retry_after: after,
            },
        }
    }
}

/// reqwest's error without the URL (it holds nothing secret, but keeps log lines short).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    short(&text)
}

fn short(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200), Answer::Accepted);
        assert!(matches!(classify(400), Answer::Refused { status: 400, .. }));
        assert!(matches!(classify(413), Answer::Refused { .. }));
        for status in [429, 500, 502, 503, 504, 401, 403, 404, 301] {
            assert!(matches!(classify(status), Answer::Retry { .. }), "{status}");
        }
    }

    #[test]
    fn long_texts_are_cut() {
        assert_eq!(short(&"é".repeat(400)).chars().count(), 303);
        assert_eq!(short(" ok "), "ok");
    }
}
