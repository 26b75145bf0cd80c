//! The domain of the KORE / Twilio Super SIM ingestion backend: everything that decides
//! what an input means and what is billed, with nothing of AWS in it.
//!
//! - [`event`]: CloudEvents (Connection Events, test events) from Kinesis records and webhook
//!   bodies, normalized into one typed [`event::ConnectionEvent`].
//! - [`callback`]: form-urlencoded callbacks (SIM updates, SMS/IP Commands, eSIM profiles);
//!   [`sim_status`]: a SIM's status by send time, its history and active days;
//!   [`forward`]: a stored callback as an entry on the customer's event bus.
//! - [`alerts`]: alert rules, what stored events mean for them, the alert record.
//! - [`signature`]: `Kore-Signature` and `X-Twilio-Signature` verification.
//! - [`spill`]: webhook deliveries handed to the Kinesis stream when storage fails.
//! - [`delivery`]: how an input arrived and what became of it.
//! - [`copies`]: the exactly-once rule for copies of one event.
//! - [`stored`]: events as the ledger gives them back.
//! - [`quarantine`]: what cannot be stored, kept raw with its reason; [`excerpt`]: input
//!   quoted in a reason, never whole.
//! - [`usage`]: the booking rule, checked sums, usage records, data sessions.
//! - [`closes`]: closed periods, their snapshots and adjustments.
//! - [`time`]: UTC ranges, whole hours and days, the text forms of times.
//! - [`port`]: the ledger as the functions see it (the trait their handlers use), and its
//!   [`error`].
//! - [`config`]: environment variables, read one way; [`secrets`]: the secret documents.
//! - [`deadline`]: when a function stops starting work within its invocation; [`retry`]: the
//!   back-off of what it sends again; [`pack`]: items into requests under a service's limits.
//! - [`metrics`]: CloudWatch Embedded Metric Format.
//!
//! The DynamoDB ledger that implements [`port::Ledger`] is in `kore-ingest-aws`.

pub mod alerts;
pub mod callback;
pub mod closes;
pub mod config;
pub mod copies;
pub mod customers;
pub mod deadline;
pub mod delivery;
mod error;
pub mod event;
pub mod excerpt;
pub mod forward;
pub mod invoice;
pub mod metrics;
pub mod pack;
pub mod plans;
pub mod port;
pub mod push;
pub mod quarantine;
pub mod retention;
pub mod retry;
pub mod secrets;
pub mod sid;
pub mod signature;
pub mod sim_status;
pub mod spill;
pub mod stored;
pub mod time;
pub mod usage;
pub mod zones;
