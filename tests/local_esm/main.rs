//! `local-esm`: a local Kinesis event source mapping, the part of AWS Lambda that polls a
//! stream and invokes a function, for the local stack (kinesalite and `cargo lambda watch`).
//! `scripts/dev up` runs it through `scripts/local-esm`.
//!
//! It follows Lambda's Kinesis event source mapping with `ReportBatchItemFailures` (no
//! bisecting, no batching window, one batch in flight per shard):
//! - a batch is one `GetRecords` call (at most `--batch-size` records) of one shard, sent as
//!   `aws_lambda_events`' own `KinesisEvent`;
//! - the answer is read as its `KinesisEventResponse`: when `batchItemFailures` lists sequence
//!   numbers, polling restarts AT the lowest one, in the order the consumer itself uses
//!   (`kinesis_consumer::sequence_order`), so that record and every later one come again;
//! - the whole batch is retried when the invocation fails (HTTP error, function error, an
//!   answer that is not a `KinesisEventResponse`, or an item identifier that is empty or not
//!   a sequence number of the batch);
//! - after `--max-retries` failed retries from the same position, the records that would be
//!   retried go to the `--dlq` file (one JSON line each, like an on-failure destination but
//!   with the data) and polling moves past the batch.
//!
//! Checkpoints live in memory only.

mod decide;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::encodings::SecondTimestamp;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use base64::Engine;
use chrono::{DateTime, Utc};
use clap::Parser;
use decide::{Decision, Invoked, Position, classify, decide};
use kore_ingest_shared::aws::{Caller, loader};
use tokio::time::Instant;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";
/// GetRecords' own limit, and Lambda's largest batch for Kinesis.
const MAX_BATCH: i32 = 10_000;
/// How often new shards (resharding) are looked for.
const SHARD_REFRESH: Duration = Duration::from_secs(10);

const AFTER_HELP: &str = "\
Checkpoints are kept in memory only: after a restart the stream is read again from
TRIM_HORIZON (or only new records with --from-latest). That is harmless for
kinesis-consumer because the usage ledger is idempotent (a re-delivered event is stored
as a duplicate, not counted twice).

Exit status: 0 on SIGTERM/SIGINT, or with --once when every shard has no more records;
1 on a fatal error (with --once: Kinesis or the function endpoint unreachable).";

/// Local Kinesis event source mapping: polls a kinesalite stream shard by shard and invokes
/// a function served by `cargo lambda watch` with Lambda KinesisEvent batches, honouring
/// ReportBatchItemFailures (restart at the lowest reported sequence number; whole-batch
/// retry on function error), with bounded retries and a dead-letter file.
#[derive(Debug, Parser)]
#[command(name = "local-esm", bin_name = "scripts/local-esm", after_help = AFTER_HELP)]
struct Args {
    /// Stream name [default: $STREAM_NAME or kore-events-local].
    #[arg(long)]
    stream: Option<String>,
    /// Function (binary) name to invoke.
    #[arg(long, default_value = "kinesis-consumer")]
    function: String,
    /// Kinesis endpoint [default: http://127.0.0.1:$KINESIS_PORT, port 4567].
    #[arg(long, value_name = "URL")]
    kinesis_endpoint: Option<String>,
    /// cargo lambda watch address [default: http://127.0.0.1:$LAMBDA_PORT, port 9000].
    #[arg(long, value_name = "URL")]
    lambda_url: Option<String>,
    /// Records per invocation, 1 to 10000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=i64::from(MAX_BATCH)))]
    batch_size: i32,
    /// Seconds between polls of an idle shard; retries back off from it, doubling up to
    /// 10 s.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5, value_parser = positive_seconds)]
    interval: f64,
    /// Retries from the same starting position after a failed invocation, before the
    /// records go to the dead-letter file.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// Start at LATEST (only new records) instead of TRIM_HORIZON.
    #[arg(long)]
    from_latest: bool,
    /// Exit 0 once every shard has no more records (for tests).
    #[arg(long)]
    once: bool,
    /// Dead-letter file, JSON lines [default: .local/local-esm-dlq.jsonl].
    #[arg(long, value_name = "FILE")]
    dlq: Option<PathBuf>,
    /// Seconds to wait for one invocation; the first one compiles the function.
    #[arg(long, value_name = "SECONDS", default_value_t = 900.0, value_parser = positive_seconds)]
    invoke_timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err("must be a number of seconds > 0".into()),
    }
}

