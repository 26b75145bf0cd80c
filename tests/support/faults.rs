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
        // A marked item inside a transaction is throttled the way DynamoDB throttles a hot
        // item: the transaction is cancelled, and only that item's reason says why.
        let transaction = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".TransactWriteItems"));
        let body = match (transaction, self.throttle.share, request.body().bytes()) {
            (true, None, Some(body)) if !self.throttle.marker.is_empty() => {
                cancelled_for_marked_items(body, &self.throttle.marker)
            }
            _ => r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#.to_owned(),
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

/// DynamoDB's answer to a transaction with throttled items: `ThrottlingError` for each
/// action that mentions `marker`, `None` for the others.
pub fn cancelled_for_marked_items(body: &[u8], marker: &str) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let reasons: Vec<serde_json::Value> = request["TransactItems"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|action| {
            if action.to_string().contains(marker) {
                serde_json::json!({"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity of your table or index."})
            } else {
                serde_json::json!({"Code": "None"})
            }
        })
        .collect();
    serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
        "CancellationReasons": reasons,
    })
    .to_string()
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
