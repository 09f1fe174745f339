//! The compact Lambda: three actions, each one bounded call into the core.
//!
//! - `{"action":"plan"}` -> `{"partitions":[..],"more"}` (at most 500 partitions per call)
//! - `{"action":"compact","partition":"YYYY-MM-DD"}` -> `{"partition","files","rows","duplicates","more"}`
//! - `{"action":"archive"}` -> `{"moved","quarantined","more"}`
//!
//! Errors: `Transient` (retry), `BadInput` / `Config` (no retry), as a lambda_runtime `Diagnostic`.
//! All pipeline logic lives in `dmarc-tsv-core`; this crate only wires clients and settings.

#[path = "../../common/support.rs"]
pub mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dmarc_tsv_aws::{S3Requests, S3Store};
use dmarc_tsv_core::pipeline::store::ObjectStore;
use dmarc_tsv_core::pipeline::{
    ArchiveSummary, CompactSummary, MailStoreResolver, Pipeline, PipelineError, PlanSummary,
    Settings,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use support::{Failure, FailureKind, Metrics};

/// Name used in logs and as the `Function` metric dimension.
pub const FUNCTION: &str = "compact";

/// When the runtime gives no deadline (local tools), work at most this long.
const FALLBACK_BUDGET: Duration = Duration::from_secs(240);

/// The invocation payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Plan,
    Compact { partition: String },
    Archive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOutput {
    pub partitions: Vec<String>,
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactOutput {
    pub partition: String,
    pub files: u64,
    pub rows: u64,
    pub duplicates: u64,
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveOutput {
    pub moved: u64,
    pub quarantined: u64,
    pub more: bool,
}

/// One of the three answers; serialised without a tag (each has its own fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Output {
    Plan(PlanOutput),
    Compact(CompactOutput),
    Archive(ArchiveOutput),
}

impl From<PlanSummary> for PlanOutput {
    fn from(s: PlanSummary) -> Self {
        PlanOutput {
            partitions: s.partitions,
            more: s.more,
        }
    }
}

impl From<&CompactSummary> for CompactOutput {
    fn from(s: &CompactSummary) -> Self {
        CompactOutput {
            partition: s.partition.clone(),
            files: s.files,
            rows: s.rows,
            duplicates: s.duplicates,
            more: s.more,
        }
    }
}

impl From<&ArchiveSummary> for ArchiveOutput {
    fn from(s: &ArchiveSummary) -> Self {
        ArchiveOutput {
            moved: s.moved,
            quarantined: s.quarantined,
            more: s.more,
        }
    }
}

/// Reads the payload; a missing or unknown action, or a missing partition, is `BadInput`.
pub fn parse_action(payload: Value) -> Result<Action, Failure> {
    if !payload.is_object() {
        return Err(Failure::bad_input(format!(
            "compact input must be an object with an \"action\" (plan, compact, archive), got {payload}"
        )));
    }
    serde_json::from_value(payload).map_err(|e| {
        Failure::bad_input(format!(
            "compact input: {e} (expected {{\"action\":\"plan\"}}, {{\"action\":\"compact\",\"partition\":\"YYYY-MM-DD\"}} or {{\"action\":\"archive\"}})"
        ))
    })
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

pub fn compact_metrics(s: &CompactSummary) -> Metrics {
    Metrics::default()
        .count("Files", s.files)
        .count("Rows", s.rows)
        .count("Reports", s.reports)
        .count("Duplicates", s.duplicates)
}

pub fn archive_metrics(s: &ArchiveSummary) -> Metrics {
    Metrics::default()
        .count("Moved", s.moved)
        .count("Bundles", s.bundles)
}

/// Clients and settings, built once per container.
pub struct Compact {
    pipeline: Pipeline,
    data: S3Store,
}

impl Compact {
    /// Reads the `DMARC_*` settings and connects S3. Must run inside the tokio runtime.
    pub async fn from_env() -> Result<Compact, Failure> {
        let settings = Settings::from_env(|k| std::env::var(k).ok()).map_err(Failure::config)?;
        Self::connect(settings).await
    }

    pub async fn connect(settings: Settings) -> Result<Compact, Failure> {
        // Settings first: a bad one must not wait for the SDK's credential and region chain.
        settings.validate().map_err(Failure::config)?;
        if settings.bucket.is_empty() {
            return Err(Failure::config("DMARC_BUCKET is not set"));
        }
        let region = (!settings.bucketregion.is_empty()).then_some(settings.bucketregion.as_str());
        let data = S3Store::connect(&settings.bucket, region).await;
        let mails = data.clone();
        // Archive moves mails inside the bucket their ledger names.
        let resolver: MailStoreResolver =
            Arc::new(move |bucket| Ok(Arc::new(mails.with_bucket(bucket)) as Arc<dyn ObjectStore>));
        let pipeline = Pipeline::new(settings, Arc::new(data.clone()), resolver)
            .map_err(|e| failure_of(&e))?;
        Ok(Compact { pipeline, data })
    }

    /// Runs one action in a blocking thread (the adapters block on the runtime).
    pub async fn invoke(&self, action: Action, budget: Duration) -> Result<Output, Failure> {
        let pipeline = self.pipeline.clone();
        let before = self.data.requests();
        let deadline = Instant::now() + budget;
        let (output, metrics) =
            tokio::task::spawn_blocking(move || run_action(&pipeline, action, deadline))
                .await
                .map_err(|e| Failure::transient(format!("compact worker thread failed: {e}")))?
                .map_err(|e| failure_of(&e))?;
        let requests = request_delta(before, self.data.requests());
        metrics.with_property("Requests", requests).emit(FUNCTION);
        Ok(output)
    }
}

fn run_action(
    p: &Pipeline,
    action: Action,
    deadline: Instant,
) -> Result<(Output, Metrics), PipelineError> {
    match action {
        Action::Plan => {
            let plan = dmarc_tsv_core::pipeline::plan_partitions(p)?;
            tracing::info!(
                partitions = plan.partitions.len(),
                more = plan.more,
                "plan done"
            );
            let metrics = Metrics::default().count("Partitions", plan.partitions.len() as u64);
            Ok((Output::Plan(plan.into()), metrics))
        }
        Action::Compact { partition } => {
            let s = dmarc_tsv_core::pipeline::compact_partition(p, &partition)?;
            tracing::info!(
                partition = %s.partition,
                files = s.files,
                rows = s.rows,
                reports = s.reports,
                duplicates = s.duplicates,
                staged_objects = s.staged_objects,
                resumed = s.resumed,
                more = s.more,
                "compaction done"
            );
            Ok((
                Output::Compact(CompactOutput::from(&s)),
                compact_metrics(&s),
            ))
        }
        Action::Archive => {
            let out_of_time = || Instant::now() >= deadline;
            let s = dmarc_tsv_core::pipeline::archive(p, &out_of_time)?;
            tracing::info!(
                moved = s.moved,
                bundles = s.bundles,
                quarantined = s.quarantined,
                ledgers = s.ledgers,
                waiting = s.waiting,
                more = s.more,
                "archive done"
            );
            Ok((
                Output::Archive(ArchiveOutput::from(&s)),
                archive_metrics(&s),
            ))
        }
    }
}

/// Requests this invocation sent, by API (the adapter counts per container).
fn request_delta(before: S3Requests, after: S3Requests) -> Value {
    json!({ "s3": support::s3_request_delta(&before, &after) })
}

/// The Lambda handler. `state` is the once-per-container setup; its failure is every
/// invocation's answer (Step Functions then sees `Config`, not a crash loop).
pub async fn handle(
    state: Arc<Result<Compact, Failure>>,
    event: lambda_runtime::LambdaEvent<Value>,
) -> Result<Output, Failure> {
    let compact = match state.as_ref() {
        Ok(compact) => compact,
        Err(setup) => return Err(Failure::new(setup.kind, &setup.message)),
    };
    let action = parse_action(event.payload)?;
    let budget = support::work_budget(event.context.deadline, SystemTime::now(), FALLBACK_BUDGET);
    tracing::debug!(
        deadline_ms = event.context.deadline,
        budget_ms = budget.as_millis() as u64,
        "time budget"
    );
    let result = compact.invoke(action, budget).await;
    if let Err(failure) = &result {
        tracing::error!(
            error_type = failure.kind.error_type(),
            "compact failed: {}",
            failure.message
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_from_the_state_machine_payloads() {
        assert_eq!(
            parse_action(json!({"action": "plan"})).ok(),
            Some(Action::Plan)
        );
        assert_eq!(
            parse_action(json!({"action": "compact", "partition": "2024-01-01"})).ok(),
            Some(Action::Compact {
                partition: "2024-01-01".into()
            })
        );
        assert_eq!(
            parse_action(json!({"action": "archive", "extra": 1})).ok(),
            Some(Action::Archive)
        );
    }

    #[test]
    fn wrong_payloads_are_bad_input() {
        for payload in [
            json!({}),
            json!({"action": "explode"}),
            json!({"action": "compact"}),
            json!("plan"),
            Value::Null,
        ] {
            let kind = parse_action(payload.clone()).err().map(|f| f.kind);
            assert_eq!(kind, Some(FailureKind::BadInput), "{payload}");
        }
    }

    #[test]
    fn outputs_have_the_contract_fields_and_nothing_else() {
        let compact = CompactSummary {
            partition: "2024-01-01".into(),
            files: 2,
            rows: 2048,
            reports: 9,
            duplicates: 1,
            more: true,
            outputs: vec!["dmarc/dt=2024-01-01/part-0.tsv.gz".into()],
            ..CompactSummary::default()
        };
        assert_eq!(
            serde_json::to_value(Output::Compact(CompactOutput::from(&compact)))
                .unwrap_or_default(),
            json!({"partition": "2024-01-01", "files": 2, "rows": 2048, "duplicates": 1, "more": true})
        );
        let plan = PlanSummary {
            partitions: vec!["2024-01-01".into()],
            more: false,
        };
        assert_eq!(
            serde_json::to_value(Output::Plan(plan.into())).unwrap_or_default(),
            json!({"partitions": ["2024-01-01"], "more": false})
        );
        let archive = ArchiveSummary {
            moved: 3,
            quarantined: 1,
            ledgers: 2,
            more: false,
            ..ArchiveSummary::default()
        };
        assert_eq!(
            serde_json::to_value(Output::Archive(ArchiveOutput::from(&archive)))
                .unwrap_or_default(),
            json!({"moved": 3, "quarantined": 1, "more": false})
        );
    }

    #[test]
    fn bad_partition_from_the_core_is_bad_input_and_storage_trouble_is_transient() {
        let bad = failure_of(&PipelineError::BadInput("partition \"x\"".into()));
        assert_eq!(bad.kind, FailureKind::BadInput);
        let slow = failure_of(&PipelineError::Transient("SlowDown".into()));
        assert_eq!(slow.kind, FailureKind::Transient);
        assert_eq!(
            lambda_runtime::Diagnostic::from(slow).error_type,
            "Transient"
        );
    }

    #[tokio::test]
    async fn a_setup_failure_is_every_invocations_answer() {
        let state = Arc::new(Err(Failure::config("DMARC_BUCKET is not set")));
        let event = lambda_runtime::LambdaEvent::new(
            json!({"action": "plan"}),
            lambda_runtime::Context::default(),
        );
        let failure = handle(state, event).await.err();
        assert_eq!(failure.as_ref().map(|f| f.kind), Some(FailureKind::Config));
        assert_eq!(
            failure.map(|f| f.message),
            Some("DMARC_BUCKET is not set".to_string())
        );
    }

    #[tokio::test]
    async fn settings_from_a_bad_environment_are_a_config_failure() {
        let mut settings = Settings::default();
        assert!(
            Compact::connect(settings.clone())
                .await
                .is_err_and(|f| f.kind == FailureKind::Config)
        );
        settings.bucket = "data".into();
        settings.compactrows = 0;
        assert!(
            Compact::connect(settings)
                .await
                .is_err_and(|f| f.kind == FailureKind::Config)
        );
    }

    #[test]
    fn compaction_metrics_are_files_rows_and_duplicates() {
        let s = CompactSummary {
            files: 1,
            rows: 10,
            reports: 2,
            duplicates: 1,
            ..CompactSummary::default()
        };
        let docs = compact_metrics(&s).emf_documents(FUNCTION, 5);
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            json!("DmarcTsv")
        );
        assert_eq!(doc["Function"], json!("compact"));
        assert_eq!(doc["Files"], json!(1));
        assert_eq!(doc["Rows"], json!(10));
        assert_eq!(doc["Duplicates"], json!(1));
    }

    #[test]
    fn archive_metrics_count_moved_mails_and_bundles() {
        let s = ArchiveSummary {
            moved: 100,
            bundles: 1,
            ..ArchiveSummary::default()
        };
        let docs = archive_metrics(&s).emf_documents(FUNCTION, 5);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["Moved"], json!(100));
        assert_eq!(docs[0]["Bundles"], json!(1));
    }
}
