//! The local stack of this test run (`scripts/test` starts it with `scripts/dev up`): the
//! functions under `cargo lambda watch`, kinesalite, the local event source mapping, and the
//! run's DynamoDB Local.

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use kore_ingest_aws::ledger::{LedgerConfig, UsageLedger};

pub struct LocalStack {
    /// `cargo lambda watch`: the invoke API and the Function URLs.
    pub lambda_url: String,
    pub stream: String,
    pub ledger: UsageLedger,
    pub kinesis: aws_sdk_kinesis::Client,
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test, which starts the local stack")
    })
}

/// A comma-separated list the stack was started with (`KORE_WEBHOOK_SECRETS`,
/// `TWILIO_AUTH_TOKENS`: `scripts/test` sets them, and the tests sign with them).
pub fn stack_list(var: &str) -> Vec<String> {
    required(var).split(',').map(str::to_owned).collect()
}

/// What the stack's webhook signs against: `WEBHOOK_PUBLIC_URL` plus the route.
pub fn signed_url(path: &str) -> String {
    format!("{}{path}", required("WEBHOOK_PUBLIC_URL"))
}

impl LocalStack {
    pub fn from_env() -> Self {
        let kinesis = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(required("AWS_ENDPOINT_URL_KINESIS"))
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .build();
        LocalStack {
            lambda_url: required("LAMBDA_URL"),
            stream: required("STREAM_NAME"),
            ledger: UsageLedger::new(
                crate::dynamodb::local_client(),
                LedgerConfig::new(required("TABLE_NAME")),
            ),
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis),
        }
    }

    /// The Function URL of `webhook` for `path`, as `cargo lambda watch` serves it.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("{}/lambda-url/webhook{path}", self.lambda_url)
    }

    /// Puts records on the stream, in order, on one shard (same partition key).
    pub async fn put_records(&self, records: &[Vec<u8>]) {
        for chunk in records.chunks(500) {
            let entries = chunk
                .iter()
                .map(|data| {
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
                        .partition_key("e2e")
                        .build()
                        .expect("entry")
                })
                .collect();
            let output = self
                .kinesis
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
                .expect("put records on kinesalite");
            assert_eq!(output.failed_record_count(), Some(0));
        }
    }
}

/// One HTTP exchange with the local stack: status and body text.
pub async fn http(
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let mut request = match method {
        "GET" => client.get(&url),
        _ => client.post(&url).body(body.unwrap_or_default()),
    };
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
