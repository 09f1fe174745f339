//! Loading the SDK configuration the same way for every client.
//!
//! `aws_config::defaults` reads the usual chain (env keys, profile, SSO, container/instance
//! roles) and honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` on its own; we only add a
//! per-service region (the seed's `-bucketregion` / `-sqsregion`) and path-style S3 addressing
//! when an endpoint is overridden (moto, MinIO…: `bucket.127.0.0.1` does not resolve).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// A connection that cannot be opened in this time is a network problem (transient).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One S3 attempt: generous (a mail of hundreds of MiB on a slow link) but bounded, so a hung
/// connection becomes a transient timeout instead of a run that never ends.
const S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// One SQS attempt: above the longest long poll (20 s).
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Step Functions and CloudFormation calls are small.
const CONTROL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

/// Loads the shared configuration; `region` overrides the default chain's region when given.
pub async fn load_sdk_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// True when S3 requests go to a custom endpoint, which then needs path-style addressing.
pub fn s3_endpoint_overridden() -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

/// An S3 client for `region`, path-style when the endpoint is overridden.
pub async fn s3_client(region: Option<&str>) -> aws_sdk_s3::Client {
    let shared = load_sdk_config(region).await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(s3_endpoint_overridden())
        .timeout_config(timeouts(S3_ATTEMPT_TIMEOUT))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub async fn sqs_client(region: Option<&str>) -> aws_sdk_sqs::Client {
    let shared = load_sdk_config(region).await;
    let config = aws_sdk_sqs::config::Builder::from(&shared)
        .timeout_config(timeouts(SQS_ATTEMPT_TIMEOUT))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub async fn sfn_client(region: Option<&str>) -> aws_sdk_sfn::Client {
    let shared = load_sdk_config(region).await;
    let config = aws_sdk_sfn::config::Builder::from(&shared)
        .timeout_config(timeouts(CONTROL_ATTEMPT_TIMEOUT))
        .build();
    aws_sdk_sfn::Client::from_conf(config)
}

pub async fn cloudformation_client(region: Option<&str>) -> aws_sdk_cloudformation::Client {
    let shared = load_sdk_config(region).await;
    let config = aws_sdk_cloudformation::config::Builder::from(&shared)
        .timeout_config(timeouts(CONTROL_ATTEMPT_TIMEOUT))
        .build();
    aws_sdk_cloudformation::Client::from_conf(config)
}
