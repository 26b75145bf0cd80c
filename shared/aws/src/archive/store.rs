//! Where the archive lives (`ARCHIVE_URL`): a folder (`file://FOLDER`, the local stack) or
//! an S3 bucket and prefix (`s3://BUCKET/PREFIX`). Both take whole objects by key: a reader
//! sees an object's old bytes or its new ones, never half of them.

use std::path::{Path, PathBuf};

use aws_config::SdkConfig;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;

/// The archive's place when `ARCHIVE_URL` is not set: a folder of the local stack.
pub const DEFAULT_ARCHIVE_URL: &str = "file://.local/archive";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ARCHIVE_URL {0}: give file://FOLDER or s3://BUCKET[/PREFIX]")]
    BadUrl(String),
    #[error("cannot write {place}: {reason}")]
    Write { place: String, reason: String },
    #[error("cannot read {place}: {reason}")]
    Read { place: String, reason: String },
}

/// The archive's objects, by key (`usage_events/day=2024-11-03/part-00000.parquet`).
#[derive(Debug, Clone)]
pub enum ArchiveStore {
    Folder(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        /// Empty, or ending in `/`.
        prefix: String,
    },
}

/// The S3 client configuration for `aws`. Against a custom endpoint (an emulator, named by
/// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) requests use path-style addressing and
/// send checksums only where an operation requires them: the SDK's default checksum
/// trailers are refused by emulators. AWS itself gets the SDK's defaults.
pub fn s3_config(aws: &SdkConfig) -> aws_sdk_s3::Config {
    let builder = aws_sdk_s3::config::Builder::from(aws);
    let custom = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if custom {
        builder
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build()
    } else {
        builder.build()
    }
}

impl ArchiveStore {
    /// The store `url` names; S3 through a client made from `aws`.
    pub fn from_url(url: &str, aws: &SdkConfig) -> Result<ArchiveStore, StoreError> {
        ArchiveStore::with_s3_config(url, || s3_config(aws))
    }

    /// The store `url` names; S3 through a client with the configuration `config` makes.
    pub fn with_s3_config(
        url: &str,
        config: impl FnOnce() -> aws_sdk_s3::Config,
    ) -> Result<ArchiveStore, StoreError> {
        if let Some(folder) = url.strip_prefix("file://").filter(|f| !f.is_empty()) {
            return Ok(ArchiveStore::Folder(PathBuf::from(folder)));
        }
        let Some((bucket, prefix)) = url
            .strip_prefix("s3://")
            .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
            .filter(|(bucket, _)| !bucket.is_empty())
        else {
            return Err(StoreError::BadUrl(url.to_owned()));
        };
        let prefix = prefix.trim_matches('/');
        Ok(ArchiveStore::S3 {
            client: aws_sdk_s3::Client::from_conf(config()),
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// Where `key` is, for messages: a path or an `s3://` URL.
    pub fn place(&self, key: &str) -> String {
        match self {
            ArchiveStore::Folder(root) => root.join(key).display().to_string(),
            ArchiveStore::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}{key}"),
        }
    }

    /// Writes the object `key`, whole.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let fail = |reason: String| StoreError::Write {
            place: self.place(key),
            reason,
        };
        match self {
            ArchiveStore::Folder(root) => put_file(&root.join(key), &bytes).map_err(fail),
            ArchiveStore::S3 {
                client,
                bucket,
                prefix,
            } => client
                .put_object()
                .bucket(bucket)
                .key(format!("{prefix}{key}"))
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| fail(aws_sdk_s3::error::DisplayErrorContext(e).to_string())),
        }
    }

    /// Deletes the object `key` (nothing when there is none).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let fail = |reason: String| StoreError::Write {
            place: self.place(key),
            reason,
        };
        match self {
            ArchiveStore::Folder(root) => match std::fs::remove_file(root.join(key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e.to_string())),
                _ => Ok(()),
            },
            ArchiveStore::S3 {
                client,
                bucket,
                prefix,
            } => client
                .delete_object()
                .bucket(bucket)
                .key(format!("{prefix}{key}"))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| fail(aws_sdk_s3::error::DisplayErrorContext(e).to_string())),
        }
    }

    /// The object `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let fail = |reason: String| StoreError::Read {
            place: self.place(key),
            reason,
        };
        match self {
            ArchiveStore::Folder(root) => match std::fs::read(root.join(key)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(fail(e.to_string())),
            },
            ArchiveStore::S3 {
                client,
                bucket,
                prefix,
            } => {
                let answer = client
                    .get_object()
                    .bucket(bucket)
                    .key(format!("{prefix}{key}"))
                    .send()
                    .await;
                match answer {
                    Ok(object) => {
                        let body = object
                            .body
                            .collect()
                            .await
                            .map_err(|e| fail(e.to_string()))?;
                        Ok(Some(body.into_bytes().to_vec()))
                    }
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
                    Err(e) => Err(fail(aws_sdk_s3::error::DisplayErrorContext(e).to_string())),
                }
            }
        }
    }

    /// The keys under `folder` (`manifests/`, `usage_events/day=2024-11-03/`), sorted.
    pub async fn list(&self, folder: &str) -> Result<Vec<String>, StoreError> {
        let fail = |reason: String| StoreError::Read {
            place: self.place(folder),
            reason,
        };
        match self {
            ArchiveStore::Folder(root) => {
                let mut keys = Vec::new();
                let entries = match std::fs::read_dir(root.join(folder)) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
                    Err(e) => return Err(fail(e.to_string())),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| fail(e.to_string()))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // A file being renamed into place is not an object yet.
                    if entry.path().is_file() && !name.ends_with(PARTIAL) {
                        keys.push(format!("{folder}{name}"));
                    }
                }
                keys.sort();
                Ok(keys)
            }
            ArchiveStore::S3 {
                client,
                bucket,
                prefix,
            } => {
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(format!("{prefix}{folder}"))
                    .delimiter("/")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page
                        .map_err(|e| fail(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
                    for object in page.contents() {
                        if let Some(key) =
                            object.key().and_then(|k| k.strip_prefix(prefix.as_str()))
                        {
                            keys.push(key.to_owned());
                        }
                    }
                }
                keys.sort();
                Ok(keys)
            }
        }
    }
}

