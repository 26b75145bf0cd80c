//! What both local event source mappings do, whatever the stream: poll each shard, invoke
//! the function with a batch, read its answer as Lambda does with
//! `ReportBatchItemFailures` (`decide.rs`), back off, give up into a dead-letter file. A
//! [`Source`] says how to list shards, read records and write them as Lambda's event.
//!
//! Semantics: no bisecting, no batching window, one batch in flight per shard, a child
//! shard only after its parent is read to its end. Checkpoints live in memory only.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::decide::{Decision, Invoked, Position, classify, decide, short};
pub use crate::settings::{PollArgs, REGION, Settings, env_or, local_file};
pub use crate::source::{Listing, Read, ShardInfo, Source, SourceError};

/// How often new shards (resharding, DynamoDB's shard roll-over) are looked for.
const SHARD_REFRESH: Duration = Duration::from_secs(10);

/// One shard and where its next batch starts.
#[derive(Debug)]
struct Shard {
    parent: Option<String>,
    start: Position,
    iterator: Option<String>,
    /// Failed invocations from the current start position.
    failed_attempts: u32,
    last_error: String,
    /// Not polled before this (back-off).
    not_before: Instant,
    /// The last read returned nothing.
    caught_up: bool,
    /// A closed shard read to its end.
    done: bool,
}

/// Why polling stops or pauses.
enum Stop {
    /// Nothing to do but wait and try again (logged already).
    Pause,
    /// The stream does not exist (yet, or any more): start over once it does.
    StreamMissing,
    /// Give up (with --once, or a fatal error).
    Fatal(String),
}

pub struct Poller<S: Source> {
    settings: Settings,
    source: S,
    shards: BTreeMap<String, Shard>,
    next_refresh: Instant,
}

pub fn log_as(name: &str, message: &str) {
    eprintln!(
        "{} [{name}] {message}",
        chrono::Local::now().format("%H:%M:%S")
    );
}

impl<S: Source> Poller<S> {
    pub fn new(settings: Settings, source: S) -> Self {
        Poller {
            settings,
            source,
            shards: BTreeMap::new(),
            next_refresh: Instant::now(),
        }
    }

    fn log(&self, message: &str) {
        log_as(S::NAME, message);
    }

    /// A failed call as what to do about it.
    fn stop(&self, error: SourceError) -> Stop {
        if self.settings.once {
            return Stop::Fatal(error.text);
        }
        if S::is_missing(&error) {
            return Stop::StreamMissing;
        }
        self.log(&format!("{}; retrying", error.text));
        Stop::Pause
    }

    async fn refresh_shards(&mut self, first: &mut bool) -> Result<(), Stop> {
        let listing = match self.source.list().await {
            Ok(listing) => listing,
            Err(error) => return Err(self.stop(error)),
        };
        if listing.new_stream && !self.shards.is_empty() {
            self.log("the stream is new; reading it from its start");
            self.shards.clear();
            *first = true;
        }
        for shard in listing.shards {
            if self.shards.contains_key(&shard.id) {
                continue;
            }
            // Shards that appear later (resharding) are new: read from their start.
            let start = if *first && self.settings.from_latest {
                Position::Latest
            } else {
                Position::TrimHorizon
            };
            if !*first {
                self.log(&format!(
                    "new shard {} (parent {})",
                    shard.id,
                    shard.parent.as_deref().unwrap_or("none")
                ));
            }
            self.shards.insert(
                shard.id,
                Shard {
                    parent: shard.parent,
                    start,
                    iterator: None,
                    failed_attempts: 0,
                    last_error: String::new(),
                    not_before: Instant::now(),
                    caught_up: false,
                    done: false,
                },
            );
        }
        self.next_refresh = Instant::now() + SHARD_REFRESH;
        Ok(())
    }

    async fn iterator(&self, id: &str, shard: &mut Shard) -> Result<String, Stop> {
        match self.source.iterator(id, &shard.start).await {
            Ok(Some(iterator)) => Ok(iterator),
            Ok(None) => {
                self.log(&format!(
                    "shard={id} checkpoint {} rejected; stream recreated? restarting the shard from TRIM_HORIZON",
                    shard.start
                ));
                shard.start = Position::TrimHorizon;
                shard.failed_attempts = 0;
                match self.source.iterator(id, &shard.start).await {
                    Ok(iterator) => Ok(iterator.unwrap_or_default()),
                    Err(error) => Err(self.stop(error)),
                }
            }
            Err(error) => Err(self.stop(error)),
        }
    }

