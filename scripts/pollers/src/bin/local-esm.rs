//! `local-esm`: a local Kinesis event source mapping, the part of AWS Lambda that polls a
//! stream and invokes a function, for the local stack (kinesalite and `cargo lambda watch`).
//! `scripts/dev up` runs it through `scripts/local-esm`.
//!
//! It follows Lambda's Kinesis event source mapping with `ReportBatchItemFailures` (no
//! bisecting, no batching window, one batch in flight per shard; the loop is `poller.rs`,
//! shared with `local-ddb-esm`):
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

use std::path::PathBuf;

use aws_lambda_events::encodings::SecondTimestamp;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use base64::Engine;
use chrono::{DateTime, Utc};
use clap::Parser;
use kore_ingest_aws::sdk::{Caller, loader};
use local_pollers::decide::Position;
use local_pollers::poller::{
    self, Listing, PollArgs, Poller, REGION, Read, Settings, ShardInfo, Source, SourceError, env_or,
};
use serde_json::{Map, Value, json};

const ACCOUNT: &str = "000000000000";

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
    /// Dead-letter file, JSON lines [default: .local/local-esm-dlq.jsonl].
    #[arg(long, value_name = "FILE")]
    dlq: Option<PathBuf>,
    #[command(flatten)]
    poll: PollArgs,
}

/// A Kinesis stream, read with aws-sdk-kinesis.
struct KinesisStream {
    kinesis: Client,
    stream: String,
    endpoint: String,
}

/// When Kinesis received the record.
fn arrival(record: &Record) -> DateTime<Utc> {
    record
        .approximate_arrival_timestamp()
        .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

impl Source for KinesisStream {
    type Record = Record;
    const NAME: &'static str = "local-esm";

    fn describe(&self) -> String {
        format!("stream {} at {}", self.stream, self.endpoint)
    }

    fn source_arn(&self) -> String {
        format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{}", self.stream)
    }

    async fn list(&mut self) -> Result<Listing, SourceError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = self.kinesis.list_shards();
            call = match &token {
                Some(token) => call.next_token(token),
                None => call.stream_name(&self.stream),
            };
            let page = call
                .send()
                .await
                .map_err(|e| SourceError::from_sdk("Kinesis", e))?;
            shards.extend(page.shards().iter().map(|shard| ShardInfo {
                id: shard.shard_id().to_owned(),
                parent: shard.parent_shard_id().map(str::to_owned),
            }));
            match page.next_token() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        // A stream created again under the same name shows as rejected checkpoints.
        Ok(Listing {
            shards,
            new_stream: false,
        })
    }

    async fn iterator(&self, shard: &str, start: &Position) -> Result<Option<String>, SourceError> {
        let (kind, sequence) = start.iterator_type();
        let checkpoint = sequence.is_some();
        match self
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::from(kind))
            .set_starting_sequence_number(sequence.map(str::to_owned))
            .send()
            .await
        {
            Ok(output) => Ok(Some(output.shard_iterator().unwrap_or_default().to_owned())),
            // kinesalite restarted and the stream was created again under the same name.
            Err(error) if checkpoint && error.code() == Some("InvalidArgumentException") => {
                Ok(None)
            }
            Err(error) => Err(SourceError::from_sdk("Kinesis", error)),
        }
    }

    async fn read(&self, iterator: &str, limit: i32) -> Result<Read<Record>, SourceError> {
        match self
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
        {
            Ok(page) => Ok(Read::Records {
                caught_up: page.millis_behind_latest().unwrap_or(0) == 0,
                next_iterator: page.next_shard_iterator().map(str::to_owned),
                records: page.records,
            }),
            Err(error) => match error.code().unwrap_or_default() {
                // Iterators expire after 5 minutes.
                code @ ("ExpiredIteratorException" | "InvalidArgumentException") => {
                    Ok(Read::IteratorLost(code.to_owned()))
                }
                "ProvisionedThroughputExceededException" | "LimitExceededException" => {
                    Ok(Read::Throttled)
                }
                _ => Err(SourceError::from_sdk("Kinesis", error)),
            },
        }
    }

    fn sequence_number(record: &Record) -> &str {
        record.sequence_number()
    }

    fn event(&self, shard: &str, records: &[Record]) -> serde_json::Result<Vec<u8>> {
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
                r.event_id = Some(format!("{shard}:{}", record.sequence_number()));
                r.event_name = Some("aws:kinesis:record".into());
                r.invoke_identity_arn = Some(format!("arn:aws:iam::{ACCOUNT}:role/local"));
                r.aws_region = Some(REGION.into());
                r.event_source_arn = Some(self.source_arn());
                r
            })
            .collect();
        serde_json::to_vec(&event)
    }

    fn dead_letter_fields(&self, record: &Record) -> Map<String, Value> {
        let fields = json!({
            "sequenceNumber": record.sequence_number(),
            "partitionKey": record.partition_key(),
            "approximateArrivalTimestamp": arrival(record).timestamp_millis() as f64 / 1000.0,
            "data": base64::engine::general_purpose::STANDARD.encode(record.data().as_ref()),
        });
        match fields {
            Value::Object(fields) => fields,
            _ => Map::new(),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    poller::exit_on_termination();
    let stream = args
        .stream
        .unwrap_or_else(|| env_or("STREAM_NAME", "kore-events-local"));
    let endpoint = args
        .kinesis_endpoint
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", env_or("KINESIS_PORT", "4567")));
    let dlq = args
        .dlq
        .unwrap_or_else(|| poller::local_file("local-esm-dlq.jsonl"));
    // kinesalite accepts any credentials: never pick up real ones.
    let aws = loader(Caller::Tool)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("local", "local", None, None, "local-esm"))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let source = KinesisStream {
        kinesis: Client::new(&aws),
        stream,
        endpoint,
    };
    poller::exit_status(Poller::new(
        Settings::new(args.poll, args.function, dlq),
        source,
    ))
    .await
}
