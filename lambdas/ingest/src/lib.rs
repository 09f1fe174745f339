//! The ingest Lambda: drains the mail queue into staging with the core's `drain`, for as long as
//! the invocation's time budget allows, and answers with small counters for Step Functions.
//!
//! Input: `{}` or `{"worker": n}` (n only labels the logs). Output:
//! `{"mails","reports","rows","quarantined","ignored","more"}`. Errors: `Transient` (retry),
//! `Config` / `BadInput` (no retry), as a lambda_runtime `Diagnostic`.
//! All pipeline logic lives in `dmarc-tsv-core`; this crate only wires clients and settings.

#[path = "../../common/support.rs"]
pub mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dmarc_tsv_aws::{S3Requests, S3Store, SqsQueue, SqsRequests};
use dmarc_tsv_core::pipeline::store::ObjectStore;
use dmarc_tsv_core::pipeline::{Pipeline, PipelineError, Settings, StageSummary};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use support::{Failure, FailureKind, Metrics};

/// Name used in logs and as the `Function` metric dimension.
pub const FUNCTION: &str = "ingest";

/// When the runtime gives no deadline (local tools), work at most this long.
const FALLBACK_BUDGET: Duration = Duration::from_secs(240);

/// What Step Functions sends. Unknown fields are ignored (the state machine may add some).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct IngestInput {
    #[serde(default)]
    pub worker: Option<u32>,
}

/// What Step Functions gets back.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestOutput {
    pub mails: u64,
    pub reports: u64,
    pub rows: u64,
    pub quarantined: u64,
    pub ignored: u64,
    /// The queue was not drained (time budget spent): invoke again.
    pub more: bool,
}

impl From<&StageSummary> for IngestOutput {
    fn from(s: &StageSummary) -> Self {
        IngestOutput {
            mails: s.mails,
            reports: s.reports,
            rows: s.rows,
            quarantined: s.quarantined,
            ignored: s.ignored,
            more: s.more,
        }
    }
}

/// Reads the invocation payload: an object (possibly empty) or `null`; anything else is `BadInput`.
pub fn parse_input(payload: Value) -> Result<IngestInput, Failure> {
    match payload {
        Value::Null => Ok(IngestInput::default()),
        Value::Object(_) => serde_json::from_value(payload)
            .map_err(|e| Failure::bad_input(format!("ingest input: {e}"))),
        // The state machine's Map passes the worker index itself when no selector wraps it.
        Value::Number(n) => Ok(IngestInput {
            worker: n.as_u64().and_then(|n| u32::try_from(n).ok()),
        }),
        other => Err(Failure::bad_input(format!(
            "ingest input must be an object like {{\"worker\": 0}}, got {other}"
        ))),
    }
}

/// Pipeline errors to the stable Lambda error names.
pub fn failure_of(error: &PipelineError) -> Failure {
    let kind = match error.error_type() {
        "Transient" => FailureKind::Transient,
        "Config" => FailureKind::Config,
        _ => FailureKind::BadInput,
    };
    Failure::new(kind, error)
}

/// Metrics of one invocation (EMF): Mails, Reports, Rows, Quarantined (+ per reason).
pub fn metrics(summary: &StageSummary) -> Metrics {
    let mut m = Metrics::default()
        .count("Mails", summary.mails)
        .count("Reports", summary.reports)
        .count("Rows", summary.rows)
        .count("Quarantined", summary.quarantined);
    for (reason, n) in &summary.quarantined_by_reason {
        m = m.quarantined_reason(reason.clone(), *n);
    }
    m
}

/// Clients and settings, built once per container.
pub struct Ingest {
    pipeline: Pipeline,
    queue: Arc<SqsQueue>,
    data: S3Store,
}

impl Ingest {
    /// Reads the `DMARC_*` settings and connects S3/SQS. Must run inside the tokio runtime (the
    /// adapters keep its handle). A bad setting is a `Config` failure.
    pub async fn from_env() -> Result<Ingest, Failure> {
        let settings = Settings::from_env(|k| std::env::var(k).ok()).map_err(Failure::config)?;
        Self::connect(settings).await
    }

