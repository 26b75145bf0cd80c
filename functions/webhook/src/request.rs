//! What a request is: its route, its decoded parts, and what its content type allows.

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use http::HeaderMap;
use kore_ingest_core::callback::CallbackKind;
use kore_ingest_core::delivery::{Delivery, Origin};
use kore_ingest_core::event::{ParsedItem, Provider};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Events,
    Callbacks(CallbackKind),
    Health,
}

impl Route {
    /// Routes on the path (a trailing `/` is ignored).
    pub fn of(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/events" => Some(Route::Events),
            "/health" => Some(Route::Health),
            other => other
                .strip_prefix("/callbacks/")
                .and_then(CallbackKind::from_path_segment)
                .map(Route::Callbacks),
        }
    }

    pub fn allowed_methods(self) -> &'static [&'static str] {
        match self {
            Route::Events => &["POST"],
            Route::Callbacks(_) => &["POST", "GET"],
            Route::Health => &["GET"],
        }
    }

    /// The path as the sender sees it, appended to `WEBHOOK_PUBLIC_URL` for signing.
    pub fn public_path(self) -> String {
        match self {
            Route::Events => "/events".into(),
            Route::Health => "/health".into(),
            Route::Callbacks(kind) => format!("/callbacks/{kind}"),
        }
    }
}

/// What the request is, decoded once.
pub struct Incoming<'a> {
    pub method: String,
    pub route: Route,
    pub body: Vec<u8>,
    pub request: &'a LambdaFunctionUrlRequest,
}

impl<'a> Incoming<'a> {
    pub fn headers(&self) -> &'a HeaderMap {
        &self.request.headers
    }

    /// The raw query string, as the sender signed it.
    pub fn query(&self) -> &'a str {
        self.request.raw_query_string.as_deref().unwrap_or_default()
    }

    /// A callback's payload: the query of a GET, else the body.
    pub fn callback_payload(&self) -> &[u8] {
        match self.method.as_str() {
            "GET" => self.query().as_bytes(),
            _ => &self.body,
        }
    }
}

/// Why a body is refused before it is looked at.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    TooLarge,
    UnsupportedType,
}

/// A delivery through the webhook, by the provider that signed it (if known).
pub fn webhook_delivery(request_id: &str, provider: Option<Provider>) -> Delivery {
    Delivery {
        provider_hint: provider,
        ..Delivery::now(Origin::Webhook {
            request_id: request_id.to_owned(),
        })
    }
}

/// The raw text of a batch element, as received.
pub fn raw_of(item: &ParsedItem) -> &str {
    match item {
        Ok(event) => &event.raw,
        Err(rejected) => &rejected.raw,
    }
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

pub fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers) == "application/x-www-form-urlencoded"
}

/// True (answered 415) when a body arrives in a type the route does not take. A missing type
/// is accepted (the body is parsed as the route expects).
pub fn unsupported_media_type(incoming: &Incoming<'_>) -> bool {
    let kind = content_type(incoming.headers());
    let accepted = match incoming.route {
        _ if kind.is_empty() => true,
        Route::Events => matches!(
            kind.as_str(),
            "application/json"
                | "application/cloudevents+json"
                | "application/cloudevents-batch+json"
        ),
        Route::Callbacks(_) => {
            incoming.method == "GET" || kind == "application/x-www-form-urlencoded"
        }
        Route::Health => true,
    };
    !accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/events"), Some(Route::Events));
        assert_eq!(Route::of("/events/"), Some(Route::Events));
        assert_eq!(Route::of("/health"), Some(Route::Health));
        assert_eq!(
            Route::of("/callbacks/esim-profiles"),
            Some(Route::Callbacks(CallbackKind::EsimProfiles))
        );
        assert_eq!(Route::of("/callbacks/calls"), None);
        assert_eq!(Route::of("/"), None);
        assert_eq!(Route::of("/eventsx"), None);
        assert_eq!(Route::of("/lambda-url/webhook/events"), None);
    }
}
