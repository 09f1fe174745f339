//! The object store the pipeline runs on: S3 in AWS (`dmarc-tsv-aws`), a folder locally
//! ([`LocalStore`](super::LocalStore)). Keys are `/`-separated; the trait is synchronous (adapters block on their
//! runtime), small, and every error says whether a retry may help.

use crate::error::Severity;

/// A stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttling, timeouts, 5xx, connection resets: retry with backoff.
    #[error("transient storage error: {0}")]
    Transient(String),
    /// Access denied, bad bucket, invalid key…: retrying will not help.
    #[error("storage error: {0}")]
    Permanent(String),
}

impl StoreError {
    pub fn severity(&self) -> Severity {
        match self {
            StoreError::Transient(_) => Severity::Transient,
            StoreError::Permanent(_) => Severity::Permanent,
        }
    }
}

/// One bucket (or folder). Every call is one request; implementations do not retry silently
/// beyond what their SDK does: the pipeline decides (see `retry`).
pub trait ObjectStore: Send + Sync {
    /// The whole object, or `None` when it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// [`ObjectStore::get`] of several keys, one result per key in the order given: one request
    /// per key, which an adapter may send concurrently (S3 does) so that a batch waits for its
    /// slowest GET instead of the sum of them. The caller bounds how many bytes it asks for at once.
    fn get_many(&self, keys: &[&str]) -> Vec<Result<Option<Vec<u8>>, StoreError>> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Atomically creates or replaces the object (readers see the old or the new bytes, never a mix).
    fn put(&self, key: &str, body: &[u8]) -> Result<(), StoreError>;
    /// Removes the object; removing a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Server-side copy; `Ok(false)` when the source does not exist.
    fn copy(&self, from: &str, to: &str) -> Result<bool, StoreError>;
    /// `true` when the object exists.
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// For logs: `s3://bucket` or a folder path.
    fn describe(&self) -> String;
}
