//! The HTTP layer between the SDK and the local servers.
//!
//! - Fault injection on top of the real DynamoDB Local: an HTTP client that forwards every
//!   request to the server, except those whose body contains a marker while the fault is on,
//!   which get DynamoDB's own `ThrottlingException` response without reaching the server.
//! - Recording: every AWS request a function's handler makes while a test runs it inside
//!   [`as_function`] is written, as the IAM actions it needs, to `AWS_OPERATIONS_LOG` (set by
//!   `scripts/test`); `tests/iam_grants.rs` compares that with the roles in `template.yaml`.
//!   The tests' own reads (checking what was stored) run outside and are not recorded.

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
    /// Throttle this share of all requests, whatever their body (0.0 to 1.0).
    share: Option<f64>,
    /// Instead of a `ThrottlingException`, answer with this DynamoDB error body (status 400);
    /// it is a transaction's answer, so only transactions get it.
    response: Option<Arc<String>>,
}

impl Throttle {
    /// Throttles requests whose body contains `marker` while active.
    pub fn on_marker(marker: &str) -> Self {
        Throttle {
            active: Arc::new(AtomicBool::new(true)),
            throttled: Arc::default(),
            marker: Arc::new(marker.to_owned()),
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

    pub fn stop(&self) {
        self.active.store(false, Ordering::SeqCst);
    }

    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
    }
}

/// The functions whose operations are recorded, named as `template.yaml`'s functions run.
pub const KINESIS_CONSUMER: &str = "kinesis-consumer";
pub const WEBHOOK: &str = "webhook";
pub const SEGMENT_FORWARDER: &str = "segment-forwarder";
pub const CALLBACK_FORWARDER: &str = "callback-forwarder";
pub const ALERTS: &str = "alerts";

tokio::task_local! {
    /// The function whose handler the current task is running (see [`as_function`]).
    static FUNCTION: &'static str;
}

/// Runs `work` (a call of a function's handler, or its start-up) as `function`: the AWS
/// requests it makes through this layer are recorded as that function's. The SDK sends a
/// request from the task that awaits it, so the task-local name reaches the connector.
pub async fn as_function<T>(
    function: &'static str,
    work: impl std::future::Future<Output = T>,
) -> T {
    FUNCTION.scope(function, work).await
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

/// The IAM actions an AWS request needs, with what they act on (`table`, `index` or `-`).
/// A transaction needs no action of its own but one per kind of item it holds.
pub fn iam_actions(request: &HttpRequest) -> Vec<(String, &'static str)> {
    if let Some(action) = s3_action(request) {
        return vec![(action.into(), "-")];
    }
    let target = request
        .headers()
        .get("x-amz-target")
        .map(str::to_owned)
        .or_else(|| {
            // RPC v2 (CBOR): /service/<Service>/operation/<Operation>
            let uri = request.uri().to_owned();
            let rest = uri.split("/service/").nth(1)?;
            let (service, operation) = rest.split_once("/operation/")?;
            Some(format!("{service}.{operation}"))
        });
    let Some((service, operation)) = target
        .as_deref()
        .and_then(|target| target.split_once('.'))
        .map(|(service, operation)| (service.to_ascii_lowercase(), operation.to_owned()))
    else {
        return vec![("unknown:unknown".into(), "-")];
    };
    let prefix = if service.starts_with("dynamodb") {
        "dynamodb"
    } else if service.starts_with("kinesis") {
        "kinesis"
    } else if service == "awsevents" {
        // EventBridge's target prefix is AWSEvents; its IAM prefix is events.
        "events"
    } else {
        service.as_str()
    };
    let body: serde_json::Value = request
        .body()
        .bytes()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    match (prefix, operation.as_str()) {
        ("dynamodb", "TransactWriteItems" | "TransactGetItems") => {
            let mut actions: Vec<(String, &'static str)> = Vec::new();
            for item in body["TransactItems"].as_array().into_iter().flatten() {
                for (kind, action) in [
                    ("Put", "PutItem"),
                    ("Update", "UpdateItem"),
                    ("Delete", "DeleteItem"),
                    ("ConditionCheck", "ConditionCheckItem"),
                    ("Get", "GetItem"),
                ] {
                    let action = format!("dynamodb:{action}");
                    if !item[kind].is_null() && !actions.iter().any(|(a, _)| *a == action) {
                        actions.push((action, "table"));
                    }
                }
            }
            actions
        }
        ("dynamodb", "Query" | "Scan") if body["IndexName"].is_string() => {
            vec![(format!("dynamodb:{operation}"), "index")]
        }
        ("dynamodb", _) => vec![(format!("dynamodb:{operation}"), "table")],
        (prefix, _) => vec![(format!("{prefix}:{operation}"), "-")],
    }
}

/// The IAM action of an S3 request (REST: no target header; its signature's scope names
/// the service): what it does follows from its method and query.
fn s3_action(request: &HttpRequest) -> Option<&'static str> {
    let signed_for_s3 = request
        .headers()
        .get("authorization")
        .is_some_and(|a| a.contains("/s3/aws4_request"));
    if !signed_for_s3 {
        return None;
    }
    Some(s3_action_of(request.method(), request.uri()))
}

/// The IAM action of an S3 request with `method` to `uri`, from the method and the query:
/// the calls the archive makes.
pub fn s3_action_of(method: &str, uri: &str) -> &'static str {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    match method {
        "GET" if query.contains("list-type=2") => "s3:ListBucket",
        "GET" | "HEAD" => "s3:GetObject",
        "PUT" => "s3:PutObject",
        "DELETE" => "s3:DeleteObject",
        _ => "s3:unknown",
    }
}