/// The suffix of a file being written, before it is renamed over its object.
const PARTIAL: &str = ".partial";

/// Writes `bytes` to `path` through a sibling file renamed over it.
fn put_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(|e| e.to_string())?;
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(PARTIAL);
    std::fs::write(&partial, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> Result<ArchiveStore, StoreError> {
        ArchiveStore::with_s3_config(url, || {
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .build()
        })
    }

    #[test]
    fn archive_urls_name_a_folder_or_a_bucket_and_prefix() {
        assert!(
            matches!(store("file:///tmp/a"), Ok(ArchiveStore::Folder(p)) if p == Path::new("/tmp/a"))
        );
        let Ok(s3) = store("s3://bucket/some/prefix/") else {
            panic!("an s3 URL is a store")
        };
        assert_eq!(
            s3.place("manifests/x"),
            "s3://bucket/some/prefix/manifests/x"
        );
        assert_eq!(store("s3://bucket").unwrap().place("k"), "s3://bucket/k");
        for bad in [
            "s3://",
            "file://",
            "https://example.com/a",
            ".local/archive",
        ] {
            let error = store(bad).unwrap_err().to_string();
            assert!(
                error.contains("give file://FOLDER or s3://BUCKET"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn a_folder_store_lists_what_was_put_and_reads_nothing_for_a_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let folder = ArchiveStore::Folder(dir.path().to_owned());
        folder.put("t/day=1/b", b"two".to_vec()).await.unwrap();
        folder.put("t/day=1/a", b"one".to_vec()).await.unwrap();
        assert_eq!(
            folder.list("t/day=1/").await.unwrap(),
            ["t/day=1/a", "t/day=1/b"]
        );
        assert_eq!(
            folder.get("t/day=1/a").await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(folder.get("t/day=2/a").await.unwrap(), None);
        assert!(folder.list("nothing/").await.unwrap().is_empty());
        folder.delete("t/day=1/a").await.unwrap();
        folder.delete("t/day=1/a").await.unwrap();
        assert_eq!(folder.list("t/day=1/").await.unwrap(), ["t/day=1/b"]);
    }
}
