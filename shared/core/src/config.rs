//! Configuration from environment variables, read one way by every function and by
//! `kore-usage`: a value is trimmed, an empty one is the same as an unset one (the template
//! passes empty parameters through), and each number has one default and one range, defined
//! once in [`vars`], so the same variable gives the same error text wherever it is read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A variable that is missing or holds no usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: {what}")]
    Missing {
        var: &'static str,
        what: &'static str,
    },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// What a number counts, for its error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
}

/// A numeric variable: its name, default and inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    pub name: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub unit: Unit,
}

/// Every numeric variable of the project, each defined once.
pub mod vars {
    use super::{Number, Unit};

    const fn millis(name: &'static str, default: u64, min: u64, max: u64) -> Number {
        Number {
            name,
            default,
            min,
            max,
            unit: Unit::Milliseconds,
        }
    }

    /// A function starts no new work this close to its invocation deadline.
    pub const DEADLINE_MARGIN_MS: Number = millis("DEADLINE_MARGIN_MS", 5_000, 0, 600_000);
    /// How long a process trusts its copy of the closed periods.
    pub const CLOSED_PERIODS_TTL_MS: Number = millis("CLOSED_PERIODS_TTL_MS", 30_000, 0, 300_000);
    /// The webhook's time to store everything before it asks the sender to retry.
    pub const TIME_BUDGET_MS: Number = millis("TIME_BUDGET_MS", 4_000, 1, 900_000);
    /// The least age of the webhook's secrets before a failed signature reads them again.
    pub const SECRETS_REFRESH_MIN_MS: Number =
        millis("SECRETS_REFRESH_MIN_MS", 60_000, 0, 86_400_000);
    /// The most age of the webhook's secrets: older, they are read again before a request is
    /// checked, so a secret removed from Secrets Manager stops being accepted within it.
    pub const SECRETS_MAX_AGE_MS: Number = millis("SECRETS_MAX_AGE_MS", 300_000, 1_000, 3_600_000);
    /// The Segment forwarder's first back-off; it doubles with each attempt.
    pub const SEGMENT_RETRY_BASE_MS: Number = millis("SEGMENT_RETRY_BASE_MS", 500, 1, 60_000);
    /// The callback forwarder's first back-off before sending failed entries to the event
    /// bus again; it doubles with each attempt.
    pub const EVENTS_RETRY_BASE_MS: Number = millis("EVENTS_RETRY_BASE_MS", 200, 1, 60_000);
    /// Days after a day ends before it is settled enough to seal into the archive: late
    /// deliveries and retries of it have arrived by then.
    pub const ARCHIVE_SEAL_AFTER_DAYS: Number = Number {
        name: "ARCHIVE_SEAL_AFTER_DAYS",
        default: 3,
        min: 1,
        max: 30,
        unit: Unit::Count,
    };
    /// Days the ledger keeps an event record and its booking list after their day (then
    /// the archive holds them); 0 keeps them forever.
    pub const LEDGER_RETENTION_DAYS: Number = Number {
        name: "LEDGER_RETENTION_DAYS",
        default: 0,
        min: 0,
        max: 36_500,
        unit: Unit::Count,
    };
    /// How many writes one batch runs at once.
    pub const MAX_CONCURRENT_WRITES: Number = Number {
        name: "MAX_CONCURRENT_WRITES",
        default: 32,
        min: 1,
        max: 1_000,
        unit: Unit::Count,
    };
    /// Larger webhook bodies get 413 (a Function URL takes at most 6 MB).
    pub const MAX_BODY_BYTES: Number = Number {
        name: "MAX_BODY_BYTES",
        default: 1024 * 1024,
        min: 1,
        max: crate::event::MAX_PAYLOAD_BYTES as u64,
        unit: Unit::Bytes,
    };
    /// Attempts of one Segment request before its records go back to Lambda.
    pub const SEGMENT_MAX_ATTEMPTS: Number = Number {
        name: "SEGMENT_MAX_ATTEMPTS",
        default: 5,
        min: 1,
        max: 20,
        unit: Unit::Count,
    };
    /// Attempts of one entry on the event bus before it is kept for redrive.
    pub const EVENTS_MAX_ATTEMPTS: Number = Number {
        name: "EVENTS_MAX_ATTEMPTS",
        default: 5,
        min: 1,
        max: 20,
        unit: Unit::Count,
    };
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where variables come from: the process environment, or given values (tests, and tools
/// that must not share the process environment).
#[derive(Clone)]
pub struct Env {
    lookup: Arc<Lookup>,
}

impl std::fmt::Debug for Env {
    // Values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Env::from_fn(|name| std::env::var(name).ok())
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Env {
            lookup: Arc::new(lookup),
        }
    }

    /// Exactly these variables.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Env::from_fn(move |name| vars.get(name).cloned())
    }