    /// Reads and delivers one batch of the shard; true if it held records.
    async fn poll(&self, id: &str, shard: &mut Shard) -> Result<bool, Stop> {
        let iterator = match shard.iterator.take() {
            Some(iterator) => iterator,
            None => self.iterator(id, shard).await?,
        };
        let read = self.source.read(&iterator, self.settings.batch_size).await;
        let (records, next_iterator, caught_up) = match read {
            Ok(Read::Records {
                records,
                next_iterator,
                caught_up,
            }) => (records, next_iterator, caught_up),
            Ok(Read::IteratorLost(code)) => {
                self.log(&format!(
                    "shard={id} {code}: getting a new iterator from {}",
                    shard.start
                ));
                return Ok(false);
            }
            Ok(Read::Throttled) => {
                shard.iterator = Some(iterator);
                shard.not_before = Instant::now() + Duration::from_secs(1);
                return Ok(false);
            }
            Err(error) => return Err(self.stop(error)),
        };
        if records.is_empty() {
            match &next_iterator {
                None => {
                    shard.done = true;
                    self.log(&format!("shard={id} closed and fully processed"));
                }
                Some(_) => shard.caught_up = caught_up,
            }
            shard.iterator = next_iterator;
            return Ok(false);
        }
        shard.caught_up = false;
        self.deliver(id, shard, &records, next_iterator).await?;
        Ok(true)
    }

    async fn deliver(
        &self,
        id: &str,
        shard: &mut Shard,
        records: &[S::Record],
        next_iterator: Option<String>,
    ) -> Result<(), Stop> {
        let sequence_numbers: Vec<&str> = records.iter().map(S::sequence_number).collect();
        let (first, last) = match (sequence_numbers.first(), sequence_numbers.last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => return Ok(()),
        };
        let invoked = self.invoke(id, records, &sequence_numbers).await;
        let prefix = format!("shard={id} records={} seq={first}..{last}", records.len());
        if let Invoked::Unreachable(reason) = &invoked {
            // The emulator is not there (not started yet, restarting): not the function's
            // fault, so not an attempt. The same batch is read again later.
            if self.settings.once {
                return Err(Stop::Fatal(format!(
                    "function endpoint unreachable: {reason}"
                )));
            }
            self.log(&format!(
                "{prefix} function endpoint unreachable ({reason}); retrying in 2s"
            ));
            shard.not_before = Instant::now() + Duration::from_secs(2);
            return Ok(());
        }
        let decision = decide(
            &shard.start,
            &sequence_numbers,
            &invoked,
            shard.failed_attempts,
            self.settings.max_retries,
            self.settings.interval,
        );
        match decision {
            Decision::Next => {
                shard.start = Position::After(last.to_owned());
                shard.failed_attempts = 0;
                shard.done = next_iterator.is_none();
                shard.iterator = next_iterator;
                self.log(&format!("{prefix} failures=0 next={}", shard.start));
            }
            Decision::Retry {
                from,
                attempts,
                delay,
                what,
            } => {
                shard.last_error = what.clone();
                shard.start = from;
                shard.failed_attempts = attempts;
                shard.not_before = Instant::now() + delay;
                self.log(&format!(
                    "{prefix} {what} retry={attempts}/{} in {:.1}s from {}",
                    self.settings.max_retries,
                    delay.as_secs_f64(),
                    shard.start
                ));
            }
            Decision::GiveUp {
                failed_from,
                attempts,
                what,
            } => {
                shard.last_error = what.clone();
                let failed = &records[failed_from..];
                self.dead_letter(id, shard, failed, attempts)
                    .map_err(|e| Stop::Fatal(format!("cannot write the dead-letter file: {e}")))?;
                shard.start = Position::After(last.to_owned());
                shard.failed_attempts = 0;
                self.log(&format!(
                    "{prefix} {what} attempts exhausted; next={}",
                    shard.start
                ));
            }
        }
        Ok(())
    }

    fn dead_letter(
        &self,
        id: &str,
        shard: &Shard,
        records: &[S::Record],
        attempts: u32,
    ) -> std::io::Result<()> {
        let path = &self.settings.dlq;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let now = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        for record in records {
            let mut entry = self.source.dead_letter_fields(record);
            let place = json!({
                "time": now,
                "function": self.settings.function,
                "eventSourceARN": self.source.source_arn(),
                "shardId": id,
                "attempts": attempts,
                "reason": shard.last_error,
            });
            if let Value::Object(place) = place {
                entry.extend(place);
            }
            writeln!(out, "{}", Value::Object(entry))?;
        }
        self.log(&format!(
            "!!! GAVE UP on {} record(s) of shard={id} seq={}..{} after {attempts} failed attempts ({}); written to {} !!!",
            records.len(),
            records.first().map_or("", S::sequence_number),
            records.last().map_or("", S::sequence_number),
            shard.last_error,
            path.display()
        ));
        Ok(())
    }

