use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_core::config::Env;
use kore_ingest_core::deadline;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use segment_forwarder::{Forwarder, handle};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = sdk_config(Caller::Function).await;
    // The write key is read here, once per container.
    let forwarder = Forwarder::load(&aws, &Env::process()).await?;
    lambda_runtime::run(service_fn(|mut event: LambdaEvent<_>| {
        deadline::replace_emulator_deadline(&mut event.context.deadline);
        handle(&forwarder, event)
    }))
    .await
}
