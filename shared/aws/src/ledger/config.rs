//! The ledger's settings: its table, how many writes run at once, how long a copy of the
//! closed periods is trusted, how long event records are kept.

use std::time::Duration;

use kore_ingest_core::config::{ConfigError, Env, vars};
use kore_ingest_core::retention::Retention;

/// Configuration of a [`super::UsageLedger`].
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub table_name: String,
    /// How many writes one batch runs at once (`MAX_CONCURRENT_WRITES`).
    pub max_concurrent_writes: usize,
    /// How long a process trusts its copy of the closed periods (`CLOSED_PERIODS_TTL_MS`).
    pub closed_periods_ttl: Duration,
    /// When event records and booking lists expire (`LEDGER_RETENTION_DAYS`,
    /// `ARCHIVE_SEAL_AFTER_DAYS`).
    pub retention: Retention,
}

impl LedgerConfig {
    /// The defaults of [`vars`], for `table_name`.
    pub fn new(table_name: impl Into<String>) -> Self {
        LedgerConfig {
            table_name: table_name.into(),
            max_concurrent_writes: vars::MAX_CONCURRENT_WRITES.default as usize,
            closed_periods_ttl: Duration::from_millis(vars::CLOSED_PERIODS_TTL_MS.default),
            retention: Retention::default(),
        }
    }

    /// An operator's tool on `table_name`: what it stores expires, and its waits follow the
    /// functions' copy of the registries, as the functions' settings say
    /// (`CLOSED_PERIODS_TTL_MS`, `LEDGER_RETENTION_DAYS`, `ARCHIVE_SEAL_AFTER_DAYS`).
    pub fn for_tool(table_name: impl Into<String>, env: &Env) -> Result<Self, ConfigError> {
        Ok(LedgerConfig {
            closed_periods_ttl: env.millis(&vars::CLOSED_PERIODS_TTL_MS)?,
            retention: Retention::from_env(env)?,
            ..LedgerConfig::new(table_name)
        })
    }

    /// `TABLE_NAME` (required), `MAX_CONCURRENT_WRITES`, `CLOSED_PERIODS_TTL_MS`,
    /// `LEDGER_RETENTION_DAYS` and `ARCHIVE_SEAL_AFTER_DAYS`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(LedgerConfig {
            table_name: env.required("TABLE_NAME", "name the DynamoDB table")?,
            max_concurrent_writes: env.size(&vars::MAX_CONCURRENT_WRITES)?,
            closed_periods_ttl: env.millis(&vars::CLOSED_PERIODS_TTL_MS)?,
            retention: Retention::from_env(env)?,
        })
    }
}
