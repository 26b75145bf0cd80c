use std::time::{Duration, SystemTime};

use kinesis_consumer::{Consumer, deadline_margin};
use kore_ingest_shared::aws::{Caller, sdk_config};
use kore_ingest_shared::ledger::UsageLedger;
use lambda_runtime::{Error, LambdaEvent, service_fn};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let consumer = Consumer {
        ledger: UsageLedger::from_sdk_config(&sdk_config(Caller::Function).await)?,
        deadline_margin: deadline_margin(std::env::var("DEADLINE_MARGIN_MS").ok().as_deref())?,
    };
    lambda_runtime::run(service_fn(|event| {
        consumer.handle(emulator_deadline(event))
    }))
    .await
}

/// Lambda's deadline is always ahead when an invocation starts. `cargo lambda watch` (the
/// local stack) sends one that is already behind, which would refuse every write: such a
/// deadline becomes Lambda's longest timeout, 15 minutes from now.
fn emulator_deadline<T>(mut event: LambdaEvent<T>) -> LambdaEvent<T> {
    if event.context.deadline() <= SystemTime::now() {
        let received = event.context.deadline;
        let lambda_max = SystemTime::now() + Duration::from_secs(15 * 60);
        event.context.deadline = lambda_max
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        tracing::warn!(
            received,
            "the invocation deadline is already past at the start (an emulator's); using 15 minutes"
        );
    }
    event
}
