//! A scripted HTTP layer in front of DynamoDB Local, for tests that need one request held,
//! failed, or applied with its answer lost: each request is passed, held, failed or sent and
//! its answer replaced, as the test's script says for that operation and its count, and
//! every request is logged with the instant the SDK sent it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryConfig;
use tokio::time::Instant;

/// What happens to one request.
#[derive(Debug, Clone)]
pub enum Step {
    Pass,
    /// Held this long, then sent (a stalled server).
    Hold(Duration),
    /// Answered with this status and DynamoDB error body, never sent.
    Fail(u16, String),
    /// Sent and applied, but the answer is replaced with this one (a lost response).
    ApplyThenFail(u16, String),
}

type Rules = dyn Fn(&str, usize) -> Step + Send + Sync;

/// The script: a rule per operation name (`TransactWriteItems`...) and its 1-based count.
#[derive(Clone)]
pub struct Script {
    rules: Arc<Rules>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Script")
    }
}

impl Script {
    pub fn new(rules: impl Fn(&str, usize) -> Step + Send + Sync + 'static) -> Self {
        Script {
            rules: Arc::new(rules),
            counts: Arc::default(),
            log: Arc::default(),
        }
    }

    /// Every request so far: when the SDK sent it, and its operation.
    pub fn log(&self) -> Vec<(Instant, String)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A DynamoDB error answer of `kind`, e.g. `InternalServerError`.
pub fn dynamodb_error(kind: &str, message: &str) -> String {
    format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"{message}"}}"#)
}

#[derive(Debug, Clone)]
struct ScriptedClient {
    inner: SharedHttpClient,
    script: Script,
}

#[derive(Debug)]
struct ScriptedConnector {
    inner: SharedHttpConnector,
    script: Script,
}

fn answer(status: u16, body: String) -> Response<SdkBody> {
    let mut response = Response::new(
        StatusCode::try_from(status).expect("a status"),
        SdkBody::from(body),
    );
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    response
}

impl HttpConnector for ScriptedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or("unknown")
            .to_owned();
        let nth = {
            let mut counts = self.script.counts.lock().expect("counts");
            let count = counts.entry(operation.clone()).or_default();
            *count += 1;
            *count
        };
        if let Ok(mut log) = self.script.log.lock() {
            log.push((Instant::now(), operation.clone()));
        }
        super::faults::record_if_in_function(&request);
        let inner = self.inner.clone();
        match (self.script.rules)(&operation, nth) {
            Step::Pass => inner.call(request),
            Step::Hold(hold) => HttpConnectorFuture::new(async move {
                tokio::time::sleep(hold).await;
                inner.call(request).await
            }),
            Step::Fail(status, body) => HttpConnectorFuture::ready(Ok(answer(status, body))),
            Step::ApplyThenFail(status, body) => HttpConnectorFuture::new(async move {
                inner.call(request).await?;
                Ok(answer(status, body))
            }),
        }
    }
}

impl HttpClient for ScriptedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ScriptedConnector {
            inner: self.inner.http_connector(settings, components),
            script: self.script.clone(),
        })
    }
}

/// A client for the test run's DynamoDB Local that follows `script`; with `retries`, the
/// SDK's standard retries (three attempts), as the functions run.
pub fn scripted_client(script: &Script, retries: bool) -> Client {
    let http = SharedHttpClient::new(ScriptedClient {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        script: script.clone(),
    });
    let retry = if retries {
        RetryConfig::standard().with_initial_backoff(Duration::from_millis(10))
    } else {
        RetryConfig::disabled()
    };
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(super::dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .retry_config(retry)
        .http_client(http)
        .build();
    Client::from_conf(config)
}
