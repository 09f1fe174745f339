//! Loading the SDK configuration the same way for every client.
//!
//! `aws_config::defaults` reads the usual chain (env keys, profile, SSO, container/instance
//! roles) and honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` on its own; we only add a
//! per-service region (the seed's `-bucketregion` / `-sqsregion`) and path-style S3 addressing
//! when an endpoint is overridden (moto, MinIO…: `bucket.127.0.0.1` does not resolve).

use aws_config::{BehaviorVersion, Region, SdkConfig};

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
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

pub async fn sqs_client(region: Option<&str>) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&load_sdk_config(region).await)
}

pub async fn sfn_client(region: Option<&str>) -> aws_sdk_sfn::Client {
    aws_sdk_sfn::Client::new(&load_sdk_config(region).await)
}

pub async fn cloudformation_client(region: Option<&str>) -> aws_sdk_cloudformation::Client {
    aws_sdk_cloudformation::Client::new(&load_sdk_config(region).await)
}
