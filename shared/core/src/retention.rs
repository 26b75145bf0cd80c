//! How long the ledger keeps an event record and its booking list once the archive holds
//! them (`LEDGER_RETENTION_DAYS`): the DynamoDB TTL attribute `expires_at` they are written
//! with. Rollups, closes and adjustments never expire.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::time::midnight;

/// Days past the settle time before an item may expire: room for the archiver's daily runs
/// (and a week of them failing) to seal the day first.
pub const SEAL_MARGIN_DAYS: i64 = 10;

/// The ledger's retention: keep forever, or a number of days after the booking day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `None`: items are written without `expires_at` and kept forever.
    pub ledger_days: Option<u64>,
    /// Days after a day ends before it is sealed (`ARCHIVE_SEAL_AFTER_DAYS`).
    pub seal_after_days: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            ledger_days: None,
            seal_after_days: crate::config::vars::ARCHIVE_SEAL_AFTER_DAYS.default,
        }
    }
}

/// A count of days as chrono takes it; the configuration allows none near the limit.
pub fn days(n: u64) -> Duration {
    Duration::days(
        i64::try_from(n)
            .unwrap_or(i64::MAX / 86_400_000)
            .min(1_000_000),
    )
}

impl Retention {
    /// `LEDGER_RETENTION_DAYS` (0: keep forever) and `ARCHIVE_SEAL_AFTER_DAYS`.
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        use crate::config::vars;
        let ledger_days = env.number(&vars::LEDGER_RETENTION_DAYS)?;
        Ok(Retention {
            ledger_days: (ledger_days > 0).then_some(ledger_days),
            seal_after_days: env.number(&vars::ARCHIVE_SEAL_AFTER_DAYS)?,
        })
    }

    /// When an item of `day` (a usage event's booking day, another event's day) that
    /// arrived at `arrival` may expire, in epoch seconds: the later of the end of its day
    /// plus the retention and its arrival plus the settle time and a margin, so that an
    /// old event imported today is sealed before it can go. `None` to keep it forever.
    pub fn expires_at(&self, day: NaiveDate, arrival: DateTime<Utc>) -> Option<i64> {
        let retention = days(self.ledger_days?);
        let after_day = midnight(day) + Duration::days(1) + retention;
        let after_arrival = arrival + days(self.seal_after_days) + Duration::days(SEAL_MARGIN_DAYS);
        Some(after_day.max(after_arrival).timestamp())
    }

    /// Whether the ledger may have started dropping `day`'s items at `now`: the earliest
    /// any of them can expire (one that arrived on the day itself) has passed.
    pub fn may_have_expired(&self, day: NaiveDate, now: DateTime<Utc>) -> bool {
        self.expires_at(day, midnight(day))
            .is_some_and(|at| at <= now.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_item_expires_after_its_day_and_never_before_it_can_be_sealed() {
        let keep = Retention::default();
        let day = NaiveDate::from_ymd_opt(2024, 11, 3).unwrap();
        assert_eq!(keep.expires_at(day, at("2024-11-03T12:00:00Z")), None);

        let retention = Retention {
            ledger_days: Some(45),
            seal_after_days: 3,
        };
        // Arrived on its day: 45 days after the day ends.
        assert_eq!(
            retention.expires_at(day, at("2024-11-03T12:00:00Z")),
            Some(at("2024-12-19T00:00:00Z").timestamp())
        );
        // Imported a year later: settle time and margin after its arrival.
        assert_eq!(
            retention.expires_at(day, at("2025-11-03T12:00:00Z")),
            Some(at("2025-11-16T12:00:00Z").timestamp())
        );
    }
}
