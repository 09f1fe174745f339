//! [`S3Store`]: the core's [`ObjectStore`] over one S3 bucket.

use std::sync::Arc;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use dmarc_tsv_core::pipeline::store::{ObjectInfo, ObjectStore, StoreError};
use tokio::runtime::Handle;

use crate::classify::{Retry, classify, status_of};
use crate::counters::{S3Api, S3Counters, S3Requests};

/// Default bound on one GET: larger objects are refused (permanent error) instead of being
/// buffered, because the whole object is held in memory. Mails are bounded much lower by the
/// pipeline's `maxmailbytes`; staged and output objects are far below this.
pub const DEFAULT_MAX_GET_BYTES: u64 = 1 << 30;

/// GETs of one [`ObjectStore::get_many`] call in flight at once: enough to hide S3's per-request
/// latency for a receive's worth of mails, few enough to stay far below S3's request rate limits.
pub const MAX_CONCURRENT_GETS: usize = 16;

/// One bucket, reached through a shared S3 client.
///
/// The [`ObjectStore`] trait is synchronous: every call blocks the calling thread on the tokio
/// runtime given at construction (`Handle::block_on`). Call it from a thread that is NOT running
/// async code (the CLI's main thread, or `tokio::task::spawn_blocking` in a Lambda handler);
/// calling it from inside an async task panics in tokio.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    handle: Handle,
    counters: Arc<S3Counters>,
    max_get_bytes: u64,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, handle: Handle) -> Self {
        S3Store {
            client,
            bucket: bucket.into(),
            handle,
            counters: Arc::default(),
            max_get_bytes: DEFAULT_MAX_GET_BYTES,
        }
    }

    /// Builds the client from the environment (see [`crate::config::s3_client`]); must run in an
    /// async context (e.g. `runtime.block_on(S3Store::connect(..))`).
    pub async fn connect(bucket: &str, region: Option<&str>) -> Self {
        let client = crate::config::s3_client(region).await;
        S3Store::new(client, bucket, Handle::current())
    }

    /// The same client, runtime, counters and limit, for another bucket (the mail bucket named
    /// by an S3 event may differ from the data bucket).
    pub fn with_bucket(&self, bucket: impl Into<String>) -> Self {
        S3Store {
            bucket: bucket.into(),
            ..self.clone()
        }
    }

    pub fn with_max_get_bytes(mut self, max: u64) -> Self {
        self.max_get_bytes = max;
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Requests sent so far by this store and every store derived with [`Self::with_bucket`].
    pub fn requests(&self) -> S3Requests {
        self.counters.snapshot()
    }

    pub fn counters(&self) -> Arc<S3Counters> {
        Arc::clone(&self.counters)
    }

    async fn get_async(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.counters.count(S3Api::Get);
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => return Err(store_error("GET", key, &err)),
        };
        let declared = response
            .content_length()
            .and_then(|len| u64::try_from(len).ok());
        if let Some(len) = declared.filter(|len| *len > self.max_get_bytes) {
            return Err(too_large(key, len, self.max_get_bytes));
        }
        read_bounded(response.body, key, declared, self.max_get_bytes)
            .await
            .map(Some)
    }

    async fn get_many_async(&self, keys: &[&str]) -> Vec<GetResult> {
        let mut results: Vec<Option<GetResult>> = keys.iter().map(|_| None).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (index, key) in keys.iter().enumerate() {
            if tasks.len() >= MAX_CONCURRENT_GETS {
                collect_one(&mut tasks, &mut results).await;
            }
            let store = self.clone();
            let key = (*key).to_owned();
            tasks.spawn(async move { (index, store.get_async(&key).await) });
        }
        while !tasks.is_empty() {
            collect_one(&mut tasks, &mut results).await;
        }
        results
            .into_iter()
            .zip(keys)
            .map(|(result, key)| {
                // Only a task that panicked or was cancelled leaves its slot empty.
                result.unwrap_or_else(|| {
                    Err(StoreError::Transient(format!(
                        "GET {key}: task did not finish"
                    )))
                })
            })
            .collect()
    }

    async fn put_async(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.counters.count(S3Api::Put);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|err| store_error("PUT", key, &err))
    }

    async fn delete_async(&self, key: &str) -> Result<(), StoreError> {
        self.counters.count(S3Api::Delete);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some compatible stores answer 404.
            Err(err) if err.code() == Some("NoSuchKey") => Ok(()),
            Err(err) => Err(store_error("DELETE", key, &err)),
        }
    }

    async fn list_async(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.counters.count(S3Api::List);
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|err| store_error("LIST", prefix, &err))?;
            objects.extend(page.contents().iter().filter_map(|object| {
                let key = object.key()?;
                let size = object
                    .size()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0);
                Some(ObjectInfo {
                    key: key.to_owned(),
                    size,
                })
            }));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        // S3 lists in UTF-8 byte order already; sorting makes that a guarantee of ours, and
        // holds for S3-compatible stores that differ.
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn copy_async(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        self.counters.count(S3Api::Copy);
        let source = format!("{}/{}", self.bucket, encode_copy_source_key(from));
        match self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("NoSuchKey") => Ok(false),
            Err(err) => Err(store_error("COPY", &format!("{from} -> {to}"), &err)),
        }
    }

    async fn exists_async(&self, key: &str) -> Result<bool, StoreError> {
        self.counters.count(S3Api::Head);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err)
                if err.as_service_error().is_some_and(|e| e.is_not_found())
                    || status_of(&err) == Some(404) =>
            {
                Ok(false)
            }
            Err(err) => Err(store_error("HEAD", key, &err)),
        }
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl ObjectStore for S3Store {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.handle.block_on(self.get_async(key))
    }

    /// The GETs run concurrently on the runtime, at most [`MAX_CONCURRENT_GETS`] at a time; each
    /// result is what [`ObjectStore::get`] of that key would have returned.
    fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>, StoreError>> {
        self.handle.block_on(self.get_many_async(keys))
    }

    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError> {
        self.handle.block_on(self.put_async(key, body))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.handle.block_on(self.delete_async(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.handle.block_on(self.list_async(prefix))
    }

    fn copy(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        self.handle.block_on(self.copy_async(from, to))
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.handle.block_on(self.exists_async(key))
    }

    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}

type GetResult = Result<Option<Vec<u8>>, StoreError>;

/// Waits for one GET task of [`S3Store::get_many`] and files its result at its key's index.
async fn collect_one(
    tasks: &mut tokio::task::JoinSet<(usize, GetResult)>,
    results: &mut [Option<GetResult>],
) {
    match tasks.join_next().await {
        Some(Ok((index, result))) => {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
        Some(Err(err)) => tracing::error!("S3 GET task failed: {err}"),
        None => {}
    }
}

/// Reads the body chunk by chunk, refusing to grow past `max` even if the declared length lied.
async fn read_bounded(
    mut body: ByteStream,
    key: &str,
    declared: Option<u64>,
    max: u64,
) -> Result<Vec<u8>, StoreError> {
    let initial = declared.unwrap_or(0).min(max);
    let mut bytes = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|err| StoreError::Transient(format!("GET {key}: body read failed: {err}")))?;
        let total = bytes.len() as u64 + chunk.len() as u64;
        if total > max {
            return Err(too_large(key, total, max));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn too_large(key: &str, len: u64, max: u64) -> StoreError {
    StoreError::Permanent(format!(
        "GET {key}: object of {len} bytes exceeds the {max} byte bound"
    ))
}

fn store_error<E>(op: &str, key: &str, err: &SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (retry, detail) = classify(err);
    let message = format!("{op} {key}: {detail}");
    match retry {
        Retry::Transient => StoreError::Transient(message),
        Retry::Permanent => StoreError::Permanent(message),
    }
}

/// `x-amz-copy-source` is `bucket/key` with the key URL-encoded; `/` stays as the separator.
fn encode_copy_source_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(
            encode_copy_source_key("incoming/a b+c.eml"),
            "incoming/a%20b%2Bc.eml"
        );
        assert_eq!(encode_copy_source_key("x/ü?&=#"), "x/%C3%BC%3F%26%3D%23");
        assert_eq!(encode_copy_source_key("plain-key_1.~"), "plain-key_1.~");
    }
}