    async fn invoke(&self, id: &str, records: &[S::Record], batch: &[&str]) -> Invoked {
        let body = match self.source.event(id, records) {
            Ok(body) => body,
            Err(e) => return Invoked::Error(format!("cannot encode the event: {e}")),
        };
        let url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.settings.lambda_url.trim_end_matches('/'),
            self.settings.function
        );
        let timeout = self.settings.invoke_timeout;
        match post(&url, body, timeout).await {
            Ok((status, text)) if (200..300).contains(&status) => classify(&text, batch),
            // cargo lambda watch answers a function error (the runtime's /error call) with
            // 500 and the runtime's {"errorType", "errorMessage"}.
            Ok((status, text)) => Invoked::Error(format!("HTTP {status}: {}", short(&text))),
            Err(invoked) => invoked,
        }
    }

    /// Polls until SIGTERM, or with `--once` until every shard has no more records.
    pub async fn run(&mut self) -> Result<(), String> {
        let s = &self.settings;
        self.log(&format!(
            "{} -> function={} at {}; batch-size={} interval={}s max-retries={} from={}{}",
            self.source.describe(),
            s.function,
            s.lambda_url,
            s.batch_size,
            s.interval.as_secs_f64(),
            s.max_retries,
            if s.from_latest {
                "LATEST"
            } else {
                "TRIM_HORIZON"
            },
            if s.once { " once" } else { "" }
        ));
        let mut first = true;
        let mut missing_logged = false;
        loop {
            match self.round(&mut first).await {
                Ok(busy) => {
                    missing_logged = false;
                    if self.settings.once
                        && !self.shards.is_empty()
                        && self
                            .shards
                            .values()
                            .all(|s| s.done || (s.caught_up && s.failed_attempts == 0))
                    {
                        self.log("--once: every shard has no more records; exiting");
                        return Ok(());
                    }
                    if !busy {
                        tokio::time::sleep(self.settings.interval).await;
                    }
                }
                Err(Stop::Fatal(reason)) => return Err(reason),
                Err(stop) => {
                    if let Stop::StreamMissing = stop {
                        // Not created yet, or its server restarted: forget every
                        // checkpoint and start over once it exists.
                        if !missing_logged {
                            self.log(&format!(
                                "{} not found; waiting for it",
                                self.source.describe()
                            ));
                            missing_logged = true;
                        }
                        self.shards.clear();
                        first = true;
                    }
                    for shard in self.shards.values_mut() {
                        shard.iterator = None;
                    }
                    self.next_refresh = Instant::now();
                    tokio::time::sleep(self.settings.interval.max(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// One pass over the shards; true if any delivered records.
    async fn round(&mut self, first: &mut bool) -> Result<bool, Stop> {
        if *first || Instant::now() >= self.next_refresh {
            let was_first = *first;
            self.refresh_shards(first).await?;
            if was_first || *first {
                let ids: Vec<&str> = self.shards.keys().map(String::as_str).collect();
                self.log(&format!(
                    "shards: {}",
                    if ids.is_empty() {
                        "(none)".to_owned()
                    } else {
                        ids.join(", ")
                    }
                ));
            }
            *first = false;
        }
        let mut busy = false;
        let ids: Vec<String> = self.shards.keys().cloned().collect();
        for id in ids {
            let Some(mut shard) = self.shards.remove(&id) else {
                continue;
            };
            let parent_pending = shard
                .parent
                .as_ref()
                .and_then(|parent| self.shards.get(parent))
                .is_some_and(|parent| !parent.done);
            let result = if shard.done || parent_pending || Instant::now() < shard.not_before {
                Ok(false)
            } else {
                self.poll(&id, &mut shard).await
            };
            self.shards.insert(id, shard);
            busy |= result?;
        }
        Ok(busy)
    }
}

/// One POST: the status and the body, or why there was no answer.
async fn post(url: &str, body: Vec<u8>, timeout: Duration) -> Result<(u16, String), Invoked> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Invoked::Error(format!("cannot build an HTTP client: {e}")))?;
    let response = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|error| match error.is_connect() {
            true => Invoked::Unreachable(format!("connection failed: {error}")),
            false => Invoked::Error(format!("invoke failed: {error}")),
        })?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| Invoked::Error(format!("cannot read the answer: {e}")))?;
    Ok((status, text))
}

/// SIGTERM and SIGINT end the poller at once with status 0: its checkpoints live in memory
/// only, and whatever it was delivering comes again after a restart (the ledger, and
/// Segment's messageId, make that harmless).
pub fn exit_on_termination() {
    extern "C" fn exit_now(_signal: libc::c_int) {
        // SAFETY: `_exit` is async-signal-safe; nothing is left to flush.
        unsafe { libc::_exit(0) }
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only calls an async-signal-safe function.
        unsafe {
            libc::signal(
                signal,
                exit_now as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Runs `poller` and turns its end into the process's exit status.
pub async fn exit_status<S: Source>(mut poller: Poller<S>) -> std::process::ExitCode {
    match poller.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(reason) => {
            log_as(S::NAME, &format!("error: {reason}"));
            std::process::ExitCode::from(1)
        }
    }
}
