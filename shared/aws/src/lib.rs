//! The AWS side of the ingestion backend, behind the domain's port
//! (`kore_ingest_core::port::Ledger`):
//!
//! - [`ledger`]: the exactly-once usage ledger on DynamoDB (keys and items, the write path,
//!   the read path, quarantine, callbacks, closed periods, rebuild);
//! - [`bus`]: the customer's event bus (EventBridge), with failed entries sent again;
//! - [`sdk`]: the AWS SDK configuration of every process, in one place;
//! - [`secrets`]: reading a secret from Secrets Manager;
//! - [`archive`] (feature `archive`): settled days sealed into S3 or a folder.

#[cfg(feature = "archive")]
pub mod archive;
pub mod bus;
pub mod ledger;
pub mod sdk;
pub mod secrets;
