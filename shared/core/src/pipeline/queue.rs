//! The queue that announces new mail: SQS in AWS (`dmarc-tsv-aws`), a listing of input files
//! locally. Delivery is at least once; the pipeline deletes a message only after its mail is safe.

use crate::error::Severity;

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// What `delete` takes.
    pub receipt: String,
    pub body: String,
    /// How many times it has been received (SQS `ApproximateReceiveCount`), 1 when unknown.
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("transient queue error: {0}")]
    Transient(String),
    #[error("queue error: {0}")]
    Permanent(String),
}

impl QueueError {
    pub fn severity(&self) -> Severity {
        match self {
            QueueError::Transient(_) => Severity::Transient,
            QueueError::Permanent(_) => Severity::Permanent,
        }
    }
}

/// Receive settings, the seed's `-pollmessages`, `-polltimeout` and `-sqsprocessingtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    pub max_messages: u32,
    pub wait_seconds: u32,
    pub visibility_timeout_seconds: u32,
}

pub trait Queue: Send + Sync {
    /// Up to `max_messages`; an empty vector is an empty poll.
    fn receive(&self, opts: &ReceiveOptions) -> Result<Vec<Message>, QueueError>;
    /// Deletes the messages with these receipts (batched by the implementation).
    fn delete(&self, receipts: &[String]) -> Result<(), QueueError>;
    fn describe(&self) -> String;
}