    /// The value, trimmed; `None` when unset or empty.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// The value, or why it is needed.
    pub fn required(&self, name: &'static str, what: &'static str) -> Result<String, ConfigError> {
        self.text(name)
            .ok_or(ConfigError::Missing { var: name, what })
    }

    /// A comma-separated list; blanks between commas are dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .map(|value| comma_list(&value))
            .unwrap_or_default()
    }

    /// `true`/`1` or `false`/`0`; unset is false.
    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.text(name).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ConfigError::Invalid {
                var: name,
                reason: format!("`{other}` is not true or false"),
            }),
        }
    }

    /// The number, its default when unset, or why it is not one.
    pub fn number(&self, var: &Number) -> Result<u64, ConfigError> {
        let Some(text) = self.text(var.name) else {
            return Ok(var.default);
        };
        text.parse::<u64>()
            .ok()
            .filter(|n| (var.min..=var.max).contains(n))
            .ok_or_else(|| {
                let unit = match var.unit {
                    Unit::Count => "",
                    Unit::Bytes => " of bytes",
                    Unit::Milliseconds => " of milliseconds",
                };
                ConfigError::Invalid {
                    var: var.name,
                    reason: format!(
                        "`{text}` is not a whole number{unit} from {} to {}",
                        var.min, var.max
                    ),
                }
            })
    }

    /// A number of milliseconds as a duration.
    pub fn millis(&self, var: &Number) -> Result<Duration, ConfigError> {
        self.number(var).map(Duration::from_millis)
    }

    /// A count or size as a `usize`.
    pub fn size(&self, var: &Number) -> Result<usize, ConfigError> {
        self.number(var)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A comma-separated list, blanks between commas dropped: how every list is written, in a
/// variable or in a secret document.
pub fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_one_default_one_range_and_one_error_text() {
        let env = Env::from_pairs(&[
            ("DEADLINE_MARGIN_MS", " 250 "),
            ("TIME_BUDGET_MS", ""),
            ("MAX_CONCURRENT_WRITES", "0"),
            ("MAX_BODY_BYTES", "lots"),
        ]);
        assert_eq!(
            env.millis(&vars::DEADLINE_MARGIN_MS),
            Ok(Duration::from_millis(250))
        );
        // Empty is unset.
        assert_eq!(
            env.millis(&vars::TIME_BUDGET_MS),
            Ok(Duration::from_millis(4_000))
        );
        assert_eq!(
            env.number(&vars::MAX_CONCURRENT_WRITES)
                .unwrap_err()
                .to_string(),
            "MAX_CONCURRENT_WRITES is invalid: `0` is not a whole number from 1 to 1000"
        );
        assert_eq!(
            env.number(&vars::MAX_BODY_BYTES).unwrap_err().to_string(),
            "MAX_BODY_BYTES is invalid: `lots` is not a whole number of bytes from 1 to 6291456"
        );
        let far = Env::from_pairs(&[("DEADLINE_MARGIN_MS", "600001")]);
        assert!(far.millis(&vars::DEADLINE_MARGIN_MS).is_err());
    }

    #[test]
    fn flags_lists_and_required_text() {
        let env = Env::from_pairs(&[
            ("ALLOW_UNSIGNED", "yes"),
            ("ON", "1"),
            ("LIST", " a , b ,,"),
            ("TABLE_NAME", "  "),
        ]);
        assert_eq!(
            env.flag("ALLOW_UNSIGNED").unwrap_err().to_string(),
            "ALLOW_UNSIGNED is invalid: `yes` is not true or false"
        );
        assert_eq!(env.flag("ON"), Ok(true));
        assert_eq!(env.flag("UNSET"), Ok(false));
        assert_eq!(env.list("LIST"), ["a", "b"]);
        assert_eq!(
            env.required("TABLE_NAME", "name the DynamoDB table")
                .unwrap_err()
                .to_string(),
            "TABLE_NAME is not set: name the DynamoDB table"
        );
    }
}
