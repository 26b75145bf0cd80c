//! The archiver function: once a day (an EventBridge schedule), it seals each settled day
//! of the last week that has no final seal yet into the S3 archive, finally. A day is
//! settled `ARCHIVE_SEAL_AFTER_DAYS` after it ends. Looking back a week catches up a run
//! that failed or did not happen; a day already sealed finally is left as it is. The
//! function's reserved concurrency of one makes it the one writer of every day.

use aws_config::SdkConfig;
use chrono::{DateTime, NaiveDate, Utc};
use kore_ingest_aws::archive::{ArchiveStore, Archiver, ArchiverError, manifest_key, settled_days};
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_core::config::{ConfigError, Env, vars};
use kore_ingest_core::metrics::{InvocationMetrics, take_cold_start};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};
use tracing::info;

/// The `Function` dimension of this function's metrics.
pub const FUNCTION: &str = "archiver";

/// Settled days looked at each run, the newest first: a week of missed runs is caught up.
pub const CATCH_UP_DAYS: u32 = 7;

/// The ledger, the archive and when a day is settled. Built once per container.
#[derive(Debug, Clone)]
pub struct Archivist {
    pub ledger: UsageLedger,
    pub store: ArchiveStore,
    pub seal_after_days: u64,
}

impl Archivist {
    /// Deployed: `TABLE_NAME`, `ARCHIVE_URL` (`s3://BUCKET/`), `ARCHIVE_SEAL_AFTER_DAYS`.
    pub fn from_env(aws: &SdkConfig, env: &Env) -> Result<Self, ConfigError> {
        let url = env.required("ARCHIVE_URL", "where the archive is: s3://BUCKET/PREFIX")?;
        let store = ArchiveStore::from_url(&url, aws).map_err(|e| ConfigError::Invalid {
            var: "ARCHIVE_URL",
            reason: e.to_string(),
        })?;
        Ok(Archivist {
            ledger: UsageLedger::from_sdk_config(aws, env)?,
            store,
            seal_after_days: env.number(&vars::ARCHIVE_SEAL_AFTER_DAYS)?,
        })
    }
}

/// Seals, finally, each settled day of the week before `now` that is not sealed finally
/// yet, oldest first; the days it sealed, with their usage events.
pub async fn seal_settled(
    archivist: &Archivist,
    now: DateTime<Utc>,
) -> Result<Vec<(NaiveDate, u64)>, ArchiverError> {
    let archiver = Archiver {
        ledger: &archivist.ledger,
        store: &archivist.store,
    };
    // The manifests present are listed first, and only those read: S3 answers a read of a
    // missing object with AccessDenied, not NoSuchKey, to a role without s3:ListBucket.
    let present = archivist.store.list("manifests/").await?;
    let mut sealed = Vec::new();
    for day in settled_days(now, archivist.seal_after_days, CATCH_UP_DAYS) {
        let is_final = present.contains(&manifest_key(day))
            && archiver.manifest(day).await?.is_some_and(|m| m.is_final);
        if is_final {
            continue;
        }
        let manifest = archiver.seal(day, true).await?;
        info!(%day, usage_events = manifest.usage_events.rows, other_events = manifest.other_events.rows, "day sealed");
        sealed.push((day, manifest.usage_events.rows + manifest.other_events.rows));
    }
    Ok(sealed)
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
    let sealed = seal_settled(archivist, now).await?;
    metrics.count("DaysSealed", sealed.len() as u64);
    metrics.count("EventsArchived", sealed.iter().map(|(_, n)| n).sum());
    metrics.emit();
    let days: Vec<String> = sealed.iter().map(|(day, _)| day.to_string()).collect();
    info!(?days, "archive run done");
    Ok(json!({ "sealed": days }))
}
