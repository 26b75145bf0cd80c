//! What a stream must answer for the poller: its shards, an iterator, a page of records, and
//! the records as Lambda's event.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{Map, Value};

use crate::decide::Position;

/// A shard as the stream lists it.
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
}

/// The stream's shards; `new_stream` when the stream is not the one read so far (a table
/// or stream created again), so every checkpoint is forgotten.
pub struct Listing {
    pub shards: Vec<ShardInfo>,
    pub new_stream: bool,
}

/// A failed call to the stream's API: its error code, and the whole message.
pub struct SourceError {
    pub code: String,
    pub text: String,
}

impl SourceError {
    /// An SDK error of `service` (every AWS SDK crate shares smithy's error types).
    pub fn from_sdk<E, R>(service: &str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        SourceError {
            code: error.code().unwrap_or_default().to_owned(),
            text: format!("{service} error: {}", DisplayErrorContext(&error)),
        }
    }
}

/// What one read of a shard gave.
pub enum Read<R> {
    Records {
        records: Vec<R>,
        /// None: a closed shard read to its end.
        next_iterator: Option<String>,
        /// Nothing newer waits in the shard.
        caught_up: bool,
    },
    /// The iterator is no good any more (expired, or its records trimmed): get another
    /// from the checkpoint.
    IteratorLost(String),
    /// Read too often: the same iterator, a second later.
    Throttled,
}

/// A stream that a poller reads: Kinesis, or a DynamoDB table's stream.
// Only this package's two pollers implement it, and each awaits its futures on its own
// main task: no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait Source {
    type Record;
    /// The poller's name in log lines.
    const NAME: &'static str;
    /// For the first log line: what is read, from where.
    fn describe(&self) -> String;
    fn source_arn(&self) -> String;
    async fn list(&mut self) -> Result<Listing, SourceError>;
    /// An iterator from `start`; `Ok(None)` when the stream rejects the checkpoint as not
    /// its own (the stream was created again under the same name).
    async fn iterator(&self, shard: &str, start: &Position) -> Result<Option<String>, SourceError>;
    async fn read(&self, iterator: &str, limit: i32) -> Result<Read<Self::Record>, SourceError>;
    fn sequence_number(record: &Self::Record) -> &str;
    /// The batch as Lambda sends it to the function.
    fn event(&self, shard: &str, records: &[Self::Record]) -> serde_json::Result<Vec<u8>>;
    /// What the dead-letter line keeps of a record, besides where and why.
    fn dead_letter_fields(&self, record: &Self::Record) -> Map<String, Value>;
    /// The stream is not there (yet, or any more), by the error's code.
    fn is_missing(error: &SourceError) -> bool {
        error.code == "ResourceNotFoundException"
    }
}
