//! The forwarder's configuration: the environment, and the write key read once per container
//! from Secrets Manager (`SEGMENT_WRITE_KEY_SECRET_ARN`).

use std::time::Duration;

use kore_ingest_shared::event::{ConnectionKind, EventKind};

/// Segment's US endpoint; the EU one is `https://events.eu1.segmentapis.com`.
pub const DEFAULT_ENDPOINT: &str = "https://api.segment.io";
/// Attempts of one request on 5xx, 429 or a network error before its records go back to
/// Lambda (`SEGMENT_MAX_ATTEMPTS`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The first back-off; it doubles with each attempt (`SEGMENT_RETRY_BASE_MS`).
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(500);
/// No new request starts this close to the invocation deadline (`DEADLINE_MARGIN_MS`).
pub const DEFAULT_DEADLINE_MARGIN: Duration = kore_ingest_shared::deadline::DEFAULT_MARGIN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error(
        "no Segment write key: set SEGMENT_WRITE_KEY_SECRET_ARN (deployed) or SEGMENT_WRITE_KEY"
    )]
    NoWriteKey,
    #[error("cannot read SEGMENT_WRITE_KEY_SECRET_ARN: {0}")]
    Secret(String),
    #[error("cannot build the HTTPS client: {0}")]
    Http(String),
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// Which event kinds are forwarded (`SEGMENT_EVENT_KINDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSet {
    connection: Vec<ConnectionKind>,
    test: bool,
    other: bool,
}

impl Default for KindSet {
    /// Every Connection Event, no test events, no unknown types.
    fn default() -> Self {
        KindSet {
            connection: ConnectionKind::ALL.to_vec(),
            test: false,
            other: false,
        }
    }
}

impl KindSet {
    /// A comma-separated list of kind names: the seven Connection Event suffixes
    /// (`attachment.accepted`, ..., `data-session.failed`), `connection` for all seven,
    /// `test` for test events, `other` for types the parser does not know, `all` for
    /// everything. Empty: the default (`connection`).
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(KindSet::default());
        }
        let mut set = KindSet {
            connection: Vec::new(),
            test: false,
            other: false,
        };
        for name in names {
            match name {
                "all" => {
                    set.connection = ConnectionKind::ALL.to_vec();
                    set.test = true;
                    set.other = true;
                }
                "connection" => set.connection = ConnectionKind::ALL.to_vec(),
                "test" => set.test = true,
                "other" => set.other = true,
                suffix => match ConnectionKind::from_suffix(suffix) {
                    Some(kind) if !set.connection.contains(&kind) => set.connection.push(kind),
                    Some(_) => {}
                    None => {
                        return Err(invalid(
                            "SEGMENT_EVENT_KINDS",
                            format!(
                                "unknown kind `{suffix}` (use connection, all, test, other or a Connection Event suffix such as data-session.updated)"
                            ),
                        ));
                    }
                },
            }
        }
        Ok(set)
    }

    pub fn includes(&self, kind: &EventKind) -> bool {
        match kind {
            EventKind::Connection(kind) => self.connection.contains(kind),
            EventKind::Test => self.test,
            EventKind::Other(_) => self.other,
        }
    }
}

/// The forwarder's settings. The write key is never printed.
#[derive(Clone)]
pub struct ForwarderConfig {
    /// Scheme and host of Segment's API (`SEGMENT_ENDPOINT`); `/v1/batch` is appended.
    pub endpoint: String,
    pub write_key: String,
    pub kinds: KindSet,
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
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .field("deadline_margin", &self.deadline_margin)
            .finish()
    }
}

fn number(
    vars: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    let Some(text) = vars(var).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| invalid(var, format!("`{text}` is not a whole number")))?;
    if !range.contains(&n) {
        return Err(invalid(
            var,
            format!("{n} is not within {} to {}", range.start(), range.end()),
        ));
    }
    Ok(Some(n))
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

