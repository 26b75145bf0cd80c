//! The shared core of the KORE / Twilio Super SIM ingestion backend.
//!
//! - [`event`]: CloudEvents (Connection Events, test events) from Kinesis records and webhook
//!   bodies, normalized into one typed [`event::ConnectionEvent`].
//! - [`callback`]: form-urlencoded callbacks (SIM updates, SMS/IP Commands, eSIM profiles).
//! - [`signature`]: `Kore-Signature` and `X-Twilio-Signature` verification.
//! - [`delivery`]: how an input arrived and what became of it.
//! - [`usage`]: the booking rule and usage records as billing asks for them.
//! - [`ledger`]: the exactly-once usage ledger on DynamoDB.
//! - [`aws`]: the AWS SDK configuration of every process, in one place.
//! - [`deadline`]: when a function stops starting work within its invocation.
//! - [`metrics`]: CloudWatch Embedded Metric Format.
//! - [`spill`]: webhook deliveries handed to the Kinesis stream when storage fails.
//!
//! Nothing here knows about Lambda; the function crates are thin adapters around it.

#[cfg(feature = "ledger")]
pub mod aws;
pub mod callback;
#[cfg(feature = "ledger")]
pub mod deadline;
pub mod delivery;
pub mod event;
#[cfg(feature = "ledger")]
pub mod ledger;
pub mod metrics;
pub mod signature;
pub mod spill;
pub mod usage;
