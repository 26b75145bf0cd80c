use lambda_runtime::{Error, LambdaEvent, service_fn};
use segment_forwarder::{Forwarder, handle};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // The write key is read here, once per container.
    let forwarder = Forwarder::load(&aws).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| {
        handle(&forwarder, event)
    }))
    .await
}
