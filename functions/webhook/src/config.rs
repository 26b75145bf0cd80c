//! The webhook's configuration: the signing secrets, the public URL that senders sign,
//! limits, and where a body goes when storage fails. Every variable is read through
//! `kore_ingest_core::config` (defaults and ranges there); the secret document's form is
//! `kore_ingest_core::secrets`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kore_ingest_aws::secrets::read_secret;
use kore_ingest_core::config::{ConfigError, Env, vars};
use kore_ingest_core::secrets::{SigningSecrets, parse_signing_secrets};
use tokio::time::Instant;
use tracing::{info, warn};

/// Everything the webhook needs besides the ledger. Built once per cold start.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The accepted secrets when they come from the environment (`KORE_WEBHOOK_SECRETS`,
    /// `TWILIO_AUTH_TOKENS`, comma-separated): the active one and, during a rotation, the
    /// pending one. Deployed, [`Self::secrets_source`] has them instead.
    pub secrets: Arc<SigningSecrets>,
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
    /// Larger bodies get 413 (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Everything must be stored within this time or the sender is told to retry (503):
    /// senders give up after 5 s (`TIME_BUDGET_MS`).
    pub time_budget: Duration,
    /// Deployed (`WEBHOOK_SECRETS_ARN`): where the secrets came from, read again when a
    /// signature fails and the copy is old enough, so that a rotation needs no redeploy. Its
    /// current copy replaces [`Self::secrets`].
    pub secrets_source: Option<SecretsSource>,
    /// The Kinesis stream (a name or an ARN) that a body goes to when storage fails or runs
    /// out of time, answered 200 (`SPILL_STREAM`; unset: 503).
    pub spill_stream: Option<String>,
    /// The client for `spill_stream`: made by [`WebhookConfig::load`]; spilling needs both.
    pub kinesis: Option<aws_sdk_kinesis::Client>,
}

impl std::fmt::Debug for WebhookConfig {
    // Secrets never reach a log (`SigningSecrets` prints counts only).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secrets", &self.secrets)
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

/// The variable naming the signing secrets' ARN.
const SECRETS_ARN: &str = "WEBHOOK_SECRETS_ARN";

/// The Secrets Manager secret of the signing secrets, with its current copy. A failed
/// signature reads it again when the copy is older than `min_age`, at most once per
/// `min_age` whatever the traffic: rejected requests cannot make it hammer Secrets Manager.
/// A copy older than `max_age` is read again before it is used, so that a secret removed
/// from Secrets Manager stops being accepted within `max_age` while Secrets Manager answers
/// (a failed read keeps the old copy; the next read is a `max_age` later, or a `min_age`
/// later after a failed signature, so an outage is not hammered).
#[derive(Clone)]
pub struct SecretsSource {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    min_age: Duration,
    max_age: Duration,
    current: Arc<RwLock<Arc<SigningSecrets>>>,
    /// When it was last read (or tried); held while reading, so reads never overlap.
    last_read: Arc<tokio::sync::Mutex<Instant>>,
}

impl std::fmt::Debug for SecretsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsSource")
            .field("arn", &self.arn)
            .field("min_age", &self.min_age)
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// The secrets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Read(#[from] kore_ingest_aws::secrets::SecretReadError),
    #[error("{SECRETS_ARN}: {0}")]
    Document(#[from] kore_ingest_core::secrets::SecretError),
}

impl SecretsSource {
    async fn read(
        client: &aws_sdk_secretsmanager::Client,
        arn: &str,
    ) -> Result<SigningSecrets, LoadError> {
        let text = read_secret(client, SECRETS_ARN, arn).await?;
        Ok(parse_signing_secrets(&text)?)
    }

    /// The copy in use.
    pub fn current(&self) -> Arc<SigningSecrets> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The copy to check a request with: read again first when older than `max_age`.
    pub async fn fresh(&self) -> Arc<SigningSecrets> {
        let mut last_read = self.last_read.lock().await;
        if last_read.elapsed() >= self.max_age {
            self.read_again(&mut last_read).await;
        }
        self.current()
    }

    /// After a signature failed with `used`: newer secrets to try, if another request has
    /// read them meanwhile or if the copy is old enough to read again (and they differ).
    pub async fn newer_than(&self, used: &Arc<SigningSecrets>) -> Option<Arc<SigningSecrets>> {
        let mut last_read = self.last_read.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&current, used) {
            return Some(current);
        }
        if last_read.elapsed() < self.min_age {
            return None;
        }
        self.read_again(&mut last_read).await
    }

