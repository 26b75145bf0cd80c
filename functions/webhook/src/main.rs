use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use kore_ingest_aws::ledger::UsageLedger;
use kore_ingest_aws::sdk::{Caller, sdk_config};
use kore_ingest_core::config::Env;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use webhook::{Webhook, WebhookConfig, handle};

// Lambda hands a function one invocation at a time: one thread, no cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = sdk_config(Caller::Function).await;
    let env = Env::process();
    let webhook = Webhook {
        ledger: UsageLedger::from_sdk_config(&aws, &env)?,
        config: WebhookConfig::load(&aws, &env).await?,
    };
    lambda_runtime::run(service_fn(|event| handle(&webhook, emulator_path(event)))).await
}

/// `cargo lambda watch` (the local stack) serves a Function URL under
/// `/lambda-url/<function>`, a prefix a Function URL in AWS never has: the request goes on
/// with the path the sender addressed.
fn emulator_path(
    mut event: LambdaEvent<LambdaFunctionUrlRequest>,
) -> LambdaEvent<LambdaFunctionUrlRequest> {
    if let Some(rest) = event
        .payload
        .raw_path
        .as_deref()
        .and_then(|path| path.strip_prefix("/lambda-url/"))
    {
        let path = rest.find('/').map_or("/", |at| &rest[at..]).to_owned();
        event.payload.raw_path = Some(path);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_after(raw_path: &str) -> Option<String> {
        let mut request = LambdaFunctionUrlRequest::default();
        request.raw_path = Some(raw_path.to_owned());
        emulator_path(LambdaEvent::new(request, Default::default()))
            .payload
            .raw_path
    }

    #[test]
    fn the_emulators_prefix_is_removed_and_nothing_else() {
        assert_eq!(
            path_after("/lambda-url/webhook/callbacks/sims").as_deref(),
            Some("/callbacks/sims")
        );
        assert_eq!(path_after("/lambda-url/webhook").as_deref(), Some("/"));
        assert_eq!(path_after("/events").as_deref(), Some("/events"));
        assert_eq!(
            path_after("/callbacks/lambda-url/x").as_deref(),
            Some("/callbacks/lambda-url/x")
        );
    }
}
