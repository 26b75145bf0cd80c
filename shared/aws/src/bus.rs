//! The customer's event bus on EventBridge: entries put in calls under its limits, and the
//! entries that fail (a whole call, or single entries of a call that succeeded) sent again
//! with back-off. EventBridge does not de-duplicate; consumers do, on the `id` in `detail`.

use std::future::Future;
use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::primitives::DateTime as SmithyTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use kore_ingest_core::forward::{BusEntry, MAX_CALL_BYTES, SOURCE, pack};
use kore_ingest_core::retry::backoff;
use tokio::time::Instant;

/// Where entries go: EventBridge when deployed; the tests put a failing one in front of it.
pub trait Bus: Send + Sync {
    /// One `PutEvents` call: each entry's result in order (`Err` with EventBridge's error
    /// code and message), or why the whole call failed.
    fn put(
        &self,
        entries: &[BusEntry],
    ) -> impl Future<Output = Result<Vec<Result<(), String>>, String>> + Send;
}

/// An EventBridge event bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    name: String,
}

impl EventBus {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        EventBus {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Bus for EventBus {
    async fn put(&self, entries: &[BusEntry]) -> Result<Vec<Result<(), String>>, String> {
        let request: Vec<PutEventsRequestEntry> = entries
            .iter()
            .map(|entry| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source(SOURCE)
                    .detail_type(entry.detail_type)
                    .detail(&entry.detail)
                    .time(SmithyTime::from_millis(entry.time.timestamp_millis()))
                    .build()
            })
            .collect();
        let output = self
            .client
            .put_events()
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or("no error code").to_owned();
                format!("PutEvents failed ({code}): {}", DisplayErrorContext(&e))
            })?;
        let results = output.entries();
        Ok((0..entries.len())
            .map(|i| match results.get(i) {
                Some(result) if result.error_code().is_none() => Ok(()),
                Some(result) => Err(format!(
                    "{}: {}",
                    result.error_code().unwrap_or_default(),
                    result.error_message().unwrap_or_default()
                )),
                None => Err("PutEvents answered no result for the entry".to_owned()),
            })
            .collect())
    }
}

/// How often and how long failed entries are sent again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
}

/// What putting a list of entries came to.
#[derive(Debug, Default)]
pub struct Delivered {
    /// `PutEvents` calls made.
    pub calls: u64,
    /// Entries sent again after a failure.
    pub retried: u64,
    /// Per entry, in order: `Ok`, or the last reason it failed (attempts or time spent).
    pub results: Vec<Result<(), String>>,
}

/// Puts every entry, sending those that fail again with back-off while attempts and the
/// deadline allow. A failing entry never holds back the others: each is retried on its
/// own account, and what still fails is reported, entry by entry.
pub async fn put_all<B: Bus>(
    bus: &B,
    entries: &[BusEntry],
    policy: RetryPolicy,
    deadline: Option<Instant>,
) -> Delivered {
    let mut delivered = Delivered {
        results: vec![Err("not sent".to_owned()); entries.len()],
        ..Delivered::default()
    };
    // An entry over EventBridge's limit is refused whatever is tried: not sent at all.
    let mut pending = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match entry.too_large() {
            true => {
                delivered.results[index] = Err(format!(
                    "the entry is {} bytes, more than EventBridge takes ({MAX_CALL_BYTES})",
                    entry.size()
                ))
            }
            false => pending.push(index),
        }
    }
    let mut attempt = 0;
    while !pending.is_empty() {
        attempt += 1;
        let batch: Vec<BusEntry> = pending.iter().map(|&i| entries[i].clone()).collect();
        let mut failed = Vec::new();
        for range in pack(&batch) {
            delivered.calls += 1;
            let indices = &pending[range.clone()];
            match bus.put(&batch[range]).await {
                Ok(mut results) => {
                    // An entry the answer says nothing about did not go.
                    results.resize(indices.len(), Err("no result for the entry".to_owned()));
                    for (&index, result) in indices.iter().zip(results) {
                        if result.is_err() {
                            failed.push(index);
                        }
                        delivered.results[index] = result;
                    }
                }
                Err(reason) => {
                    for &index in indices {
                        delivered.results[index] = Err(reason.clone());
                        failed.push(index);
                    }
                }
            }
        }
        pending = failed;
        if pending.is_empty() || attempt >= policy.max_attempts {
            break;
        }
        let wait = backoff(attempt, policy.base, None, 0.5 + fastrand::f64() / 2.0);
        if deadline.is_some_and(|d| Instant::now() + wait >= d) {
            break;
        }
        delivered.retried += pending.len() as u64;
        tracing::warn!(
            attempt,
            entries = pending.len(),
            wait_ms = wait.as_millis() as u64,
            "event bus entries failed; sending them again"
        );
        tokio::time::sleep(wait).await;
    }
    for &index in &pending {
        if let Err(reason) = &mut delivered.results[index] {
            *reason = format!("{reason} ({attempt} attempts)");
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::Utc;

    use super::*;

    /// Answers each call with one result fewer than it got, and records what it got.
    #[derive(Default)]
    struct ShortAnswers {
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl Bus for ShortAnswers {
        async fn put(&self, entries: &[BusEntry]) -> Result<Vec<Result<(), String>>, String> {
            self.calls
                .lock()
                .unwrap()
                .push(entries.iter().map(|e| e.id.clone()).collect());
            Ok(vec![Ok(()); entries.len().saturating_sub(1)])
        }
    }

    fn entry(id: &str, detail_bytes: usize) -> BusEntry {
        BusEntry {
            id: id.into(),
            detail_type: "SIM Update",
            detail: "x".repeat(detail_bytes),
            time: Utc::now(),
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn an_entry_too_large_for_eventbridge_is_never_sent_and_the_others_go() {
        let bus = ShortAnswers::default();
        let entries = [entry("big", 300 * 1024), entry("a", 10), entry("b", 10)];
        let delivered = put_all(&bus, &entries, POLICY, None).await;
        let sent = bus.calls.lock().unwrap().clone();
        assert!(sent.iter().flatten().all(|id| id != "big"), "{sent:?}");
        let big = delivered.results[0].as_ref().unwrap_err();
        assert!(big.contains("more than EventBridge takes"), "{big}");
        assert_eq!(delivered.results[1], Ok(()));
    }

    #[tokio::test]
    async fn an_entry_the_answer_leaves_out_is_sent_again_not_taken_as_delivered() {
        let bus = ShortAnswers::default();
        let entries = [entry("a", 10), entry("b", 10)];
        let delivered = put_all(&bus, &entries, POLICY, None).await;
        // First call: a answered, b not; then b alone, answered with nothing, until the
        // attempts are spent.
        assert_eq!(
            *bus.calls.lock().unwrap(),
            vec![vec!["a", "b"], vec!["b"], vec!["b"]]
        );
        assert_eq!(delivered.results[0], Ok(()));
        let b = delivered.results[1].as_ref().unwrap_err();
        assert!(b.contains("no result") && b.contains("3 attempts"), "{b}");
    }
}
