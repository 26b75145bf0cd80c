//! `local-ddb-esm`: a local DynamoDB Streams event source mapping, the part of AWS Lambda
//! that reads a table's stream and invokes a function with DynamoDB stream events, for the
//! local stack (DynamoDB Local, which serves DynamoDB Streams, and `cargo lambda watch`).
//! `scripts/dev up` runs it through `scripts/local-ddb-esm` when `SEGMENT_LOCAL=1`.
//!
//! The loop is `poller.rs`, the one `local-esm` runs on Kinesis, so both follow Lambda's
//! `ReportBatchItemFailures` the same way: restart at the lowest reported sequence number
//! (numeric order, as the consumer's own code orders them), whole-batch retry when the
//! invocation fails, bounded retries, then the dead-letter file. No filter criteria: every
//! record is delivered and the function filters. A batch is sent as `aws_lambda_events`'
//! own DynamoDB `Event`, images in DynamoDB JSON as Lambda writes them.

use std::path::PathBuf;

use aws_lambda_events::event::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_sdk_dynamodbstreams::Client as Streams;
use aws_sdk_dynamodbstreams::config::{Credentials, Region};
use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use chrono::{DateTime, Utc};
use clap::Parser;
use kore_ingest_aws::sdk::{Caller, loader};
use local_pollers::decide::Position;
use local_pollers::poller::{
    self, Listing, PollArgs, Poller, REGION, Read, Settings, ShardInfo, Source, SourceError, env_or,
};
use serde_json::{Map, Value};

/// The code for a table without a stream (not an AWS error code): wait for it.
const NO_STREAM: &str = "NoStream";

const AFTER_HELP: &str = "\
Checkpoints are kept in memory only: after a restart the stream is read again from
TRIM_HORIZON (or only new records with --from-latest). That is harmless for
segment-forwarder: its calls carry the event's key as messageId, which Segment
de-duplicates on.

Exit status: 0 on SIGTERM/SIGINT, or with --once when every shard has no more records;
1 on a fatal error (with --once: the stream or the function endpoint unreachable).";

/// Local DynamoDB Streams event source mapping: reads a DynamoDB Local table's stream shard
/// by shard and invokes a function served by `cargo lambda watch` with Lambda DynamoDB
/// stream events, honouring ReportBatchItemFailures (restart at the lowest reported
/// sequence number; whole-batch retry on function error), with bounded retries and a
/// dead-letter file.
#[derive(Debug, Parser)]
#[command(name = "local-ddb-esm", bin_name = "scripts/local-ddb-esm", after_help = AFTER_HELP)]
struct Args {
    /// The table whose stream is read [default: $TABLE_NAME or kore-usage-local].
    #[arg(long)]
    table: Option<String>,
    /// Function (binary) name to invoke.
    #[arg(long, default_value = "segment-forwarder")]
    function: String,
    /// DynamoDB Local [default: http://127.0.0.1:$DYNAMODB_PORT, port 8000].
    #[arg(long, value_name = "URL")]
    dynamodb_endpoint: Option<String>,
    /// Dead-letter file, JSON lines [default: .local/local-ddb-esm-dlq.jsonl].
    #[arg(long, value_name = "FILE")]
    dlq: Option<PathBuf>,
    #[command(flatten)]
    poll: PollArgs,
}

/// A table's stream on DynamoDB Local: the table names the stream, the streams API reads it.
struct TableStream {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: Streams,
    table: String,
    endpoint: String,
    /// The stream read so far; a table created again has a new one.
    stream_arn: String,
}

/// The record as Lambda puts it into the event.
fn lambda_record(record: &Record, stream_arn: &str) -> EventRecord {
    let mut change = StreamRecord::default();
    if let Some(stream) = record.dynamodb() {
        change.approximate_creation_date_time = stream
            .approximate_creation_date_time()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
            .unwrap_or_else(Utc::now);
        change.keys = stream.keys.clone().unwrap_or_default().into();
        change.new_image = stream.new_image.clone().unwrap_or_default().into();
        change.old_image = stream.old_image.clone().unwrap_or_default().into();
        change.sequence_number = stream.sequence_number().map(str::to_owned);
        change.size_bytes = stream.size_bytes().unwrap_or_default();
        change.stream_view_type = stream.stream_view_type().map(|view| match view.as_str() {
            "NEW_IMAGE" => StreamViewType::NewImage,
            "OLD_IMAGE" => StreamViewType::OldImage,
            "NEW_AND_OLD_IMAGES" => StreamViewType::NewAndOldImages,
            _ => StreamViewType::KeysOnly,
        });
    }
    let mut r = EventRecord::default();
    r.aws_region = REGION.into();
    r.change = change;
    r.event_id = record.event_id().unwrap_or_default().to_owned();
    r.event_name = record
        .event_name()
        .map(|name| name.as_str().to_owned())
        .unwrap_or_default();
    r.event_source = Some("aws:dynamodb".into());
    r.event_version = Some(record.event_version().unwrap_or("1.1").to_owned());
    r.event_source_arn = Some(stream_arn.to_owned());
    r
}

