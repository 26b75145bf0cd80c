//! How long a function may go on starting work: the invocation's deadline less a margin, so
//! that whatever is still unfinished is reported for retry in time. One rule for the
//! functions that stop early (the consumer's writes, the forwarder's requests to Segment);
//! the margin is `DEADLINE_MARGIN_MS` ([`crate::config::vars::DEADLINE_MARGIN_MS`]).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Lambda's longest timeout.
const LAMBDA_MAX: Duration = Duration::from_secs(15 * 60);

/// What is kept, after work is cut off, to build the answer and hand it to Lambda.
pub const ANSWER_RESERVE: Duration = Duration::from_millis(500);

/// The instant after which no new piece of work starts.
pub fn work_deadline(invocation_deadline: SystemTime, margin: Duration) -> Instant {
    let remaining = invocation_deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + remaining.saturating_sub(margin)
}

/// The instant at which work still running is abandoned and reported for retry, so that
/// the invocation answers before Lambda's timeout whatever a call's own timeout is: a write
/// started just before [`work_deadline`] may otherwise outlast the invocation.
pub fn cutoff(invocation_deadline: SystemTime) -> Instant {
    work_deadline(invocation_deadline, ANSWER_RESERVE)
}

/// Lambda's deadline (`Context::deadline`, milliseconds since the epoch) is always ahead
/// when an invocation starts; `cargo lambda watch` (the local stack) sends one already
/// behind, which would refuse all work. Such a deadline becomes Lambda's longest timeout
/// from now; a real one is left alone. For the functions' `main`, the emulator's edge.
pub fn replace_emulator_deadline(deadline_ms: &mut u64) {
    let now = SystemTime::now();
    if SystemTime::UNIX_EPOCH + Duration::from_millis(*deadline_ms) > now {
        return;
    }
    tracing::warn!(
        received = *deadline_ms,
        "the invocation deadline is already past at the start (an emulator's); using 15 minutes"
    );
    *deadline_ms = (now + LAMBDA_MAX)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_keeps_the_margin() {
        let now = Instant::now();
        let deadline = work_deadline(
            SystemTime::now() + Duration::from_secs(60),
            Duration::from_secs(5),
        );
        // `work_deadline` reads the clock after `now` did: allow it that instant.
        let left = deadline - now;
        assert!(
            left > Duration::from_secs(54) && left < Duration::from_millis(55_100),
            "{left:?}"
        );
        // A deadline already past, or closer than the margin, allows no new work.
        let past = work_deadline(SystemTime::now(), Duration::from_secs(5));
        assert!(past <= Instant::now());
    }

    #[test]
    fn only_a_deadline_already_behind_is_replaced() {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let ahead = ms(SystemTime::now() + Duration::from_secs(30));
        let mut deadline = ahead;
        replace_emulator_deadline(&mut deadline);
        assert_eq!(deadline, ahead);
        let mut deadline = ms(SystemTime::now());
        replace_emulator_deadline(&mut deadline);
        let in_fifteen = ms(SystemTime::now() + LAMBDA_MAX);
        assert!(deadline <= in_fifteen && deadline + 1_000 >= in_fifteen);
    }
}
