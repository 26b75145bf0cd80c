//! The local event source mappings of the local stack, the part of AWS Lambda that polls a
//! stream and invokes a function: `local-esm` reads the Kinesis stream (kinesalite),
//! `local-ddb-esm` the ledger table's DynamoDB stream, both with the same loop
//! ([`poller`]) and the same reading of the function's answer ([`decide`]).

pub mod decide;
pub mod poller;
pub mod settings;
pub mod source;
