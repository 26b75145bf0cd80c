//! What the `segment-forwarder` tests need: the local stand-in for Segment's batch endpoint
//! (`scripts/lib/segment_standin.py`), the ledger table's DynamoDB stream as Lambda delivers
//! it, and a Secrets Manager holding the write key.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kore_ingest_shared::ledger::UsageLedger;
use serde_json::{Map, Value, json};

use crate::stack::http;

/// The counts `GET /__stats` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Calls in every request, whatever the answer.
    pub calls_received: u64,
    pub distinct_received: u64,
    /// Calls in requests answered 200.
    pub calls_accepted: u64,
    pub distinct_accepted: u64,
}

/// A Segment stand-in: its URL and, when this test started it, its process.
pub struct StandIn {
    pub url: String,
    child: Option<Child>,
}

impl StandIn {
    /// A stand-in of its own on a free loopback port.
    pub fn start() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/lib/segment_standin.py"
        );
        let port_file = std::env::temp_dir().join(format!("segment-standin-{}", fastrand::u64(..)));
        let child = Command::new("python3")
            .args([script, "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the Segment stand-in");
        let started = Instant::now();
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.trim().parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the Segment stand-in did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_file(&port_file);
        StandIn {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        }
    }

    /// The stand-in of the local stack (`SEGMENT_URL`, exported by `scripts/dev up` with
    /// `SEGMENT_LOCAL=1`).
    pub fn of_stack() -> Self {
        let url = std::env::var("SEGMENT_URL").unwrap_or_else(|_| {
            panic!("SEGMENT_URL is not set: run the suite with scripts/test (SEGMENT_LOCAL=1)")
        });
        StandIn { url, child: None }
    }

    pub async fn control(&self, order: Value) {
        let (status, body) = http(
            "POST",
            format!("{}/__control", self.url),
            vec![],
            Some(order.to_string().into_bytes()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Counts of the calls whose `messageId` starts with `prefix`.
    pub async fn stats(&self, prefix: &str) -> Stats {
        let (status, body) = http(
            "GET",
            format!("{}/__stats?prefix={prefix}", self.url),
            vec![],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let stats: Value = serde_json::from_str(&body).expect("stats JSON");
        let n = |name: &str| stats[name].as_u64().unwrap_or_default();
        Stats {
            calls_received: n("calls_received"),
            distinct_received: n("distinct_received"),
            calls_accepted: n("calls_accepted"),
            distinct_accepted: n("distinct_accepted"),
        }
    }

    /// The calls accepted (answered 200) whose `messageId` starts with `prefix`.
    pub async fn accepted(&self, prefix: &str) -> Vec<Value> {
        let (status, body) = http(
            "GET",
            format!("{}/__calls?accepted=1&prefix={prefix}", self.url),
            vec![],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("calls JSON")
    }

    /// The write keys the requests carried.
    pub async fn write_keys(&self) -> Vec<String> {
        let (_, body) = http("GET", format!("{}/__stats", self.url), vec![], None).await;
        let stats: Value = serde_json::from_str(&body).expect("stats JSON");
        stats["write_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An attribute value as Lambda writes it into a stream record (binary as base64).
pub fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": BASE64.encode(b.as_ref()) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| BASE64.encode(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(b) => json!({ "NULL": b }),
        AttributeValue::M(m) => json!({ "M": image(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        other => panic!("no stream form for {other:?}"),
    }
}

fn image(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    item.iter()
        .map(|(k, v)| (k.clone(), attribute_json(v)))
        .collect()
}

/// One stream record (`INSERT`, `MODIFY` or `REMOVE`) of `item`, with sequence number `n`.
pub fn stream_record(event_name: &str, item: &HashMap<String, AttributeValue>, n: u64) -> Value {
    let keys: HashMap<String, AttributeValue> = item
        .iter()
        .filter(|(k, _)| *k == "pk" || *k == "sk")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut change = json!({
        "ApproximateCreationDateTime": 1_730_628_900.0,
        "Keys": image(&keys),
        "SequenceNumber": stream_sequence(n),
        "SizeBytes": 1000,
        "StreamViewType": "NEW_IMAGE",
    });
    if event_name != "REMOVE" {
        change["NewImage"] = Value::Object(image(item));
    }
    json!({
        "eventID": format!("e{n}"),
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": change,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/kore-usage/stream/2024-11-04T00:00:00.000",
    })
}

/// The sequence number [`stream_record`] gives record `n`.
pub fn stream_sequence(n: u64) -> String {
    format!("{:021}", 4_000_000_000_000_000_000u64 + n)
}

pub fn stream_event(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).expect("a valid DynamoDB stream event")
}

/// Every item of the ledger's table (a test table: a scan is fine), in key order.
pub async fn table_items(ledger: &UsageLedger) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = ledger
            .client()
            .scan()
            .table_name(ledger.table_name())
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan the test table");
        items.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    let key = |item: &HashMap<String, AttributeValue>| {
        ["pk", "sk"].map(|k| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        })
    };
    items.sort_by_key(key);
    items
}

/// A Secrets Manager that answers `GetSecretValue` with `secret`, counting the reads.
pub struct FakeSecretsManager {
    pub url: String,
    reads: Arc<AtomicUsize>,
}

impl FakeSecretsManager {
    pub fn start(arn: &str, secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let answer = json!({
            "ARN": arn, "Name": "segment-write-key", "SecretString": secret,
            "VersionId": "v1", "VersionStages": ["AWSCURRENT"],
        })
        .to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0;
                let mut target = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if let Some(value) = lower.strip_prefix("x-amz-target:") {
                        target = value.trim().to_owned();
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                assert_eq!(target, "secretsmanager.getsecretvalue", "only reads");
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        FakeSecretsManager { url, reads }
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// An SDK configuration that reaches this Secrets Manager through the recording layer.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .endpoint_url(&self.url)
            .http_client(crate::faults::recording_http_client())
            .load()
            .await
    }
}