/// The write key from the secret's text: the key itself, or a JSON object with the string
/// field `SEGMENT_WRITE_KEY`. Errors never quote the text.
pub fn parse_write_key(secret: &str) -> Result<String, ConfigError> {
    let text = secret.trim();
    let key = if text.starts_with('{') {
        let document: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            ConfigError::Secret(format!(
                "the secret is not the expected JSON ({:?} error at line {}, column {}; expected a plain write key or {{\"SEGMENT_WRITE_KEY\": \"...\"}})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        document["SEGMENT_WRITE_KEY"]
            .as_str()
            .ok_or_else(|| {
                ConfigError::Secret(
                    "the secret's JSON has no string field SEGMENT_WRITE_KEY".to_owned(),
                )
            })?
            .trim()
            .to_owned()
    } else {
        text.to_owned()
    };
    if key.is_empty() {
        return Err(ConfigError::Secret("the write key is empty".to_owned()));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Secret(
            "the write key contains whitespace or control characters".to_owned(),
        ));
    }
    Ok(key)
}

impl ForwarderConfig {
    /// Everything but a write key from Secrets Manager: `SEGMENT_WRITE_KEY` must then be set.
    pub fn from_vars(vars: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::build(&vars, None)
    }

    fn build(
        vars: &impl Fn(&str) -> Option<String>,
        secret_key: Option<String>,
    ) -> Result<Self, ConfigError> {
        let endpoint = check_endpoint(
            &vars("SEGMENT_ENDPOINT")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        )?;
        let write_key = match secret_key {
            Some(key) => key,
            None => match vars("SEGMENT_WRITE_KEY").filter(|v| !v.trim().is_empty()) {
                Some(key) => parse_write_key(&key).map_err(|_| {
                    invalid("SEGMENT_WRITE_KEY", "must be one key without whitespace")
                })?,
                None => return Err(ConfigError::NoWriteKey),
            },
        };
        Ok(ForwarderConfig {
            endpoint,
            write_key,
            kinds: KindSet::parse(&vars("SEGMENT_EVENT_KINDS").unwrap_or_default())?,
            max_attempts: number(vars, "SEGMENT_MAX_ATTEMPTS", 1..=20)?
                .map_or(DEFAULT_MAX_ATTEMPTS, |n| n as u32),
            retry_base: number(vars, "SEGMENT_RETRY_BASE_MS", 1..=60_000)?
                .map_or(DEFAULT_RETRY_BASE, Duration::from_millis),
            deadline_margin: number(vars, "DEADLINE_MARGIN_MS", 0..=600_000)?
                .map_or(DEFAULT_DEADLINE_MARGIN, Duration::from_millis),
        })
    }

    /// Deployed: the environment, with the write key read once from Secrets Manager when
    /// `SEGMENT_WRITE_KEY_SECRET_ARN` is set.
    pub async fn load(aws: &aws_config::SdkConfig) -> Result<Self, ConfigError> {
        Self::load_with(aws, |name| std::env::var(name).ok()).await
    }

    /// [`Self::load`] with the variables from `vars` (tests: the process environment is
    /// shared by the tests running at once).
    pub async fn load_with(
        aws: &aws_config::SdkConfig,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let secret_key = match vars("SEGMENT_WRITE_KEY_SECRET_ARN").filter(|a| !a.trim().is_empty())
        {
            Some(arn) => {
                let client = aws_sdk_secretsmanager::Client::new(aws);
                let secret = client
                    .get_secret_value()
                    .secret_id(arn.trim())
                    .send()
                    .await
                    .map_err(|e| {
                        ConfigError::Secret(
                            aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
                Some(parse_write_key(secret.secret_string().unwrap_or_default())?)
            }
            None => None,
        };
        Self::build(&vars, secret_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<ForwarderConfig, ConfigError> {
        ForwarderConfig::from_vars(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults() {
        let config = from(&[("SEGMENT_WRITE_KEY", "wk")]).unwrap();
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(config.kinds, KindSet::default());
        assert_eq!(config.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(config.retry_base, DEFAULT_RETRY_BASE);
        assert_eq!(config.deadline_margin, DEFAULT_DEADLINE_MARGIN);
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

    #[test]
    fn the_secret_is_a_key_or_a_json_document_and_never_echoed() {
        assert_eq!(parse_write_key(" abc123\n").unwrap(), "abc123");
        assert_eq!(
            parse_write_key(r#"{"SEGMENT_WRITE_KEY": "abc123"}"#).unwrap(),
            "abc123"
        );
        for bad in [
            r#"{"SEGMENT_WRITE_KEY": ["s3cr3t"]}"#,
            r#"{"writeKey": "s3cr3t"}"#,
            r#"{"SEGMENT_WRITE_KEY": "s3cr3t"#,
            "s3cr3t s3cr3t",
            "",
        ] {
            let error = parse_write_key(bad).unwrap_err().to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
        }
    }
}