    pub async fn connect(settings: Settings) -> Result<Ingest, Failure> {
        // Settings first: a bad one must not wait for the SDK's credential and region chain.
        settings.validate().map_err(Failure::config)?;
        if settings.bucket.is_empty() {
            return Err(Failure::config("DMARC_BUCKET is not set"));
        }
        if settings.sqs.is_empty() {
            return Err(Failure::config("DMARC_SQS is not set"));
        }
        let data = S3Store::connect(&settings.bucket, region(&settings.bucketregion)).await;
        let queue = SqsQueue::connect(&settings.sqs, region(&settings.sqsregion))
            .await
            .map_err(|e| Failure::new(kind_of_queue_error(&e), e))?;
        let mails = data.clone();
        // The S3 event names the mail's bucket; it may differ from the data bucket (seed setups).
        let resolver: dmarc_tsv_core::pipeline::MailStoreResolver =
            Arc::new(move |bucket| Ok(Arc::new(mails.with_bucket(bucket)) as Arc<dyn ObjectStore>));
        let pipeline = Pipeline::new(settings, Arc::new(data.clone()), resolver)
            .map_err(|e| failure_of(&e))?;
        Ok(Ingest {
            pipeline,
            queue: Arc::new(queue),
            data,
        })
    }

    /// One invocation: drain for at most `budget`, in a blocking thread (the adapters block on
    /// the runtime, which must not happen on an async worker).
    pub async fn invoke(
        &self,
        input: IngestInput,
        budget: Duration,
    ) -> Result<IngestOutput, Failure> {
        let pipeline = self.pipeline.clone();
        let queue = Arc::clone(&self.queue);
        let before = (self.data.requests(), self.queue.requests());
        let deadline = Instant::now() + budget;
        let summary = tokio::task::spawn_blocking(move || {
            let out_of_time = || Instant::now() >= deadline;
            dmarc_tsv_core::pipeline::drain(&pipeline, queue.as_ref(), &out_of_time)
        })
        .await
        .map_err(|e| Failure::transient(format!("ingest worker thread failed: {e}")))?
        .map_err(|e| failure_of(&e))?;
        let requests = request_delta(before, (self.data.requests(), self.queue.requests()));
        tracing::info!(
            worker = input.worker,
            mails = summary.mails,
            reports = summary.reports,
            rows = summary.rows,
            quarantined = summary.quarantined,
            ignored = summary.ignored,
            foreign = summary.foreign,
            gone = summary.gone,
            left_for_retry = summary.left_for_retry,
            more = summary.more,
            "ingest done"
        );
        metrics(&summary)
            .with_property("Requests", requests)
            .emit(FUNCTION);
        Ok(IngestOutput::from(&summary))
    }
}

fn region(r: &str) -> Option<&str> {
    (!r.is_empty()).then_some(r)
}

fn kind_of_queue_error(e: &dmarc_tsv_core::pipeline::queue::QueueError) -> FailureKind {
    match e {
        dmarc_tsv_core::pipeline::queue::QueueError::Transient(_) => FailureKind::Transient,
        // A queue that does not exist or cannot be reached with these rights is a deployment error.
        dmarc_tsv_core::pipeline::queue::QueueError::Permanent(_) => FailureKind::Config,
    }
}

/// Requests this invocation sent, by API (the adapters count per container).
fn request_delta(before: (S3Requests, SqsRequests), after: (S3Requests, SqsRequests)) -> Value {
    let (s3_before, sqs_before) = before;
    let (s3, sqs) = after;
    serde_json::json!({
        "s3": support::s3_request_delta(&s3_before, &s3),
        "sqs": {
            "receive": sqs.receive - sqs_before.receive,
            "delete_batch": sqs.delete_batch - sqs_before.delete_batch,
            "get_queue_url": sqs.get_queue_url - sqs_before.get_queue_url,
        },
    })
}

