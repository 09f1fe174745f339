//! Sorting AWS SDK failures into "retry may help" (transient) and "it never will" (permanent).
//!
//! The SDK already retries throttling and 5xx a few times (standard retry mode); what reaches us
//! has exhausted those attempts, but the pipeline may still back off longer and try again, so the
//! distinction matters: a transient failure leaves the SQS message for redelivery, a permanent
//! one is a configuration problem (wrong bucket, missing permission) that an operator must fix.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Whether retrying the same request later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Transient,
    Permanent,
}

/// Service error codes that mean "slow down" or "try again" whatever the HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    "TransactionInProgressException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "KmsThrottled",
    "IDPCommunicationError",
];

/// Classifies an SDK error and renders it with its whole cause chain.
pub fn classify<E>(err: &SdkError<E>) -> (Retry, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retry = match err {
        // Built wrongly by us (e.g. an invalid parameter): the same request fails again.
        SdkError::ConstructionFailure(_) => Retry::Permanent,
        // Nothing or not all came back: network trouble, a timeout, a truncated response.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Retry::Transient
        }
        SdkError::ServiceError(_) => classify_service(err.code(), status_of(err)),
        // `SdkError` is non-exhaustive: an unknown kind is treated as worth a retry.
        _ => Retry::Transient,
    };
    (retry, describe(err))
}

/// `NoSuchBucket: The specified bucket does not exist (HTTP 404)` for service errors; the whole
/// cause chain otherwise (dispatch and timeout errors hide the useful part in their sources).
fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (err, err.code()) {
        (SdkError::ServiceError(_), Some(code)) => {
            let message = err.message().unwrap_or("no message");
            match status_of(err) {
                Some(status) => format!("{code}: {message} (HTTP {status})"),
                None => format!("{code}: {message}"),
            }
        }
        _ => DisplayErrorContext(err).to_string(),
    }
}

/// HTTP status of the response, when one arrived.
pub fn status_of<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response()
        .map(|response| response.status().as_u16())
}

fn classify_service(code: Option<&str>, status: Option<u16>) -> Retry {
    if code.is_some_and(|code| TRANSIENT_CODES.contains(&code)) {
        return Retry::Transient;
    }
    match status {
        Some(408 | 429) => Retry::Transient,
        Some(status) if status >= 500 => Retry::Transient,
        Some(_) => Retry::Permanent,
        None => Retry::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_transient_even_with_a_4xx_status() {
        assert_eq!(
            classify_service(Some("SlowDown"), Some(503)),
            Retry::Transient
        );
        assert_eq!(
            classify_service(Some("ThrottlingException"), Some(400)),
            Retry::Transient
        );
        assert_eq!(
            classify_service(Some("RequestTimeout"), Some(400)),
            Retry::Transient
        );
    }

    #[test]
    fn server_errors_and_429_are_transient() {
        assert_eq!(
            classify_service(Some("Whatever"), Some(500)),
            Retry::Transient
        );
        assert_eq!(classify_service(None, Some(502)), Retry::Transient);
        assert_eq!(classify_service(None, Some(429)), Retry::Transient);
    }

    #[test]
    fn client_errors_are_permanent() {
        assert_eq!(
            classify_service(Some("AccessDenied"), Some(403)),
            Retry::Permanent
        );
        assert_eq!(
            classify_service(Some("NoSuchBucket"), Some(404)),
            Retry::Permanent
        );
        assert_eq!(
            classify_service(Some("AWS.SimpleQueueService.NonExistentQueue"), Some(400)),
            Retry::Permanent
        );
    }
}
