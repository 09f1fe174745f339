//! AWS adapters behind the core's synchronous traits: [`S3Store`] (`ObjectStore`), [`SqsQueue`]
//! (`Queue`), and [`SfnClient`] for `dmarc-tsv start`.
//!
//! # Blocking
//! The core is synchronous; the SDK is async. Each adapter holds a `tokio::runtime::Handle` and
//! blocks the calling thread on it for every call. So the core must be called from a thread that
//! is not driving async code:
//! - CLI: build a multi-thread runtime, create the adapters inside `runtime.block_on(..)`, then
//!   call the core directly from the main thread (outside `block_on`).
//! - Lambda: run the core in `tokio::task::spawn_blocking` with adapters holding
//!   `Handle::current()` taken in the async handler.
//!
//! Calling an adapter from inside an async task makes tokio panic ("Cannot start a runtime from
//! within a runtime").
//!
//! # Errors
//! SDK failures are mapped to `Transient` (throttling, 5xx, timeouts, network) or `Permanent`
//! (4xx such as AccessDenied, NoSuchBucket); see [`classify`].
//!
//! # Endpoints
//! `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) are honoured; S3 then uses path-style
//! addressing (moto, MinIO). See [`config`].

pub mod classify;
pub mod config;
pub mod counters;
pub mod s3;
pub mod sfn;
pub mod sqs;

pub use counters::{S3Counters, S3Requests, SqsCounters, SqsRequests};
pub use s3::S3Store;
pub use sfn::{AwsError, ExecutionReport, ExecutionState, SfnClient};
pub use sqs::{SqsQueue, resolve_queue_url};

/// The SDK crates, re-exported so callers (Lambdas, tests) use exactly these versions.
pub use aws_sdk_cloudformation;
pub use aws_sdk_s3;
pub use aws_sdk_sfn;
pub use aws_sdk_sqs;