    /// Reads the secret, holding `last_read`; the new copy when it changed. A failed read
    /// keeps the old copy.
    async fn read_again(&self, last_read: &mut Instant) -> Option<Arc<SigningSecrets>> {
        *last_read = Instant::now();
        match Self::read(&self.client, &self.arn).await {
            Ok(secrets) if secrets == *self.current() => None,
            Ok(secrets) => {
                info!("signing secrets changed in Secrets Manager; using the new ones");
                let secrets = Arc::new(secrets);
                match self.current.write() {
                    Ok(mut slot) => *slot = secrets.clone(),
                    Err(poisoned) => *poisoned.into_inner() = secrets.clone(),
                }
                Some(secrets)
            }
            Err(error) => {
                warn!(%error, "could not read the signing secrets again; the old copy stays in use");
                None
            }
        }
    }
}

impl WebhookConfig {
    /// From environment variables alone (see `docs/REFERENCE.md`).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(WebhookConfig {
            secrets: Arc::new(SigningSecrets {
                kore: env.list("KORE_WEBHOOK_SECRETS"),
                twilio: env.list("TWILIO_AUTH_TOKENS"),
            }),
            public_url: env
                .text("WEBHOOK_PUBLIC_URL")
                .map(|url| url.trim_end_matches('/').to_owned())
                .filter(|url| !url.is_empty()),
            allow_unsigned: env.flag("ALLOW_UNSIGNED")?,
            allow_kore_get_callbacks: env.flag("ALLOW_KORE_GET_CALLBACKS")?,
            max_body_bytes: env.size(&vars::MAX_BODY_BYTES)?,
            time_budget: env.millis(&vars::TIME_BUDGET_MS)?,
            secrets_source: None,
            spill_stream: env.text("SPILL_STREAM"),
            kinesis: None,
        })
    }

    /// Deployed: the environment, with the secrets read once from Secrets Manager when
    /// `WEBHOOK_SECRETS_ARN` is set.
    pub async fn load(aws: &aws_config::SdkConfig, env: &Env) -> Result<Self, LoadError> {
        let mut config = Self::from_env(env)?;
        if config.spill_stream.is_some() {
            config.kinesis = Some(aws_sdk_kinesis::Client::new(aws));
        }
        if let Some(arn) = env.text(SECRETS_ARN) {
            let client = aws_sdk_secretsmanager::Client::new(aws);
            let secrets = SecretsSource::read(&client, &arn).await?;
            config.secrets_source = Some(SecretsSource {
                client,
                arn,
                min_age: env.millis(&vars::SECRETS_REFRESH_MIN_MS)?,
                max_age: env.millis(&vars::SECRETS_MAX_AGE_MS)?,
                current: Arc::new(RwLock::new(Arc::new(secrets))),
                last_read: Arc::new(tokio::sync::Mutex::new(Instant::now())),
            });
        }
        Ok(config)
    }

    /// The secrets to verify with now (read again first when the copy is too old).
    pub async fn current_secrets(&self) -> Arc<SigningSecrets> {
        match &self.secrets_source {
            Some(source) => source.fresh().await,
            None => Arc::clone(&self.secrets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_defaults_and_errors() {
        let config = WebhookConfig::from_env(&Env::from_pairs(&[
            ("KORE_WEBHOOK_SECRETS", " active , pending ,"),
            ("WEBHOOK_PUBLIC_URL", "https://hooks.example.com/"),
        ]))
        .unwrap();
        assert_eq!(config.secrets.kore, ["active", "pending"]);
        assert!(config.secrets.twilio.is_empty());
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://hooks.example.com")
        );
        assert!(!config.allow_unsigned);
        assert_eq!(config.max_body_bytes as u64, vars::MAX_BODY_BYTES.default);
        assert_eq!(
            config.time_budget,
            Duration::from_millis(vars::TIME_BUDGET_MS.default)
        );
        let from = |pairs: &[(&str, &str)]| WebhookConfig::from_env(&Env::from_pairs(pairs));
        assert!(from(&[("ALLOW_UNSIGNED", "true")]).unwrap().allow_unsigned);
        assert_eq!(
            from(&[("ALLOW_UNSIGNED", "yes")]).unwrap_err().to_string(),
            "ALLOW_UNSIGNED is invalid: `yes` is not true or false"
        );
        assert!(from(&[("MAX_BODY_BYTES", "lots")]).is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let config =
            WebhookConfig::from_env(&Env::from_pairs(&[("KORE_WEBHOOK_SECRETS", "s3cr3t")]))
                .unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
