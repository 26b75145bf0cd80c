//! The webhook's configuration: secrets, the public URL that senders sign, limits.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tracing::{info, warn};

/// Everything the webhook needs besides the ledger. Built once per cold start.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// Accepted `Kore-Signature` secrets: the active one and, during a rotation, the pending
    /// one (`KORE_WEBHOOK_SECRETS`, comma-separated).
    pub kore_secrets: Vec<String>,
    /// Accepted Twilio Auth Tokens (`TWILIO_AUTH_TOKENS`, comma-separated).
    pub twilio_tokens: Vec<String>,
    /// The base URL configured at KORE or Twilio (`WEBHOOK_PUBLIC_URL`); the request path is
    /// appended to it for signing. `None`: derived from the Function URL request.
    pub public_url: Option<String>,
    /// Accept requests without a signature (`ALLOW_UNSIGNED`, default false), but only from
    /// a provider with no secret configured: a configured secret is always required.
    pub allow_unsigned: bool,
    /// Accept KORE-signed GET callbacks (`ALLOW_KORE_GET_CALLBACKS`, default false). KORE
    /// drops the query before signing and a GET callback's payload is its query, so such a
    /// signature covers none of the payload.
    pub allow_kore_get_callbacks: bool,
    /// Larger bodies get 413 (`MAX_BODY_BYTES`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Everything must be stored within this time or the sender is told to retry (503):
    /// senders give up after 5 s (`TIME_BUDGET_MS`, default 4000).
    pub time_budget: Duration,
    /// Deployed (`WEBHOOK_SECRETS_ARN`): where the secrets above came from, read again when
    /// a signature fails and the copy is old enough, so that a rotation needs no redeploy.
    /// Its current copy replaces the two lists above.
    pub secrets_source: Option<SecretsSource>,
    /// The Kinesis stream (a name or an ARN) that a body goes to when storage fails or runs
    /// out of time, answered 200 (`SPILL_STREAM`; unset or empty: 503 as before).
    pub spill_stream: Option<String>,
    /// The client for `spill_stream`: made by [`WebhookConfig::load`]; spilling needs both.
    pub kinesis: Option<aws_sdk_kinesis::Client>,
}

impl std::fmt::Debug for WebhookConfig {
    // Secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("kore_secrets", &self.kore_secrets.len())
            .field("twilio_tokens", &self.twilio_tokens.len())
            .field("public_url", &self.public_url)
            .field("allow_unsigned", &self.allow_unsigned)
            .field("allow_kore_get_callbacks", &self.allow_kore_get_callbacks)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("time_budget", &self.time_budget)
            .field("secrets_source", &self.secrets_source)
            .field("spill_stream", &self.spill_stream)
            .field("kinesis", &self.kinesis.is_some())
            .finish()
    }
}

/// The JSON document of the `WEBHOOK_SECRETS_ARN` secret.
#[derive(Deserialize)]
struct SecretDocument {
    #[serde(default, rename = "KORE_WEBHOOK_SECRETS")]
    kore: String,
    #[serde(default, rename = "TWILIO_AUTH_TOKENS")]
    twilio: String,
}

/// The accepted signing secrets at one moment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub kore: Vec<String>,
    pub twilio: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    // Secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("kore", &self.kore.len())
            .field("twilio", &self.twilio.len())
            .finish()
    }
}

