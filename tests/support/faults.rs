//! Fault injection on top of the real DynamoDB Local: an HTTP client that forwards every
//! request to the server, except those whose body contains a marker while the fault is on,
//! which get DynamoDB's own `ThrottlingException` response without reaching the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// Switches the fault on and off, and counts the requests it hit.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    active: Arc<AtomicBool>,
    throttled: Arc<AtomicUsize>,
    marker: Arc<String>,
    /// Instead of throttling, hold the request this long before sending it (a stalled server).
    stall: Option<std::time::Duration>,
    /// Throttle this share of all requests, whatever their body (0.0 to 1.0).
    share: Option<f64>,
    /// Instead of a `ThrottlingException`, answer with this DynamoDB error body (status 400).
    response: Option<Arc<String>>,
}

impl Throttle {
    /// Throttles requests whose body contains `marker` while active.
    pub fn on_marker(marker: &str) -> Self {
        Throttle {
            active: Arc::new(AtomicBool::new(true)),
            throttled: Arc::default(),
            marker: Arc::new(marker.to_owned()),
            stall: None,
            share: None,
            response: None,
        }
    }

    /// Cancels the transactions whose body contains `marker` while active, with these
    /// cancellation reason codes (one per action), as DynamoDB does when an action was
    /// throttled or collided with another transaction.
    pub fn cancel_transactions_on_marker(marker: &str, codes: &[&str]) -> Self {
        let reasons: Vec<String> = codes
            .iter()
            .map(|code| format!(r#"{{"Code":"{code}"}}"#))
            .collect();
        let body = format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [{}]","CancellationReasons":[{}]}}"#,
            codes.join(", "),
            reasons.join(",")
        );
        Throttle {
            response: Some(Arc::new(body)),
            ..Self::on_marker(marker)
        }
    }

    /// Throttles a random `share` of all requests while active.
    pub fn random(share: f64) -> Self {
        Throttle {
            share: Some(share),
            ..Self::on_marker("")
        }
    }

    /// Holds requests whose body contains `marker` for `stall` while active.
    pub fn stall_on_marker(marker: &str, stall: std::time::Duration) -> Self {
        Throttle {
            stall: Some(stall),
            ..Self::on_marker(marker)
        }
    }

    pub fn stop(&self) {
        self.active.store(false, Ordering::SeqCst);
    }

    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
struct ThrottlingClient {
    inner: SharedHttpClient,
    throttle: Throttle,
}

#[derive(Debug)]
struct ThrottlingConnector {
    inner: SharedHttpConnector,
    throttle: Throttle,
}

impl HttpConnector for ThrottlingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let hit = self.throttle.active.load(Ordering::SeqCst)
            && match self.throttle.share {
                Some(share) => fastrand::f64() < share,
                // An empty marker matches every request.
                None => request.body().bytes().is_some_and(|body| {
                    self.throttle.marker.is_empty()
                        || body
                            .windows(self.throttle.marker.len())
                            .any(|w| w == self.throttle.marker.as_bytes())
                }),
            };
        if !hit {
            return self.inner.call(request);
        }
        self.throttle.throttled.fetch_add(1, Ordering::SeqCst);
        if let Some(stall) = self.throttle.stall {
            let inner = self.inner.clone();
            return HttpConnectorFuture::new(async move {
                tokio::time::sleep(stall).await;
                inner.call(request).await
            });
        }
        let throttled = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
        let body = match &self.throttle.response {
            Some(body) => body.as_str().to_owned(),
            None => throttled.to_owned(),
        };
        let mut response = Response::new(
            StatusCode::try_from(400u16).expect("400"),
            SdkBody::from(body),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for ThrottlingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ThrottlingConnector {
            inner: self.inner.http_connector(settings, components),
            throttle: self.throttle.clone(),
        })
    }
}

/// A client for the test run's DynamoDB Local that throttles as `throttle` says. SDK retries
/// are off so a throttled write surfaces at once, as when the retries run out.
pub fn throttled_client(throttle: &Throttle) -> Client {
    let http = SharedHttpClient::new(ThrottlingClient {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        throttle: throttle.clone(),
    });
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(super::dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .retry_config(RetryConfig::disabled())
        .http_client(http)
        .build();
    Client::from_conf(config)
}