/// The Lambda handler: parse, run, map errors. `state` is the once-per-container setup (a setup
/// failure is returned to every invocation, so Step Functions sees `Config`, not a crash loop).
pub async fn handle(
    state: Arc<Result<Ingest, Failure>>,
    event: lambda_runtime::LambdaEvent<Value>,
) -> Result<IngestOutput, Failure> {
    let ingest = match state.as_ref() {
        Ok(ingest) => ingest,
        Err(setup) => return Err(Failure::new(setup.kind, &setup.message)),
    };
    let input = parse_input(event.payload)?;
    let budget = support::work_budget(event.context.deadline, SystemTime::now(), FALLBACK_BUDGET);
    tracing::debug!(
        deadline_ms = event.context.deadline,
        budget_ms = budget.as_millis() as u64,
        "time budget"
    );
    let result = ingest.invoke(input, budget).await;
    if let Err(failure) = &result {
        tracing::error!(
            error_type = failure.kind.error_type(),
            "ingest failed: {}",
            failure.message
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_accepts_empty_worker_and_bare_index() {
        assert_eq!(parse_input(json!({})).ok(), Some(IngestInput::default()));
        assert_eq!(parse_input(Value::Null).ok(), Some(IngestInput::default()));
        assert_eq!(
            parse_input(json!({"worker": 3, "extra": true})).ok(),
            Some(IngestInput { worker: Some(3) })
        );
        assert_eq!(
            parse_input(json!(2)).ok(),
            Some(IngestInput { worker: Some(2) })
        );
    }

    #[test]
    fn input_of_the_wrong_shape_is_bad_input() {
        for payload in [json!("go"), json!([1]), json!({"worker": "x"})] {
            let failure = parse_input(payload).err().map(|f| f.kind);
            assert_eq!(failure, Some(FailureKind::BadInput));
        }
    }

    #[test]
    fn output_is_the_contract_shape() {
        let summary = StageSummary {
            mails: 5,
            reports: 4,
            rows: 40,
            quarantined: 1,
            ignored: 2,
            foreign: 7,
            more: true,
            ..StageSummary::default()
        };
        let value = serde_json::to_value(IngestOutput::from(&summary)).unwrap_or_default();
        assert_eq!(
            value,
            json!({"mails": 5, "reports": 4, "rows": 40, "quarantined": 1, "ignored": 2, "more": true})
        );
    }

    #[test]
    fn pipeline_errors_keep_their_retry_class() {
        let transient = failure_of(&PipelineError::Transient("503".into()));
        assert_eq!(transient.kind, FailureKind::Transient);
        let permanent = failure_of(&PipelineError::Permanent("AccessDenied".into()));
        assert_eq!(permanent.kind, FailureKind::BadInput);
        let settings = Settings {
            pollmessages: 11,
            ..Settings::default()
        };
        let config = settings
            .validate()
            .map_err(PipelineError::from)
            .err()
            .map(|e| failure_of(&e).kind);
        assert_eq!(config, Some(FailureKind::Config));
    }

    #[tokio::test]
    async fn a_setup_failure_is_every_invocations_answer() {
        let state = Arc::new(Err(Failure::config("DMARC_SQS is not set")));
        let event = lambda_runtime::LambdaEvent::new(
            json!({"worker": 0}),
            lambda_runtime::Context::default(),
        );
        let failure = handle(state, event).await.err();
        assert_eq!(failure.map(|f| f.kind), Some(FailureKind::Config));
    }

    #[tokio::test]
    async fn missing_bucket_or_queue_is_a_config_failure_before_any_request() {
        let no_bucket = Ingest::connect(Settings::default()).await.err();
        assert_eq!(no_bucket.map(|f| f.kind), Some(FailureKind::Config));
        let no_queue = Ingest::connect(Settings {
            bucket: "data".into(),
            ..Settings::default()
        })
        .await
        .err();
        assert_eq!(no_queue.map(|f| f.kind), Some(FailureKind::Config));
    }

    #[test]
    fn metrics_carry_quarantine_reasons_as_a_dimension() {
        let mut summary = StageSummary {
            mails: 3,
            reports: 2,
            rows: 9,
            quarantined: 1,
            ..StageSummary::default()
        };
        summary.quarantined_by_reason.insert("no_report".into(), 1);
        let docs = metrics(&summary).emf_documents(FUNCTION, 1);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["Mails"], json!(3));
        assert_eq!(docs[0]["Rows"], json!(9));
        assert_eq!(docs[1]["Reason"], json!("no_report"));
        assert_eq!(docs[1]["Quarantined"], json!(1));
    }
}
