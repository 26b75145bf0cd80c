//! Which provider signed a request, checked over the exact raw body before anything is
//! parsed. When a signature does not match, the secrets may have been rotated: they are read
//! again (rate-limited, see [`crate::config::SecretsSource`]) and, if they changed, the
//! request is checked once more.

use kore_ingest_core::callback::parse_form;
use kore_ingest_core::event::Provider;
use kore_ingest_core::secrets::SigningSecrets;
use kore_ingest_core::signature::{
    KORE_SIGNATURE_HEADER, SignatureError, TWILIO_SIGNATURE_HEADER, Verified,
    verify_kore_signature, verify_twilio_signature,
};

use crate::config::WebhookConfig;
use crate::request::{Incoming, is_form};

/// Why a request was not authenticated (logged, never answered: a 401 says nothing more).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(
        "a KORE-signed GET callback: KORE does not sign the query, which is its payload (ALLOW_KORE_GET_CALLBACKS is off)"
    )]
    KoreGetCallback,
    #[error(
        "an empty kore-signature: unsigned requests are accepted only with ALLOW_UNSIGNED and no KORE secret configured"
    )]
    Unsigned,
}

/// The provider that signed the request (`None`: unsigned and allowed), or why it is
/// refused.
pub async fn authenticate(
    config: &WebhookConfig,
    incoming: &Incoming<'_>,
) -> Result<Option<Provider>, Refused> {
    let secrets = config.current_secrets().await;
    let result = verify(config, incoming, &secrets);
    let rotated = matches!(
        result,
        Err(Refused::Signature(
            SignatureError::Mismatch { .. } | SignatureError::NoSecrets { .. }
        ))
    );
    if let (true, Some(source)) = (rotated, &config.secrets_source)
        && let Some(newer) = source.newer_than(&secrets).await
    {
        return verify(config, incoming, &newer);
    }
    result
}

/// The URL the sender signed: `WEBHOOK_PUBLIC_URL` (or the Function URL's own domain) plus
/// the route's path and, for Twilio, the raw query string.
fn signed_url(config: &WebhookConfig, incoming: &Incoming<'_>) -> String {
    let request = incoming.request;
    let base = match &config.public_url {
        Some(base) => format!("{base}{}", incoming.route.public_path()),
        None => format!(
            "https://{}{}",
            request
                .request_context
                .domain_name
                .as_deref()
                .unwrap_or_default(),
            request.raw_path.as_deref().unwrap_or_default()
        ),
    };
    if incoming.query().is_empty() {
        base
    } else {
        format!("{base}?{}", incoming.query())
    }
}

/// [`authenticate`] with one set of secrets. A request with both signature headers must
/// satisfy the one it claims first (KORE's).
fn verify(
    config: &WebhookConfig,
    incoming: &Incoming<'_>,
    secrets: &SigningSecrets,
) -> Result<Option<Provider>, Refused> {
    let url = signed_url(config, incoming);
    let header = |name: &str| {
        incoming
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
    };
    if let Some(signature) = header(KORE_SIGNATURE_HEADER) {
        // KORE signs the URL without its query, and a GET callback's payload is the query:
        // the signature would cover none of it.
        if incoming.method == "GET" && !config.allow_kore_get_callbacks {
            return Err(Refused::KoreGetCallback);
        }
        let verified = verify_kore_signature(
            &secrets.kore,
            &incoming.method,
            &url,
            &incoming.body,
            Some(signature),
        )?;
        // An empty header is an account without a secret: acceptable only when allowed and
        // no KORE secret is configured (a configured secret is always required).
        if verified == Verified::Unsigned && !(config.allow_unsigned && secrets.kore.is_empty()) {
            return Err(Refused::Unsigned);
        }
        return Ok(Some(Provider::Kore));
    }
    if let Some(signature) = header(TWILIO_SIGNATURE_HEADER) {
        let params = if incoming.method == "POST" && is_form(incoming.headers()) {
            parse_form(&incoming.body).unwrap_or_default()
        } else {
            Vec::new()
        };
        verify_twilio_signature(
            &secrets.twilio,
            &url,
            &params,
            &incoming.body,
            Some(signature),
        )?;
        return Ok(Some(Provider::Twilio));
    }
    // No signature header at all: the provider is unknown, so this bypasses no secret only
    // when none is configured for either.
    if config.allow_unsigned && secrets.kore.is_empty() && secrets.twilio.is_empty() {
        Ok(None)
    } else {
        Err(SignatureError::Missing {
            header: "kore-signature or x-twilio-signature",
        }
        .into())
    }
}