/// The secrets document parsed. An error names the JSON problem's kind and place, never
/// the text: serde's messages quote the value they choke on, which here is a secret.
pub fn parse_secret_document(text: &str) -> Result<Secrets, String> {
    let document: SecretDocument = serde_json::from_str(text).map_err(|e| {
        format!(
            "the WEBHOOK_SECRETS_ARN secret is not the expected JSON document ({:?} error at line {}, column {}; expected an object with the string fields KORE_WEBHOOK_SECRETS and TWILIO_AUTH_TOKENS)",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    Ok(Secrets {
        kore: list(&document.kore),
        twilio: list(&document.twilio),
    })
}

/// Default least age of the cached secrets before a failed signature reads them again
/// (`SECRETS_REFRESH_MIN_MS`).
pub const DEFAULT_SECRETS_REFRESH_MIN: Duration = Duration::from_secs(60);

/// The Secrets Manager secret of the signing secrets, with its current copy. A failed
/// signature reads it again when the copy is older than `min_age`, at most once per
/// `min_age` whatever the traffic: rejected requests cannot make it hammer Secrets Manager.
#[derive(Clone)]
pub struct SecretsSource {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    min_age: Duration,
    current: Arc<RwLock<Arc<Secrets>>>,
    /// When it was last read (or tried); held while reading, so reads never overlap.
    last_read: Arc<tokio::sync::Mutex<Instant>>,
}

impl std::fmt::Debug for SecretsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsSource")
            .field("arn", &self.arn)
            .field("min_age", &self.min_age)
            .finish()
    }
}

impl SecretsSource {
    async fn read(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<Secrets, String> {
        let secret = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot read WEBHOOK_SECRETS_ARN: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        parse_secret_document(secret.secret_string().unwrap_or_default())
    }

    /// The copy in use.
    pub fn current(&self) -> Arc<Secrets> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a signature failed with `used`: newer secrets to try, if another request has
    /// read them meanwhile or if the copy is old enough to read again (and they differ).
    pub async fn newer_than(&self, used: &Arc<Secrets>) -> Option<Arc<Secrets>> {
        let mut last_read = self.last_read.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&current, used) {
            return Some(current);
        }
        if last_read.elapsed() < self.min_age {
            return None;
        }
        *last_read = Instant::now();
        match Self::read(&self.client, &self.arn).await {
            Ok(secrets) if secrets == *current => None,
            Ok(secrets) => {
                info!("signing secrets changed in Secrets Manager; using the new ones");
                let secrets = Arc::new(secrets);
                match self.current.write() {
                    Ok(mut slot) => *slot = secrets.clone(),
                    Err(poisoned) => *poisoned.into_inner() = secrets.clone(),
                }
                Some(secrets)
            }
            // The old copy stays in use; the next try is a min_age later.
            Err(error) => {
                warn!(%error, "could not read the signing secrets again");
                None
            }
        }
    }
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_millis(4000);

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_env<T: std::str::FromStr>(
    vars: &impl Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, String> {
    vars(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{name} must be {what}, not `{v}`"))
        })
        .transpose()
}

fn flag(vars: &impl Fn(&str) -> Option<String>, name: &str) -> Result<bool, String> {
    match vars(name).as_deref().map(str::trim) {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(format!("{name} must be true or false, not `{other}`")),
    }
}

impl WebhookConfig {
    /// From environment variables (see the README's configuration table).
    pub fn from_vars(vars: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let allow_unsigned = flag(&vars, "ALLOW_UNSIGNED")?;
        let allow_kore_get_callbacks = flag(&vars, "ALLOW_KORE_GET_CALLBACKS")?;
        Ok(WebhookConfig {
            kore_secrets: list(&vars("KORE_WEBHOOK_SECRETS").unwrap_or_default()),
            twilio_tokens: list(&vars("TWILIO_AUTH_TOKENS").unwrap_or_default()),
            public_url: vars("WEBHOOK_PUBLIC_URL")
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            allow_unsigned,
            allow_kore_get_callbacks,
            max_body_bytes: parse_env(&vars, "MAX_BODY_BYTES", "a number of bytes")?
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            time_budget: parse_env(&vars, "TIME_BUDGET_MS", "a number of milliseconds")?
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_TIME_BUDGET),
            secrets_source: None,
            spill_stream: vars("SPILL_STREAM")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            kinesis: None,
        })
    }

    /// Deployed: the environment, with the secrets read once from Secrets Manager when
    /// `WEBHOOK_SECRETS_ARN` is set (a JSON document with `KORE_WEBHOOK_SECRETS` and
    /// `TWILIO_AUTH_TOKENS`, each comma-separated).
    pub async fn load(aws: &aws_config::SdkConfig) -> Result<Self, String> {
        let vars = |name: &str| std::env::var(name).ok();
        let mut config = Self::from_vars(vars)?;
        if config.spill_stream.is_some() {
            config.kinesis = Some(aws_sdk_kinesis::Client::new(aws));
        }
        if let Some(arn) = vars("WEBHOOK_SECRETS_ARN").filter(|arn| !arn.trim().is_empty()) {
            let min_age = parse_env(&vars, "SECRETS_REFRESH_MIN_MS", "a number of milliseconds")?
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_SECRETS_REFRESH_MIN);
            let client = aws_sdk_secretsmanager::Client::new(aws);
            let secrets = SecretsSource::read(&client, &arn).await?;
            config.kore_secrets = secrets.kore.clone();
            config.twilio_tokens = secrets.twilio.clone();
            config.secrets_source = Some(SecretsSource {
                client,
                arn,
                min_age,
                current: Arc::new(RwLock::new(Arc::new(secrets))),
                last_read: Arc::new(tokio::sync::Mutex::new(Instant::now())),
            });
        }
        Ok(config)
    }

    /// The secrets to verify with now.
    pub fn secrets(&self) -> Arc<Secrets> {
        match &self.secrets_source {
            Some(source) => source.current(),
            None => Arc::new(Secrets {
                kore: self.kore_secrets.clone(),
                twilio: self.twilio_tokens.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<WebhookConfig, String> {
        WebhookConfig::from_vars(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn lists_defaults_and_errors() {
        let config = from(&[
            ("KORE_WEBHOOK_SECRETS", " active , pending ,"),
            ("WEBHOOK_PUBLIC_URL", "https://hooks.example.com/"),
        ])
        .unwrap();
        assert_eq!(config.kore_secrets, ["active", "pending"]);
        assert!(config.twilio_tokens.is_empty());
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://hooks.example.com")
        );
        assert!(!config.allow_unsigned);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.time_budget, DEFAULT_TIME_BUDGET);
        assert!(from(&[("ALLOW_UNSIGNED", "true")]).unwrap().allow_unsigned);
        assert_eq!(
            from(&[("ALLOW_UNSIGNED", "yes")]).unwrap_err(),
            "ALLOW_UNSIGNED must be true or false, not `yes`"
        );
        assert_eq!(
            from(&[("MAX_BODY_BYTES", "lots")]).unwrap_err(),
            "MAX_BODY_BYTES must be a number of bytes, not `lots`"
        );
    }

    #[test]
    fn an_invalid_secret_document_is_not_echoed() {
        for document in [
            r#""s3cr3t-plain-value""#,
            r#"{"KORE_WEBHOOK_SECRETS": ["s3cr3t-plain-value"]}"#,
            r#"{"KORE_WEBHOOK_SECRETS": "s3cr3t-plain-value", "#,
            "s3cr3t-plain-value",
        ] {
            let error = parse_secret_document(document).unwrap_err();
            assert!(!error.contains("s3cr3t"), "{error}");
        }
        let secrets = parse_secret_document(r#"{"KORE_WEBHOOK_SECRETS": "a,b"}"#).unwrap();
        assert_eq!(secrets.kore, ["a", "b"]);
        assert!(secrets.twilio.is_empty());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let config = from(&[("KORE_WEBHOOK_SECRETS", "s3cr3t")]).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
