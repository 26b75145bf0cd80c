use archiver::{Archivist, handle};
use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_core::config::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = sdk_config(Caller::Function).await;
    let archivist = Archivist::from_env(&aws, &Env::process())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        handle(&archivist, event)
    }))
    .await
}
