//! The forwarder's configuration: the environment (read through `kore_ingest_core::config`,
//! with the defaults and ranges there), and the write key read once per container from
//! Secrets Manager (`SEGMENT_WRITE_KEY_SECRET_ARN`).

use std::time::Duration;

use kore_ingest_aws::secrets::read_secret;
use kore_ingest_core::config::{Env, comma_list, vars};
use kore_ingest_core::event::{ConnectionKind, EventKind, KindName};
use kore_ingest_core::secrets::parse_write_key;

use crate::calls::OmittedProperties;

/// Segment's US endpoint; the EU one is `https://events.eu1.segmentapis.com`.
pub const DEFAULT_ENDPOINT: &str = "https://api.segment.io";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Env(#[from] kore_ingest_core::config::ConfigError),
    #[error(
        "no Segment write key: set SEGMENT_WRITE_KEY_SECRET_ARN (deployed) or SEGMENT_WRITE_KEY"
    )]
    NoWriteKey,
    #[error("cannot read SEGMENT_WRITE_KEY_SECRET_ARN: {0}")]
    Secret(String),
    #[error("cannot build the HTTPS client: {0}")]
    Http(String),
}

/// A variable with a value the forwarder cannot use, worded like every other variable's.
fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env(kore_ingest_core::config::ConfigError::Invalid {
        var,
        reason: reason.into(),
    })
}

/// Which event kinds are forwarded (`SEGMENT_EVENT_KINDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSet(Vec<KindName>);

impl Default for KindSet {
    /// Every Connection Event, no test events, no unknown types.
    fn default() -> Self {
        KindSet(ConnectionKind::ALL.map(KindName::Connection).to_vec())
    }
}

impl KindSet {
    /// A comma-separated list of kind names: the seven Connection Event suffixes
    /// (`attachment.accepted`, ..., `data-session.failed`), `connection` for all seven,
    /// `test` for test events, `other` for types the parser does not know, `all` for
    /// everything. Empty: the default (`connection`).
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let names = comma_list(list);
        if names.is_empty() {
            return Ok(KindSet::default());
        }
        let mut set = Vec::new();
        for name in &names {
            let kinds = match name.as_str() {
                "all" => [KindName::Test, KindName::Other]
                    .into_iter()
                    .chain(KindSet::default().0)
                    .collect(),
                "connection" => KindSet::default().0,
                name => vec![KindName::parse(name).ok_or_else(|| {
                    invalid(
                        "SEGMENT_EVENT_KINDS",
                        format!(
                            "unknown kind `{name}` (use connection, all, test, other or a Connection Event suffix such as data-session.updated)"
                        ),
                    )
                })?],
            };
            for kind in kinds {
                if !set.contains(&kind) {
                    set.push(kind);
                }
            }
        }
        Ok(KindSet(set))
    }

    pub fn includes(&self, kind: &EventKind) -> bool {
        self.0.contains(&KindName::of(kind))
    }
}

/// The forwarder's settings. The write key is never printed.
#[derive(Clone)]
pub struct ForwarderConfig {
    /// Scheme and host of Segment's API (`SEGMENT_ENDPOINT`); `/v1/batch` is appended.
    pub endpoint: String,
    pub write_key: String,
    pub kinds: KindSet,
    /// `data` fields left out of every call (`SEGMENT_OMIT_PROPERTIES`).
    pub omit: OmittedProperties,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub deadline_margin: Duration,
}

impl std::fmt::Debug for ForwarderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderConfig")
            .field("endpoint", &self.endpoint)
            .field("write_key", &"<redacted>")
            .field("kinds", &self.kinds)
            .field("omit", &self.omit)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .field("deadline_margin", &self.deadline_margin)
            .finish()
    }
}

/// Segment's endpoint: HTTPS, or plain HTTP to this machine only (the local stand-in), so
/// that the write key never crosses a network in clear text.
pub fn check_endpoint(endpoint: &str) -> Result<String, ConfigError> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| invalid("SEGMENT_ENDPOINT", "not a URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    if host_name.is_empty() || rest.len() != host.len() {
        return Err(invalid(
            "SEGMENT_ENDPOINT",
            "must be a scheme and host only, e.g. https://api.segment.io",
        ));
    }
    let loopback = matches!(host_name, "localhost" | "127.0.0.1" | "::1");
    match scheme {
        "https" => Ok(endpoint.to_owned()),
        "http" if loopback => Ok(endpoint.to_owned()),
        _ => Err(invalid(
            "SEGMENT_ENDPOINT",
            "must be https (plain http only to localhost)",
        )),
    }
}

