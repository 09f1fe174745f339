//! The one error type of the pipeline stages. Every error says whether a retry may help
//! ([`PipelineError::is_transient`]); Lambdas map it to their error names with [`PipelineError::error_type`].

use super::failpoint::FailpointError;
use super::queue::QueueError;
use super::settings::SettingsError;
use super::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Storage or queue still failing after retries, or an `error` failpoint: run again later.
    #[error("transient: {0}")]
    Transient(String),
    /// Storage or queue refused for good (access denied, no such bucket, …).
    #[error("{0}")]
    Permanent(String),
    /// A pipeline object (staged rows, commit record, manifest, ledger) that cannot be read.
    #[error("corrupt pipeline object {key}: {detail}")]
    Corrupt { key: String, detail: String },
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] SettingsError),
    /// A caller passed something unusable (e.g. a partition name that is not YYYY-MM-DD).
    #[error("bad input: {0}")]
    BadInput(String),
}

impl PipelineError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PipelineError::Transient(_))
    }

    /// The Lambda error name: `Transient` (retry), `Config` or `BadInput` (no retry).
    pub fn error_type(&self) -> &'static str {
        match self {
            PipelineError::Transient(_) => "Transient",
            PipelineError::Config(_) => "Config",
            PipelineError::Permanent(_)
            | PipelineError::Corrupt { .. }
            | PipelineError::BadInput(_) => "BadInput",
        }
    }

    pub(crate) fn corrupt(key: &str, detail: impl std::fmt::Display) -> Self {
        PipelineError::Corrupt {
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }
}

impl From<StoreError> for PipelineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Transient(m) => PipelineError::Transient(m),
            StoreError::Permanent(m) => PipelineError::Permanent(m),
        }
    }
}

impl From<QueueError> for PipelineError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Transient(m) => PipelineError::Transient(m),
            QueueError::Permanent(m) => PipelineError::Permanent(m),
        }
    }
}

impl From<FailpointError> for PipelineError {
    fn from(e: FailpointError) -> Self {
        PipelineError::Transient(e.to_string())
    }
}
