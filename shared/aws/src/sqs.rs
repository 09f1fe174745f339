//! [`SqsQueue`]: the core's [`Queue`] over one SQS queue.

use std::sync::Arc;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use dmarc_tsv_core::pipeline::queue::{Message, Queue, QueueError, ReceiveOptions};
use tokio::runtime::Handle;

use crate::classify::{Retry, classify};
use crate::counters::{SqsCounters, SqsRequests};

/// SQS accepts at most 10 entries per DeleteMessageBatch and 10 messages per receive.
const SQS_BATCH_MAX: usize = 10;
/// SQS long polling waits at most 20 s.
const SQS_MAX_WAIT_SECONDS: u32 = 20;
/// SQS visibility timeouts are at most 12 hours.
const SQS_MAX_VISIBILITY_SECONDS: u32 = 12 * 60 * 60;

/// One queue, by URL. Like [`crate::S3Store`], every trait call blocks on the runtime given at
/// construction: call it from a non-async thread (CLI main thread, `spawn_blocking`).
#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    handle: Handle,
    counters: Arc<SqsCounters>,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>, handle: Handle) -> Self {
        SqsQueue {
            client,
            url: url.into(),
            handle,
            counters: Arc::default(),
        }
    }

    /// Builds the client from the environment and resolves `name_or_url` (the seed's `-sqs` is a
    /// queue NAME; a URL is used as is). Must run in an async context.
    pub async fn connect(name_or_url: &str, region: Option<&str>) -> Result<Self, QueueError> {
        let client = crate::config::sqs_client(region).await;
        let counters = Arc::new(SqsCounters::default());
        let url = resolve_queue_url(&client, name_or_url, &counters).await?;
        Ok(SqsQueue {
            client,
            url,
            handle: Handle::current(),
            counters,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    pub fn requests(&self) -> SqsRequests {
        self.counters.snapshot()
    }

    pub fn counters(&self) -> Arc<SqsCounters> {
        Arc::clone(&self.counters)
    }

    async fn receive_async(&self, opts: &ReceiveOptions) -> Result<Vec<Message>, QueueError> {
        let max = clamp_to_i32(opts.max_messages, 1, SQS_BATCH_MAX as u32);
        let wait = clamp_to_i32(opts.wait_seconds, 0, SQS_MAX_WAIT_SECONDS);
        let visibility = clamp_to_i32(
            opts.visibility_timeout_seconds,
            0,
            SQS_MAX_VISIBILITY_SECONDS,
        );
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait)
            .visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|err| queue_error("ReceiveMessage", &err))?;
        let messages: Vec<Message> = output.messages().iter().filter_map(to_message).collect();
        self.counters.count_receive(messages.len());
        Ok(messages)
    }

    async fn delete_async(&self, receipts: &[String]) -> Result<(), QueueError> {
        let mut failures = DeleteFailures::default();
        for chunk in receipts.chunks(SQS_BATCH_MAX) {
            if let Err(err) = self.delete_chunk(chunk, &mut failures).await {
                failures.call_errors.push(err);
            }
        }
        failures.into_result()
    }

    async fn delete_chunk(
        &self,
        chunk: &[String],
        failures: &mut DeleteFailures,
    ) -> Result<(), QueueError> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|err| {
                        QueueError::Permanent(format!("DeleteMessageBatch entry: {err}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| queue_error("DeleteMessageBatch", &err))?;
        self.counters.count_delete_batch(output.successful().len());
        for failed in output.failed() {
            failures.record(failed.code(), failed.message(), failed.sender_fault());
        }
        Ok(())
    }
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Queue for SqsQueue {
    fn receive(&self, opts: &ReceiveOptions) -> Result<Vec<Message>, QueueError> {
        self.handle.block_on(self.receive_async(opts))
    }

    fn delete(&self, receipts: &[String]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.handle.block_on(self.delete_async(receipts))
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// What went wrong across the chunks of one `delete` call: every chunk is attempted so one
/// failure does not leave the rest of the batch to be redelivered needlessly.
#[derive(Default)]
struct DeleteFailures {
    call_errors: Vec<QueueError>,
    transient_entries: Vec<String>,
    permanent_entries: Vec<String>,
}

impl DeleteFailures {
    fn record(&mut self, code: &str, message: Option<&str>, sender_fault: bool) {
        let text = format!("{code}: {}", message.unwrap_or(""));
        if code == "ReceiptHandleIsInvalid" {
            // The receipt expired (the message became visible again and was re-received) or the
            // message is already gone: it will be redelivered and handled idempotently.
            tracing::warn!(%text, "SQS refused a stale receipt; the message may be redelivered");
        } else if sender_fault {
            self.permanent_entries.push(text);
        } else {
            self.transient_entries.push(text);
        }
    }

    fn into_result(mut self) -> Result<(), QueueError> {
        let transient = self
            .call_errors
            .iter()
            .any(|e| matches!(e, QueueError::Transient(_)))
            || !self.transient_entries.is_empty();
        let mut parts: Vec<String> = self.call_errors.drain(..).map(|e| e.to_string()).collect();
        parts.extend(
            self.transient_entries
                .iter()
                .map(|e| format!("entry failed: {e}")),
        );
        parts.extend(
            self.permanent_entries
                .iter()
                .map(|e| format!("entry refused: {e}")),
        );
        if parts.is_empty() {
            return Ok(());
        }
        let message = format!("DeleteMessageBatch: {}", parts.join("; "));
        if transient {
            Err(QueueError::Transient(message))
        } else {
            Err(QueueError::Permanent(message))
        }
    }
}

/// Returns `name_or_url` when it is already a URL, else asks SQS (GetQueueUrl).
pub async fn resolve_queue_url(
    client: &aws_sdk_sqs::Client,
    name_or_url: &str,
    counters: &SqsCounters,
) -> Result<String, QueueError> {
    let trimmed = name_or_url.trim();
    if trimmed.starts_with("https://") || trimmed.starts_with("http://") {
        return Ok(trimmed.to_owned());
    }
    if trimmed.is_empty() {
        return Err(QueueError::Permanent("empty queue name".into()));
    }
    counters.count_get_queue_url();
    let output = client
        .get_queue_url()
        .queue_name(trimmed)
        .send()
        .await
        .map_err(|err| queue_error(&format!("GetQueueUrl {trimmed}"), &err))?;
    output
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| QueueError::Permanent(format!("GetQueueUrl {trimmed}: no URL returned")))
}

fn to_message(message: &aws_sdk_sqs::types::Message) -> Option<Message> {
    // Without a receipt handle a message can never be deleted; SQS always sends one.
    let receipt = message.receipt_handle()?.to_owned();
    let receive_count = message
        .attributes()
        .and_then(|attrs| attrs.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .unwrap_or(1);
    Some(Message {
        id: message.message_id().unwrap_or_default().to_owned(),
        receipt,
        body: message.body().unwrap_or_default().to_owned(),
        receive_count,
    })
}

fn clamp_to_i32(value: u32, min: u32, max: u32) -> i32 {
    i32::try_from(value.clamp(min, max)).unwrap_or(i32::MAX)
}

fn queue_error<E>(op: &str, err: &SdkError<E>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (retry, detail) = classify(err);
    let message = format!("{op}: {detail}");
    match retry {
        Retry::Transient => QueueError::Transient(message),
        Retry::Permanent => QueueError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_receipts_are_not_failures() {
        let mut failures = DeleteFailures::default();
        failures.record("ReceiptHandleIsInvalid", Some("expired"), true);
        assert!(failures.into_result().is_ok());
    }

    #[test]
    fn server_side_entry_failures_are_transient() {
        let mut failures = DeleteFailures::default();
        failures.record("InternalError", None, false);
        failures.record("InvalidParameterValue", None, true);
        assert!(matches!(
            failures.into_result(),
            Err(QueueError::Transient(_))
        ));
    }

    #[test]
    fn sender_faults_are_permanent() {
        let mut failures = DeleteFailures::default();
        failures.record("InvalidParameterValue", Some("bad"), true);
        let err = failures.into_result().unwrap_err();
        assert!(matches!(err, QueueError::Permanent(ref m) if m.contains("InvalidParameterValue")));
    }

    #[test]
    fn receive_options_are_clamped_to_sqs_bounds() {
        assert_eq!(clamp_to_i32(0, 1, 10), 1);
        assert_eq!(clamp_to_i32(50, 1, 10), 10);
        assert_eq!(
            clamp_to_i32(u32::MAX, 0, SQS_MAX_VISIBILITY_SECONDS),
            43_200
        );
    }
}
