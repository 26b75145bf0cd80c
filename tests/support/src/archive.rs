//! The archive on the run's S3 emulator (moto's server, `AWS_ENDPOINT_URL_S3`, which
//! `scripts/dev up` exports): a bucket of the test's own, reached through the archive's own
//! client configuration, its requests recorded for the IAM test.

use std::collections::BTreeSet;

use aws_sdk_s3::config::{Credentials, Region};
use kore_ingest_aws::archive::{ArchiveStore, s3_config};

/// The S3 emulator's endpoint (moto's server).
fn s3_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_S3").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL_S3 is not set: run the tests with scripts/test")
    })
}

/// A new bucket named `name` (made unique) on the emulator, and the store over it with
/// `prefix`.
pub async fn local_s3_archive(
    name: &str,
    prefix: &str,
) -> (aws_sdk_s3::Client, String, ArchiveStore) {
    let endpoint = s3_endpoint();
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            Credentials::new("local", "local", None, None, "tests"),
        ))
        .build();
    let config = s3_config(&aws)
        .to_builder()
        .http_client(crate::faults::recording_http_client())
        .build();
    let client = aws_sdk_s3::Client::from_conf(config.clone());
    let bucket = format!("{name}-{:08x}", fastrand::u32(..));
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create bucket {bucket}: {e:?}"));
    let store = ArchiveStore::with_s3_config(&format!("s3://{bucket}/{prefix}"), || config)
        .unwrap_or_else(|e| panic!("{e}"));
    (client, bucket, store)
}

/// moto's recorder, for the S3 calls of a child process (the `kore-usage` binary), which
/// this process's recording HTTP client cannot see: moto keeps every request it gets while
/// the recorder runs, and the requests to one bucket are picked out by their path (the
/// archive addresses buckets by path on a custom endpoint). moto has one recorder: one
/// recording runs at a time in a test process, and the next start empties it. A test that
/// panics while recording leaves moto recording until the run's stack stops.
pub struct S3Recorder {
    endpoint: String,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

static RECORDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl S3Recorder {
    /// Starts moto's recorder with an empty record.
    pub async fn start() -> S3Recorder {
        let recorder = S3Recorder {
            endpoint: s3_endpoint(),
            _one_at_a_time: RECORDER.lock().await,
        };
        recorder.call("reset-recording").await;
        recorder.call("start-recording").await;
        recorder
    }

    /// Stops the recorder, writes the S3 actions of the requests it kept to `bucket` as
    /// `function`'s to `AWS_OPERATIONS_LOG` (for the IAM test), and returns them.
    pub async fn record_calls_to(self, bucket: &str, function: &str) -> BTreeSet<&'static str> {
        self.call("stop-recording").await;
        let record = reqwest::get(format!(
            "{}/moto-api/recorder/download-recording",
            self.endpoint
        ))
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("moto's recording: {e}"));
        let record = record
            .text()
            .await
            .unwrap_or_else(|e| panic!("moto's recording, its body: {e}"));
        let bucket_path = format!("/{bucket}");
        let mut actions = BTreeSet::new();
        for line in record.lines().filter(|line| !line.trim().is_empty()) {
            let request: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("moto's record {line}: {e}"));
            let url = request["url"].as_str().unwrap_or_default();
            // `http://host:port/bucket/key?query`: the path and query after the authority.
            let path = url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
                .unwrap_or(url);
            let to_bucket = path
                .strip_prefix(&bucket_path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']));
            if to_bucket {
                let method = request["method"].as_str().unwrap_or_default();
                actions.insert(crate::faults::s3_action_of(method, path));
            }
        }
        crate::faults::record_actions(
            function,
            actions
                .iter()
                .map(|action| ((*action).to_owned(), "-"))
                .collect(),
        );
        actions
    }

    /// POSTs to moto's recorder API.
    async fn call(&self, what: &str) {
        reqwest::Client::new()
            .post(format!("{}/moto-api/recorder/{what}", self.endpoint))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("moto's recorder, {what}: {e}"));
    }
}

/// Every file under `root` (a folder archive), by its path under `root`, with its bytes.
pub fn files_under(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(name) = path.strip_prefix(root) {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
                found.insert(name.display().to_string(), bytes);
            }
        }
    }
    found
}
