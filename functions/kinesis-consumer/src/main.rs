use kinesis_consumer::{Consumer, deadline_margin};
use kore_ingest_shared::aws::{Caller, sdk_config};
use kore_ingest_shared::deadline;
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
    lambda_runtime::run(service_fn(|mut event: LambdaEvent<_>| {
        deadline::replace_emulator_deadline(&mut event.context.deadline);
        consumer.handle(event)
    }))
    .await
}
