use alerts::{Evaluator, handle};
use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_core::config::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = sdk_config(Caller::Function).await;
    let evaluator = Evaluator::from_env(&aws, &Env::process())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        handle(&evaluator, event)
    }))
    .await
}
