//! The webhook's configuration: secrets, the public URL that senders sign, limits.

use std::time::Duration;

use serde::Deserialize;

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
        })
    }

    /// Deployed: the environment, with the secrets read once from Secrets Manager when
    /// `WEBHOOK_SECRETS_ARN` is set (a JSON document with `KORE_WEBHOOK_SECRETS` and
    /// `TWILIO_AUTH_TOKENS`, each comma-separated).
    pub async fn load(aws: &aws_config::SdkConfig) -> Result<Self, String> {
        let mut config = Self::from_vars(|name| std::env::var(name).ok())?;
        if let Ok(arn) = std::env::var("WEBHOOK_SECRETS_ARN") {
            let client = aws_sdk_secretsmanager::Client::new(aws);
            let secret = client
                .get_secret_value()
                .secret_id(&arn)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "cannot read WEBHOOK_SECRETS_ARN: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?;
            let document: SecretDocument =
                serde_json::from_str(secret.secret_string().unwrap_or_default()).map_err(|e| {
                    format!("the WEBHOOK_SECRETS_ARN secret is not the expected JSON: {e}")
                })?;
            config.kore_secrets = list(&document.kore);
            config.twilio_tokens = list(&document.twilio);
        }
        Ok(config)
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
    fn debug_never_shows_secrets() {
        let config = from(&[("KORE_WEBHOOK_SECRETS", "s3cr3t")]).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