/// The settings, with the defaults that come from the environment filled in.
struct Settings {
    stream: String,
    function: String,
    kinesis_endpoint: String,
    lambda_url: String,
    batch_size: i32,
    interval: Duration,
    max_retries: u32,
    from_latest: bool,
    once: bool,
    dlq: PathBuf,
    invoke_timeout: Duration,
    stream_arn: String,
}

impl Settings {
    fn from(args: Args) -> Self {
        let env = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let stream = args
            .stream
            .unwrap_or_else(|| env("STREAM_NAME", "kore-events-local"));
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        Settings {
            stream_arn: format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}"),
            stream,
            function: args.function,
            kinesis_endpoint: args
                .kinesis_endpoint
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", env("KINESIS_PORT", "4567"))),
            lambda_url: args
                .lambda_url
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", env("LAMBDA_PORT", "9000"))),
            batch_size: args.batch_size,
            interval: Duration::from_secs_f64(args.interval),
            max_retries: args.max_retries,
            from_latest: args.from_latest,
            once: args.once,
            dlq: args
                .dlq
                .unwrap_or_else(|| repo.join(".local").join("local-esm-dlq.jsonl")),
            invoke_timeout: Duration::from_secs_f64(args.invoke_timeout),
        }
    }
}

fn log(message: &str) {
    eprintln!(
        "{} [local-esm] {message}",
        chrono::Local::now().format("%H:%M:%S")
    );
}

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
    /// The last GetRecords returned nothing.
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

struct Esm {
    settings: Settings,
    kinesis: Client,
    shards: BTreeMap<String, Shard>,
    next_refresh: Instant,
}

