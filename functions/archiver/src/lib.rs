//! The archiver function: once a day (an EventBridge schedule), it seals each settled day
//! it looks after that has no final seal yet into the S3 archive, finally. A day is settled
//! `ARCHIVE_SEAL_AFTER_DAYS` after it ends. It looks back a week, or over the whole ledger
//! retention (`LEDGER_RETENTION_DAYS`) when that is longer, so a run that failed or did not
//! happen is caught up before anything expires; a day already sealed finally is left as it
//! is. The function's reserved concurrency of one makes it the one writer of every day.

use aws_config::SdkConfig;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use kore_ingest_aws::archive::{
    ArchiveStore, Archiver, ArchiverError, mark_settle_time, settled_days,
};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::config::{ConfigError, Env};
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use kore_ingest_core::retention::Retention;
use kore_ingest_core::time::midnight;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};
use tracing::{error, info};

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "archiver";

/// Settled days looked at each run without a ledger retention: a week of missed runs.
pub const CATCH_UP_DAYS: u32 = 7;

/// A day left unsealed this close to the expiry of its first items is alarmed on.
pub const NEAR_EXPIRY_DAYS: i64 = 7;

/// The ledger, the archive and when a day is settled. Built once per container.
#[derive(Debug, Clone)]
pub struct Archivist {
    pub ledger: UsageLedger,
    pub store: ArchiveStore,
    /// How long a run waits between marking its days archived and reading them.
    pub settle: std::time::Duration,
}

impl Archivist {
    /// Deployed: `TABLE_NAME`, `ARCHIVE_URL` (`s3://BUCKET/`), `ARCHIVE_SEAL_AFTER_DAYS`,
    /// `LEDGER_RETENTION_DAYS`.
    pub fn from_env(aws: &SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        let url = env.required("ARCHIVE_URL", "where the archive is: s3://BUCKET/PREFIX")?;
        let store = ArchiveStore::from_url(&url, aws).map_err(|e| ConfigError::Invalid {
            var: "ARCHIVE_URL",
            reason: e.to_string(),
        })?;
        let ledger = UsageLedger::from_sdk_config(aws, env)?;
        Ok(Archivist {
            settle: mark_settle_time(ledger.table().config().closed_periods_ttl),
            ledger,
            store,
        })
    }

    /// The ledger's retention, which decides how far back a run looks.
    fn retention(&self) -> Retention {
        self.ledger.table().config().retention
    }

    /// How many settled days each run looks at.
    fn look_back(&self) -> u32 {
        let retention = self.retention().ledger_days.unwrap_or(0);
        CATCH_UP_DAYS.max(u32::try_from(retention).unwrap_or(u32::MAX))
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The days sealed, with their events.
    pub sealed: Vec<(NaiveDate, u64)>,
    /// The days that could not be sealed, and why.
    pub failed: Vec<(NaiveDate, String)>,
    /// Of those, the days whose first items expire within [`NEAR_EXPIRY_DAYS`].
    pub near_expiry: u64,
}

/// Seals, finally, each settled day looked after that is not sealed finally yet, oldest
/// first. A day that fails does not stop the others.
pub async fn seal_settled(
    archivist: &Archivist,
    now: DateTime<Utc>,
) -> Result<RunReport, ArchiverError> {
    let archiver = Archiver {
        ledger: &archivist.ledger,
        store: &archivist.store,
    };
    // The manifests present are listed first, and only those read: S3 answers a read of a
    // missing object with AccessDenied, not NoSuchKey, to a role without s3:ListBucket.
    let present = archiver.sealed_days().await?;
    let mut report = RunReport::default();
    let seal_after = archivist.retention().seal_after_days;
    let mut unsealed = Vec::new();
    for day in settled_days(now, seal_after, archivist.look_back()) {
        let is_final = match present.contains(&day) {
            false => Ok(false),
            true => archiver
                .manifest(day)
                .await
                .map(|m| m.is_some_and(|m| m.is_final)),
        };
        match is_final {
            Ok(true) => {}
            Ok(false) => unsealed.push(day),
            Err(reason) => {
                error!(%day, %reason, "the day's manifest cannot be read");
                report.failed.push((day, reason.to_string()));
            }
        }
    }
    if unsealed.is_empty() {
        return Ok(report);
    }
    for (day, sealed) in archiver.seal_finally(&unsealed, archivist.settle).await? {
        match sealed {
            Ok(manifest) => {
                let events = manifest.usage_events.rows + manifest.other_events.rows;
                info!(%day, events, "day sealed");
                report.sealed.push((day, events));
            }
            Err(reason) => {
                error!(%day, %reason, "day not sealed");
                // The day's first items: those that arrived on the day itself.
                let expires = archivist.retention().expires_at(day, midnight(day));
                let near = now.timestamp() + Duration::days(NEAR_EXPIRY_DAYS).num_seconds();
                if expires.is_some_and(|at| at < near) {
                    report.near_expiry += 1;
                }
                report.failed.push((day, reason.to_string()));
            }
        }
    }
    Ok(report)
}

/// The Lambda entry point: an EventBridge scheduled event, whose `time` is the run's now.
pub async fn handle(archivist: &Archivist, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let mut metrics = InvocationMetrics::new(FUNCTION);
    if take_cold_start() {
        metrics.count("ColdStart", 1);
    }
    let now = event
        .payload
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or("not a scheduled event: no `time` to seal the settled days before")?
        .to_utc();
    let report = seal_settled(archivist, now).await?;
    metrics.count("DaysSealed", report.sealed.len() as u64);
    metrics.count("EventsArchived", report.sealed.iter().map(|(_, n)| n).sum());
    metrics.count("DaysNotSealed", report.failed.len() as u64);
    metrics.count("DaysUnsealedNearExpiry", report.near_expiry);
    metrics.emit();
    let days: Vec<String> = report
        .sealed
        .iter()
        .map(|(day, _)| day.to_string())
        .collect();
    info!(?days, failed = report.failed.len(), "archive run done");
    if let Some((day, reason)) = report.failed.first() {
        return Err(format!(
            "{} days not sealed, the first {day}: {reason}",
            report.failed.len()
        )
        .into());
    }
    Ok(json!({ "sealed": days }))
}