impl Source for TableStream {
    type Record = Record;
    const NAME: &'static str = "local-ddb-esm";

    fn describe(&self) -> String {
        format!("the stream of table {} at {}", self.table, self.endpoint)
    }

    fn source_arn(&self) -> String {
        self.stream_arn.clone()
    }

    fn is_missing(error: &SourceError) -> bool {
        error.code == "ResourceNotFoundException" || error.code == NO_STREAM
    }

    async fn list(&mut self) -> Result<Listing, SourceError> {
        let table = self
            .dynamodb
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| SourceError::from_sdk("DynamoDB", e))?;
        let table = table.table();
        let enabled = table
            .and_then(|t| t.stream_specification())
            .is_some_and(|s| s.stream_enabled());
        let arn = match table.and_then(|t| t.latest_stream_arn()) {
            Some(arn) if enabled => arn.to_owned(),
            _ => {
                return Err(SourceError {
                    code: NO_STREAM.into(),
                    text: format!("table {} has no stream", self.table),
                });
            }
        };
        let new_stream = arn != self.stream_arn;
        self.stream_arn = arn;
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(after.take())
                .send()
                .await
                .map_err(|e| SourceError::from_sdk("DynamoDB Streams", e))?;
            let Some(description) = page.stream_description() else {
                break;
            };
            shards.extend(description.shards().iter().map(|shard| ShardInfo {
                id: shard.shard_id().unwrap_or_default().to_owned(),
                parent: shard.parent_shard_id().map(str::to_owned),
            }));
            match description.last_evaluated_shard_id() {
                Some(last) => after = Some(last.to_owned()),
                None => break,
            }
        }
        Ok(Listing { shards, new_stream })
    }

    async fn iterator(&self, shard: &str, start: &Position) -> Result<Option<String>, SourceError> {
        let (kind, sequence) = start.iterator_type();
        let checkpoint = sequence.is_some();
        match self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::from(kind))
            .set_sequence_number(sequence.map(str::to_owned))
            .send()
            .await
        {
            Ok(output) => Ok(Some(output.shard_iterator().unwrap_or_default().to_owned())),
            // The checkpoint's records are gone (trimmed, or the server restarted).
            Err(error) if checkpoint && error.code() == Some("TrimmedDataAccessException") => {
                Ok(None)
            }
            Err(error) => Err(SourceError::from_sdk("DynamoDB Streams", error)),
        }
    }

    async fn read(&self, iterator: &str, limit: i32) -> Result<Read<Record>, SourceError> {
        // GetRecords on a DynamoDB stream takes at most 1,000.
        match self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.min(1_000))
            .send()
            .await
        {
            Ok(page) => Ok(Read::Records {
                // A stream says nothing of what is behind: an empty read is caught up.
                caught_up: true,
                next_iterator: page.next_shard_iterator,
                records: page.records.unwrap_or_default(),
            }),
            Err(error) => match error.code().unwrap_or_default() {
                code @ ("ExpiredIteratorException" | "TrimmedDataAccessException") => {
                    Ok(Read::IteratorLost(code.to_owned()))
                }
                "LimitExceededException" => Ok(Read::Throttled),
                _ => Err(SourceError::from_sdk("DynamoDB Streams", error)),
            },
        }
    }

    fn sequence_number(record: &Record) -> &str {
        record
            .dynamodb()
            .and_then(|change| change.sequence_number())
            .unwrap_or_default()
    }

    fn event(&self, _shard: &str, records: &[Record]) -> serde_json::Result<Vec<u8>> {
        let mut event = Event::default();
        event.records = records
            .iter()
            .map(|record| lambda_record(record, &self.stream_arn))
            .collect();
        serde_json::to_vec(&event)
    }

    fn dead_letter_fields(&self, record: &Record) -> Map<String, Value> {
        let mut fields = Map::new();
        if let Ok(lambda) = serde_json::to_value(lambda_record(record, &self.stream_arn)) {
            fields.insert("record".into(), lambda);
        }
        fields
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    poller::exit_on_termination();
    let table = args
        .table
        .unwrap_or_else(|| env_or("TABLE_NAME", "kore-usage-local"));
    let endpoint = args
        .dynamodb_endpoint
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", env_or("DYNAMODB_PORT", "8000")));
    let dlq = args
        .dlq
        .unwrap_or_else(|| poller::local_file("local-ddb-esm-dlq.jsonl"));
    // DynamoDB Local accepts any credentials: never pick up real ones.
    let aws = loader(Caller::Tool)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "local",
            "local",
            None,
            None,
            "local-ddb-esm",
        ))
        .endpoint_url(&endpoint)
        .load()
        .await;
    let source = TableStream {
        dynamodb: aws_sdk_dynamodb::Client::new(&aws),
        streams: Streams::new(&aws),
        table,
        endpoint,
        stream_arn: String::new(),
    };
    poller::exit_status(Poller::new(
        Settings::new(args.poll, args.function, dlq),
        source,
    ))
    .await
}