impl Esm {
    async fn refresh_shards(&mut self, first: bool) -> Result<(), Stop> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = self.kinesis.list_shards();
            call = match &token {
                Some(token) => call.next_token(token),
                None => call.stream_name(&self.settings.stream),
            };
            let page = call.send().await.map_err(|e| self.kinesis_error(e))?;
            found.extend(page.shards().iter().cloned());
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        for shard in found {
            let id = shard.shard_id().to_owned();
            if self.shards.contains_key(&id) {
                continue;
            }
            // Shards that appear later (resharding) are new: read from their start.
            let start = if first && self.settings.from_latest {
                Position::Latest
            } else {
                Position::TrimHorizon
            };
            if !first {
                log(&format!(
                    "new shard {id} (parent {})",
                    shard.parent_shard_id().unwrap_or("none")
                ));
            }
            self.shards.insert(
                id,
                Shard {
                    parent: shard.parent_shard_id().map(str::to_owned),
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

    /// A Kinesis error as what to do about it.
    fn kinesis_error<E, R>(&self, error: SdkError<E, R>) -> Stop
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = error.code().unwrap_or_default().to_owned();
        let text = DisplayErrorContext(&error).to_string();
        if self.settings.once {
            return Stop::Fatal(format!("Kinesis error: {text}"));
        }
        if code == "ResourceNotFoundException" {
            return Stop::StreamMissing;
        }
        log(&format!("Kinesis error: {text}; retrying"));
        Stop::Pause
    }

    async fn iterator(&self, id: &str, shard: &mut Shard) -> Result<String, Stop> {
        let (kind, sequence) = match &shard.start {
            Position::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Position::Latest => (ShardIteratorType::Latest, None),
            Position::At(seq) => (ShardIteratorType::AtSequenceNumber, Some(seq.clone())),
            Position::After(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
        };
        let call = |kind: ShardIteratorType, sequence: Option<String>| {
            self.kinesis
                .get_shard_iterator()
                .stream_name(&self.settings.stream)
                .shard_id(id)
                .shard_iterator_type(kind)
                .set_starting_sequence_number(sequence)
                .send()
        };
        match call(kind, sequence.clone()).await {
            Ok(output) => Ok(output.shard_iterator().unwrap_or_default().to_owned()),
            Err(error)
                if sequence.is_some() && error.code() == Some("InvalidArgumentException") =>
            {
                // The checkpoint is not from this stream: kinesalite restarted and the stream
                // was created again under the same name. Read the new one from its start.
                log(&format!(
                    "shard={id} checkpoint {} rejected; stream recreated? restarting the shard from TRIM_HORIZON",
                    shard.start
                ));
                shard.start = Position::TrimHorizon;
                shard.failed_attempts = 0;
                let output = call(ShardIteratorType::TrimHorizon, None)
                    .await
                    .map_err(|e| self.kinesis_error(e))?;
                Ok(output.shard_iterator().unwrap_or_default().to_owned())
            }
            Err(error) => Err(self.kinesis_error(error)),
        }
    }

    /// Reads and delivers one batch of the shard; true if it held records.
    async fn poll(&self, id: &str, shard: &mut Shard) -> Result<bool, Stop> {
        let iterator = match shard.iterator.take() {
            Some(iterator) => iterator,
            None => self.iterator(id, shard).await?,
        };
        let page = match self
            .kinesis
            .get_records()
            .shard_iterator(&iterator)
            .limit(self.settings.batch_size)
            .send()
            .await
        {
            Ok(page) => page,
            Err(error) => {
                let code = error.code().unwrap_or_default();
                if matches!(
                    code,
                    "ExpiredIteratorException" | "InvalidArgumentException"
                ) {
                    // Iterators expire (5 min): get one again from the checkpoint.
                    log(&format!(
                        "shard={id} {code}: getting a new iterator from {}",
                        shard.start
                    ));
                    return Ok(false);
                }
                if matches!(
                    code,
                    "ProvisionedThroughputExceededException" | "LimitExceededException"
                ) {
                    shard.iterator = Some(iterator);
                    shard.not_before = Instant::now() + Duration::from_secs(1);
                    return Ok(false);
                }
                return Err(self.kinesis_error(error));
            }
        };
        let next_iterator = page.next_shard_iterator().map(str::to_owned);
        let records = page.records();
        if records.is_empty() {
            match &next_iterator {
                None => {
                    shard.done = true;
                    log(&format!("shard={id} closed and fully processed"));
                }
                Some(_) => shard.caught_up = page.millis_behind_latest().unwrap_or(0) == 0,
            }
            shard.iterator = next_iterator;
            return Ok(false);
        }
        shard.caught_up = false;
        self.deliver(id, shard, records, next_iterator).await?;
        Ok(true)
    }

    async fn deliver(
        &self,
        id: &str,
        shard: &mut Shard,
        records: &[Record],
        next_iterator: Option<String>,
    ) -> Result<(), Stop> {
        let sequence_numbers: Vec<&str> = records.iter().map(Record::sequence_number).collect();
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
            log(&format!(
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
                log(&format!("{prefix} failures=0 next={}", shard.start));
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
                log(&format!(
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
                log(&format!(
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
        records: &[Record],
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
            let entry = serde_json::json!({
                "time": now,
                "function": self.settings.function,
                "eventSourceARN": self.settings.stream_arn,
                "shardId": id,
                "sequenceNumber": record.sequence_number(),
                "partitionKey": record.partition_key(),
                "approximateArrivalTimestamp": arrival(record).timestamp_millis() as f64 / 1000.0,
                "data": base64::engine::general_purpose::STANDARD.encode(record.data().as_ref()),
                "attempts": attempts,
                "reason": shard.last_error,
            });
            writeln!(out, "{entry}")?;
        }
        log(&format!(
            "!!! GAVE UP on {} record(s) of shard={id} seq={}..{} after {attempts} failed attempts ({}); written to {} !!!",
            records.len(),
            records.first().map_or("", Record::sequence_number),
            records.last().map_or("", Record::sequence_number),
            shard.last_error,
            path.display()
        ));
        Ok(())
    }

    /// The batch as Lambda sends it.
    fn event(&self, id: &str, records: &[Record]) -> KinesisEvent {
        let mut event = KinesisEvent::default();
        event.records = records
            .iter()
            .map(|record| {
                let mut r = KinesisEventRecord::default();
                r.kinesis.kinesis_schema_version = Some("1.0".into());
                r.kinesis.partition_key = record.partition_key().unwrap_or_default().to_owned();
                r.kinesis.sequence_number = record.sequence_number().to_owned();
                // Base64Data is non_exhaustive: filled through its DerefMut to the bytes.
                *r.kinesis.data = record.data().as_ref().to_vec();
                r.kinesis.approximate_arrival_timestamp = SecondTimestamp(arrival(record));
                r.event_source = Some("aws:kinesis".into());
                r.event_version = Some("1.0".into());
                r.event_id = Some(format!("{id}:{}", record.sequence_number()));
                r.event_name = Some("aws:kinesis:record".into());
                r.invoke_identity_arn = Some(format!("arn:aws:iam::{ACCOUNT}:role/local"));
                r.aws_region = Some(REGION.into());
                r.event_source_arn = Some(self.settings.stream_arn.clone());
                r
            })
            .collect();
        event
    }

    async fn invoke(&self, id: &str, records: &[Record], batch: &[&str]) -> Invoked {
        let body = match serde_json::to_vec(&self.event(id, records)) {
            Ok(body) => body,
            Err(e) => return Invoked::Error(format!("cannot encode the event: {e}")),
        };
        let url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.settings.lambda_url.trim_end_matches('/'),
            self.settings.function
        );
        let timeout = self.settings.invoke_timeout;
        let answer = tokio::task::spawn_blocking(move || post(&url, body, timeout)).await;
        match answer {
            Ok(Ok((status, text))) if (200..300).contains(&status) => classify(&text, batch),
            // cargo lambda watch answers a function error (the runtime's /error call) with
            // 500 and the runtime's {"errorType", "errorMessage"}.
            Ok(Ok((status, text))) => Invoked::Error(format!("HTTP {status}: {}", short(&text))),
            Ok(Err(invoked)) => invoked,
            Err(e) => Invoked::Error(format!("the invocation did not finish: {e}")),
        }
    }

    async fn run(&mut self) -> Result<(), String> {
        let s = &self.settings;
        log(&format!(
            "stream={} at {} -> function={} at {}; batch-size={} interval={}s max-retries={} from={}{}",
            s.stream,
            s.kinesis_endpoint,
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
                        log("--once: every shard has no more records; exiting");
                        return Ok(());
                    }
                    if !busy {
                        tokio::time::sleep(self.settings.interval).await;
                    }
                }
                Err(Stop::Fatal(reason)) => return Err(reason),
                Err(stop) => {
                    if let Stop::StreamMissing = stop {
                        // Not created yet, or kinesalite restarted: forget every checkpoint
                        // and start over once it exists.
                        if !missing_logged {
                            log(&format!(
                                "stream {} not found; waiting for it",
                                self.settings.stream
                            ));
                            missing_logged = true;
                        }
                        self.shards.clear();
                        first = true;
                    }
                    for shard in self.shards.values_mut() {
                        shard.iterator = None;
                    }
                    tokio::time::sleep(self.settings.interval.max(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// One pass over the shards; true if any delivered records.
    async fn round(&mut self, first: &mut bool) -> Result<bool, Stop> {
        if *first || Instant::now() >= self.next_refresh {
            self.refresh_shards(*first).await?;
            if *first {
                let ids: Vec<&str> = self.shards.keys().map(String::as_str).collect();
                log(&format!(
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

/// When Kinesis received the record.
fn arrival(record: &Record) -> DateTime<Utc> {
    record
        .approximate_arrival_timestamp()
        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

/// One blocking POST: the status and the body, or why there was no answer.
fn post(url: &str, body: Vec<u8>, timeout: Duration) -> Result<(u16, String), Invoked> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|error| match error {
            ureq::Error::ConnectionFailed => Invoked::Unreachable("connection failed".into()),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                Invoked::Unreachable(io.to_string())
            }
            other => Invoked::Error(format!("invoke failed: {other}")),
        })?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Invoked::Error(format!("cannot read the answer: {e}")))?;
    Ok((status, text))
}

/// At most 300 characters of an answer, on one line.
fn short(text: &str) -> String {
    let line = text.trim().replace('\n', " ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

/// SIGTERM and SIGINT end the poller at once with status 0: its checkpoints live in memory
/// only, and whatever it was delivering comes again after a restart (the ledger makes that
/// harmless).
fn exit_on_termination() {
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let settings = Settings::from(Args::parse());
    exit_on_termination();
    // kinesalite accepts any credentials: never pick up real ones.
    let aws = loader(Caller::Tool)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("local", "local", None, None, "local-esm"))
        .endpoint_url(&settings.kinesis_endpoint)
        .load()
        .await;
    let mut esm = Esm {
        settings,
        kinesis: Client::new(&aws),
        shards: BTreeMap::new(),
        next_refresh: Instant::now(),
    };
    match esm.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(reason) => {
            log(&format!("error: {reason}"));
            std::process::ExitCode::from(1)
        }
    }
}