impl ForwarderConfig {
    /// Everything but a write key from Secrets Manager: `SEGMENT_WRITE_KEY` must then be set.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::build(env, None)
    }

    fn build(env: &Env, secret_key: Option<String>) -> Result<Self, ConfigError> {
        let endpoint = check_endpoint(
            &env.text("SEGMENT_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        )?;
        let write_key = match secret_key {
            Some(key) => key,
            None => match env.text("SEGMENT_WRITE_KEY") {
                Some(key) => parse_write_key(&key).map_err(|_| {
                    invalid("SEGMENT_WRITE_KEY", "must be one key without whitespace")
                })?,
                None => return Err(ConfigError::NoWriteKey),
            },
        };
        Ok(ForwarderConfig {
            endpoint,
            write_key,
            kinds: KindSet::parse(&env.text("SEGMENT_EVENT_KINDS").unwrap_or_default())?,
            omit: OmittedProperties::parse(
                &env.text("SEGMENT_OMIT_PROPERTIES").unwrap_or_default(),
            )
            .map_err(|reason| invalid("SEGMENT_OMIT_PROPERTIES", reason))?,
            max_attempts: env.number(&vars::SEGMENT_MAX_ATTEMPTS)? as u32,
            retry_base: env.millis(&vars::SEGMENT_RETRY_BASE_MS)?,
            deadline_margin: env.millis(&vars::DEADLINE_MARGIN_MS)?,
        })
    }

    /// Deployed: the environment, with the write key read once from Secrets Manager when
    /// `SEGMENT_WRITE_KEY_SECRET_ARN` is set.
    pub async fn load(aws: &aws_config::SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        const SECRET_ARN: &str = "SEGMENT_WRITE_KEY_SECRET_ARN";
        let secret_key = match env.text(SECRET_ARN) {
            Some(arn) => {
                let client = aws_sdk_secretsmanager::Client::new(aws);
                let text = read_secret(&client, SECRET_ARN, &arn)
                    .await
                    .map_err(|e| ConfigError::Secret(e.reason))?;
                Some(parse_write_key(&text).map_err(|e| ConfigError::Secret(e.to_string()))?)
            }
            None => None,
        };
        Self::build(env, secret_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<ForwarderConfig, ConfigError> {
        ForwarderConfig::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults() {
        let config = from(&[("SEGMENT_WRITE_KEY", "wk")]).unwrap();
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(config.kinds, KindSet::default());
        assert_eq!(
            u64::from(config.max_attempts),
            vars::SEGMENT_MAX_ATTEMPTS.default
        );
        assert_eq!(
            config.retry_base,
            Duration::from_millis(vars::SEGMENT_RETRY_BASE_MS.default)
        );
        assert_eq!(
            config.deadline_margin,
            Duration::from_millis(vars::DEADLINE_MARGIN_MS.default)
        );
        assert!(!format!("{config:?}").contains("wk\""), "{config:?}");
        assert_eq!(from(&[]).unwrap_err(), ConfigError::NoWriteKey);
    }

    #[test]
    fn the_default_kinds_are_every_connection_event_and_no_test_event() {
        let kinds = KindSet::default();
        for kind in ConnectionKind::ALL {
            assert!(kinds.includes(&EventKind::Connection(kind)));
        }
        assert!(!kinds.includes(&EventKind::Test));
        assert!(!kinds.includes(&EventKind::Other("com.example.x".into())));
        assert_eq!(KindSet::parse(" , ").unwrap(), kinds);
        assert_eq!(KindSet::parse("connection").unwrap(), kinds);
    }

    #[test]
    fn kinds_can_be_chosen() {
        let kinds = KindSet::parse("data-session.updated, data-session.ended,test").unwrap();
        assert!(kinds.includes(&EventKind::Connection(ConnectionKind::DataSessionEnded)));
        assert!(!kinds.includes(&EventKind::Connection(ConnectionKind::AttachmentAccepted)));
        assert!(kinds.includes(&EventKind::Test));
        let all = KindSet::parse("all").unwrap();
        assert!(all.includes(&EventKind::Other("x".into())) && all.includes(&EventKind::Test));
        let error = KindSet::parse("data-session.paused").unwrap_err();
        assert!(error.to_string().contains("data-session.paused"), "{error}");
    }

    #[test]
    fn the_endpoint_is_https_or_local() {
        assert_eq!(
            check_endpoint("https://events.eu1.segmentapis.com/").unwrap(),
            "https://events.eu1.segmentapis.com"
        );
        assert!(check_endpoint("http://127.0.0.1:8999").is_ok());
        assert!(check_endpoint("http://localhost:1").is_ok());
        assert!(check_endpoint("http://[::1]:80").is_ok());
        for bad in [
            "http://api.segment.io",
            "https://api.segment.io/v1/batch",
            "api.segment.io",
            "https://",
            "ftp://127.0.0.1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_checked() {
        let base = [("SEGMENT_WRITE_KEY", "wk")];
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            from(&pairs)
        };
        assert_eq!(with(("SEGMENT_MAX_ATTEMPTS", "3")).unwrap().max_attempts, 3);
        assert!(with(("SEGMENT_MAX_ATTEMPTS", "0")).is_err());
        assert!(with(("SEGMENT_RETRY_BASE_MS", "soon")).is_err());
        assert_eq!(
            with(("DEADLINE_MARGIN_MS", "0")).unwrap().deadline_margin,
            Duration::ZERO
        );
    }
}