/// Records `request` as the current function's, when a test runs one (see [`as_function`]).
pub fn record_if_in_function(request: &HttpRequest) {
    if let Ok(function) = FUNCTION.try_with(|f| *f) {
        record(function, request);
    }
}

/// Appends `function`'s actions for `request` to `AWS_OPERATIONS_LOG`.
fn record(function: &str, request: &HttpRequest) {
    record_actions(function, iam_actions(request));
}

/// Appends `function`'s `actions` (each with its resource kind) to `AWS_OPERATIONS_LOG`,
/// each line once per process: `function<TAB>action<TAB>resource`.
pub fn record_actions(function: &str, actions: Vec<(String, &'static str)>) {
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Ok(path) = std::env::var("AWS_OPERATIONS_LOG") else {
        return;
    };
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for (action, resource) in actions {
        let line = format!("{function}\t{action}\t{resource}\n");
        if seen.insert(line.clone()) {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("AWS_OPERATIONS_LOG {path}: {e}"));
            file.write_all(line.as_bytes())
                .unwrap_or_else(|e| panic!("AWS_OPERATIONS_LOG {path}: {e}"));
        }
    }
}

impl HttpConnector for ThrottlingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        record_if_in_function(&request);
        let target = |operation: &str| {
            request
                .headers()
                .get("x-amz-target")
                .is_some_and(|t| t.ends_with(operation))
        };
        let hit = self.throttle.active.load(Ordering::SeqCst)
            && match self.throttle.share {
                Some(share) => fastrand::f64() < share,
                // An empty marker matches every request.
                None => request.body().bytes().is_some_and(|body| {
                    let transaction = body.windows(13).any(|w| w == b"TransactItems");
                    (self.throttle.response.is_none() || transaction)
                        && (self.throttle.marker.is_empty()
                            || body
                                .windows(self.throttle.marker.len())
                                .any(|w| w == self.throttle.marker.as_bytes()))
                }),
            };
        if !hit {
            return self.inner.call(request);
        }
        self.throttle.throttled.fetch_add(1, Ordering::SeqCst);
        // A marked item inside a transaction is throttled the way DynamoDB throttles a hot
        // item: the transaction is cancelled, and only that item's reason says why.
        let transaction = target(".TransactWriteItems");
        let throttled = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
        let body = match (&self.throttle.response, transaction, self.throttle.share) {
            (Some(body), _, _) => body.as_str().to_owned(),
            (None, true, None) if !self.throttle.marker.is_empty() => cancelled_for_marked_items(
                request.body().bytes().unwrap_or_default(),
                &self.throttle.marker,
            ),
            _ => throttled.to_owned(),
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

/// An HTTP client for any AWS SDK that only records (inside [`as_function`]).
pub fn recording_http_client() -> SharedHttpClient {
    let throttle = Throttle::on_marker("");
    throttle.stop();
    SharedHttpClient::new(ThrottlingClient {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        throttle,
    })
}
