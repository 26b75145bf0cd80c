//! The back-off of every call a function sends again within its invocation (Segment
//! requests, event bus entries). DynamoDB transactions have their own, shorter one
//! (`kore_ingest_aws::ledger`'s `TransactionRetries`).

use std::time::Duration;

/// The longest back-off, whatever `Retry-After` asks for: the invocation has a deadline.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The wait before attempt `attempt + 1` (after `attempt` failed, from 1): the base doubled
/// per attempt, scaled by `jitter` (0.5 to 1.0, so concurrent shards spread out), at least
/// what `Retry-After` asked, never more than [`MAX_BACKOFF`].
pub fn backoff(
    attempt: u32,
    base: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let jittered = exponential.mul_f64(jitter.clamp(0.5, 1.0));
    jittered
        .max(retry_after.unwrap_or_default())
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(1, base, None, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(2, base, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, None, 0.5), Duration::from_secs(1));
        assert_eq!(
            backoff(4, base, None, 0.0),
            Duration::from_secs(2),
            "jitter floor"
        );
        assert_eq!(
            backoff(1, base, Some(Duration::from_secs(3)), 1.0),
            Duration::from_secs(3)
        );
        assert_eq!(backoff(40, base, None, 1.0), MAX_BACKOFF);
        assert_eq!(
            backoff(1, base, Some(Duration::from_secs(3600)), 1.0),
            MAX_BACKOFF
        );
    }
}
