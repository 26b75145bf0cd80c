use kinesis_consumer::handle;
use kore_ingest_shared::ledger::UsageLedger;
use lambda_runtime::{Error, LambdaEvent, service_fn};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let ledger = UsageLedger::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| handle(&ledger, event))).await
}
