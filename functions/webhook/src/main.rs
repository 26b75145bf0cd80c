use kore_ingest_shared::ledger::UsageLedger;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use webhook::{Webhook, WebhookConfig, handle};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let webhook = Webhook {
        ledger: UsageLedger::from_env().await?,
        config: WebhookConfig::load(&aws).await?,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<_>| handle(&webhook, event))).await
}
