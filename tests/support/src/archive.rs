//! The archive on the run's S3 emulator (moto's server, `AWS_ENDPOINT_URL_S3`, which
//! `scripts/dev up` exports): a bucket of the test's own, reached through the archive's own
//! client configuration, its requests recorded for the IAM test.

use aws_sdk_s3::config::{Credentials, Region};
use kore_ingest_aws::archive::{ArchiveStore, s3_config};

/// A new bucket named `name` (made unique) on the emulator, and the store over it with
/// `prefix`.
pub async fn local_s3_archive(
    name: &str,
    prefix: &str,
) -> (aws_sdk_s3::Client, String, ArchiveStore) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL_S3 is not set: run the tests with scripts/test")
    });
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
