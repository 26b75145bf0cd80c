//! What the tests share, one module per concern:
//!
//! - [`bus`]: the run's EventBridge emulator: the stack's bus and the queue that copies it;
//! - [`dynamodb`]: the run's DynamoDB Local, fresh tables, reads of a ledger;
//! - [`events`]: events as KORE and Twilio send them, and Lambda's Kinesis events;
//! - [`requests`]: Function URL requests and signatures;
//! - [`secrets_manager`]: a Secrets Manager answering one secret;
//! - [`fake_ledger`]: a scripted fake of the ledger port, for the handlers' own tests;
//! - [`faults`], [`script`]: HTTP layers that throttle, hold, fail or record requests;
//! - [`stack`]: the local stack `scripts/test` runs (endpoints, the webhook's URL);
//! - [`segment`]: the Segment stand-in process (`scripts/lib/segment_standin.py`);
//! - [`streams`]: the ledger table's stream as Lambda delivers it.

pub mod archive;
pub mod bus;
pub mod dynamodb;
pub mod events;
pub mod fake_ledger;
pub mod faults;
pub mod requests;
pub mod script;
pub mod secrets_manager;
pub mod segment;
pub mod stack;
pub mod streams;

pub use dynamodb::{
    LedgerExt, SimUsage, dynamodb_endpoint, fresh_ledger, local_client, store_deliveries,
    sweep_expired,
};
pub use events::{
    SampleEvent, kinesis, kinesis_event, kore_batch, kore_body, parse_item, parse_one,
    sequence_number, webhook, window_bytes,
};
pub use requests::{function_url_request, kore_signed_post, twilio_json_signature};
// The ledger's port, which the tests call on the DynamoDB ledger and on the fake alike.
pub use kore_ingest_core::port::Ledger;
