//! A Secrets Manager for tests: it answers `GetSecretValue` with the secret it holds (which
//! a test can change, as a rotation does) and counts the reads, behind the recording layer,
//! so that the IAM test sees the functions' calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::{Credentials, Region};
use serde_json::json;

/// The stand-in, on a free loopback port.
pub struct FakeSecretsManager {
    pub url: String,
    secret: Arc<Mutex<String>>,
    reads: Arc<AtomicUsize>,
}

impl FakeSecretsManager {
    /// Answers for `arn` with `secret` until [`Self::set`] changes it.
    pub fn start(arn: &str, secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let secret = Arc::new(Mutex::new(secret.to_owned()));
        let reads = Arc::new(AtomicUsize::new(0));
        let (served, counted, arn) = (secret.clone(), reads.clone(), arn.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let target = read_request(&mut stream);
                assert_eq!(target, "secretsmanager.getsecretvalue", "only reads");
                counted.fetch_add(1, Ordering::SeqCst);
                let current = served.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let answer = json!({
                    "ARN": arn, "Name": "kore-ingest", "SecretString": current,
                    "VersionId": "v1", "VersionStages": ["AWSCURRENT"],
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        FakeSecretsManager { url, secret, reads }
    }

    /// The secret's new value, as a rotation leaves it.
    pub fn set(&self, secret: &str) {
        *self.secret.lock().unwrap_or_else(|p| p.into_inner()) = secret.to_owned();
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// An SDK configuration that reaches this Secrets Manager through the recording layer.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
            .endpoint_url(&self.url)
            .http_client(crate::faults::recording_http_client())
            .load()
            .await
    }
}

/// Reads one request off `stream`: its `x-amz-target`.
fn read_request(stream: &mut std::net::TcpStream) -> String {
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
    target
}
