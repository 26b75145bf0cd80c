//! The AWS SDK configuration of every process of the project, built in one place: the
//! functions, `kore-usage` and the local tools load it the standard way (environment,
//! profiles, `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_KINESIS` for the local stack)
//! and differ only in how long they wait.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};

/// Who calls AWS, which decides the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A Lambda function: a hung call must fail fast enough to be reported as retryable
    /// within the invocation (the webhook has 4 s in all, the consumer its deadline margin).
    Function,
    /// An operator's tool (`kore-usage`, the local Kinesis poller): a connection that cannot
    /// be made fails within seconds, but a long query (a month of rollups) may take its time.
    Tool,
}

impl Caller {
    fn timeouts(self) -> TimeoutConfig {
        let builder = TimeoutConfig::builder();
        match self {
            Caller::Function => builder
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(10)),
            Caller::Tool => builder
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(30)),
        }
        .build()
    }
}

/// The SDK configuration for `caller`, loaded the standard way.
pub async fn sdk_config(caller: Caller) -> SdkConfig {
    loader(caller).load().await
}

/// [`sdk_config`]'s loader, for a tool that sets more before loading (the local Kinesis
/// poller: kinesalite's endpoint and throwaway credentials).
pub fn loader(caller: Caller) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(caller.timeouts())
        // The SDK's standard retries (throttling, transient errors), three attempts for
        // everyone: the ledger adds its own for transaction conflicts, and the event source
        // mapping or the sender retries whatever still fails.
        .retry_config(RetryConfig::standard().with_max_attempts(3))
}
