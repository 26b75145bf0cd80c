//! What the poller does after an invocation, as Lambda's event source mapping does it with
//! `ReportBatchItemFailures`: pure functions, tested below. Kinesis and DynamoDB streams
//! share the answer's shape (`KinesisEventResponse` is `DynamoDbEventResponse` field for
//! field) and numeric sequence numbers, so both pollers use these.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use aws_lambda_events::event::streams::KinesisEventResponse;
use kinesis_consumer::sequence_order;
use serde_json::Value;

/// Retries back off from the interval, doubling, up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where a shard's next batch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    TrimHorizon,
    Latest,
    At(String),
    After(String),
}

impl Position {
    /// As `GetShardIterator` takes it, on Kinesis and on DynamoDB Streams alike: the
    /// iterator type, and the sequence number it starts from.
    pub fn iterator_type(&self) -> (&'static str, Option<&str>) {
        match self {
            Position::TrimHorizon => ("TRIM_HORIZON", None),
            Position::Latest => ("LATEST", None),
            Position::At(seq) => ("AT_SEQUENCE_NUMBER", Some(seq)),
            Position::After(seq) => ("AFTER_SEQUENCE_NUMBER", Some(seq)),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.iterator_type() {
            (kind, None) => f.write_str(kind),
            (kind, Some(seq)) => write!(f, "{kind}:{seq}"),
        }
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invoked {
    /// Every record processed.
    Ok,
    /// The function reported failures: restart at the lowest.
    Partial { restart_at: String, reported: usize },
    /// The whole batch failed (why).
    Error(String),
    /// Nobody answered at the function's address (why).
    Unreachable(String),
}

/// What comes next for the shard.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Go on after the batch.
    Next,
    /// Read again from `from` after `delay`; `attempts` failed so far from there.
    Retry {
        from: Position,
        attempts: u32,
        delay: Duration,
        what: String,
    },
    /// Out of retries: the records from index `failed_from` go to the dead-letter file and
    /// polling moves past the batch.
    GiveUp {
        failed_from: usize,
        attempts: u32,
        what: String,
    },
}

/// A 2xx answer read as Lambda reads it, for a batch of these sequence numbers.
pub fn classify(text: &str, batch: &[&str]) -> Invoked {
    let shown = || short(text);
    if text.trim().is_empty() {
        return Invoked::Ok;
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return Invoked::Error(format!("unparseable response: {}", shown())),
    };
    let Some(object) = value.as_object() else {
        return match value {
            Value::Null => Invoked::Ok,
            _ => Invoked::Error(format!("unexpected response: {}", shown())),
        };
    };
    if object.contains_key("errorType") || object.contains_key("errorMessage") {
        // A function error with a 2xx status (cargo lambda watch reports an init error, e.g.
        // a missing variable, with 200 and the error body).
        return Invoked::Error(format!("function error: {}", shown()));
    }
    if object.get("batchItemFailures").is_none_or(Value::is_null) {
        return Invoked::Ok;
    }
    let response: KinesisEventResponse = match serde_json::from_value(value) {
        Ok(response) => response,
        Err(e) => return Invoked::Error(format!("not a KinesisEventResponse ({e}): {}", shown())),
    };
    let mut reported = Vec::with_capacity(response.batch_item_failures.len());
    for failure in &response.batch_item_failures {
        match failure.item_identifier.as_deref() {
            None | Some("") => {
                return Invoked::Error(format!("null or empty itemIdentifier in {}", shown()));
            }
            Some(id) if !batch.contains(&id) => {
                return Invoked::Error(format!(
                    "itemIdentifier {id:?} is not a sequence number of the batch"
                ));
            }
            Some(id) => reported.push(id),
        }
    }
    match reported.iter().min_by(|a, b| sequence_order(a, b)) {
        None => Invoked::Ok,
        Some(lowest) => Invoked::Partial {
            restart_at: (*lowest).to_owned(),
            reported: reported.len(),
        },
    }
}

/// After an invocation of the batch `batch` (sequence numbers, in order) read from `start`,
/// with `failed_attempts` failures from `start` before it.
pub fn decide(
    start: &Position,
    batch: &[&str],
    invoked: &Invoked,
    failed_attempts: u32,
    max_retries: u32,
    interval: Duration,
) -> Decision {
    let first = batch.first().copied().unwrap_or_default();
    let (progressed, from, failed_from, what) = match invoked {
        Invoked::Ok => return Decision::Next,
        Invoked::Partial {
            restart_at,
            reported,
        } => (
            // Only a restart further on than the batch's first record is progress.
            sequence_order(restart_at, first) == Ordering::Greater,
            Position::At(restart_at.clone()),
            batch
                .iter()
                .position(|seq| sequence_order(seq, restart_at) != Ordering::Less)
                .unwrap_or(0),
            format!("failures=reported ({reported}) lowest={restart_at}"),
        ),
        Invoked::Error(why) | Invoked::Unreachable(why) => (
            false,
            start.clone(),
            0,
            format!("failures=whole-batch ({why})"),
        ),
    };
    let attempts = if progressed { 1 } else { failed_attempts + 1 };
    if attempts > max_retries {
        return Decision::GiveUp {
            failed_from,
            attempts,
            what,
        };
    }
    let delay = interval
        .saturating_mul(1 << (attempts - 1).min(16))
        .min(MAX_BACKOFF);
    Decision::Retry {
        from,
        attempts,
        delay,
        what,
    }
}

/// At most 300 characters of an answer, on one line.
pub fn short(text: &str) -> String {
    let line = text.trim().replace('\n', " ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: [&str; 4] = ["8", "9", "10", "11"];

    #[test]
    fn answers_are_read_as_lambda_reads_them() {
        for ok in [
            "",
            "null",
            "{}",
            r#"{"batchItemFailures":[]}"#,
            r#"{"batchItemFailures":null}"#,
        ] {
            assert_eq!(classify(ok, &BATCH), Invoked::Ok, "{ok}");
        }
        assert_eq!(
            classify(
                r#"{"batchItemFailures":[{"itemIdentifier":"10"},{"itemIdentifier":"9"}]}"#,
                &BATCH
            ),
            Invoked::Partial {
                restart_at: "9".into(),
                reported: 2
            },
            "the lowest as a number, not as text"
        );
        for whole in [
            "not json",
            "[1]",
            r#"{"errorType":"Runtime.ExitError","errorMessage":"boom"}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"12"}]}"#,
            r#"{"batchItemFailures":"9"}"#,
        ] {
            assert!(
                matches!(classify(whole, &BATCH), Invoked::Error(_)),
                "{whole}: {:?}",
                classify(whole, &BATCH)
            );
        }
    }

    #[test]
    fn a_restart_further_on_is_progress_and_the_same_start_counts_attempts() {
        let start = Position::After("7".into());
        let interval = Duration::from_millis(500);
        let partial = |at: &str| Invoked::Partial {
            restart_at: at.into(),
            reported: 1,
        };
        assert_eq!(
            decide(&start, &BATCH, &Invoked::Ok, 3, 5, interval),
            Decision::Next
        );
        match decide(&start, &BATCH, &partial("10"), 3, 5, interval) {
            Decision::Retry {
                from,
                attempts,
                delay,
                ..
            } => {
                assert_eq!(from, Position::At("10".into()));
                assert_eq!((attempts, delay), (1, interval));
            }
            other => panic!("{other:?}"),
        }
        match decide(&start, &BATCH, &partial("8"), 2, 5, interval) {
            Decision::Retry {
                attempts, delay, ..
            } => assert_eq!((attempts, delay), (3, Duration::from_secs(2))),
            other => panic!("{other:?}"),
        }
        match decide(
            &start,
            &BATCH,
            &Invoked::Error("500".into()),
            0,
            5,
            interval,
        ) {
            Decision::Retry { from, .. } => assert_eq!(from, start),
            other => panic!("{other:?}"),
        }
        match decide(
            &start,
            &BATCH,
            &Invoked::Error("500".into()),
            9,
            20,
            interval,
        ) {
            Decision::Retry { delay, .. } => assert_eq!(delay, MAX_BACKOFF),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_retries_the_failed_records_go_to_the_dead_letter_file() {
        let start = Position::At("8".into());
        let interval = Duration::from_millis(500);
        let reported = Invoked::Partial {
            restart_at: "10".into(),
            reported: 1,
        };
        // Stuck at 10 (no progress from a start at 10) for the sixth time.
        let at_ten = Position::At("10".into());
        let batch = ["10", "11"];
        assert_eq!(
            decide(&at_ten, &batch, &reported, 5, 5, interval),
            Decision::GiveUp {
                failed_from: 0,
                attempts: 6,
                what: "failures=reported (1) lowest=10".into()
            }
        );
        // With no retries allowed, records 10 and 11 of the first batch go.
        match decide(&start, &BATCH, &reported, 0, 0, interval) {
            Decision::GiveUp { failed_from, .. } => assert_eq!(failed_from, 2),
            other => panic!("{other:?}"),
        }
    }
}
