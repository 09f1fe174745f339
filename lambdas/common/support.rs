//! What both Lambdas share: JSON logs, CloudWatch Embedded Metric Format lines, the stable error
//! names Step Functions' Retry/Catch match on, and the time budget of one invocation.
//!
//! Included by `lambdas/ingest` and `lambdas/compact` with `#[path]` (one file, two tiny crates,
//! no extra workspace member).

use std::fmt;
use std::time::{Duration, SystemTime};

use lambda_runtime::Diagnostic;
use serde_json::{Map, Value, json};

/// CloudWatch namespace of every metric the pipeline emits.
pub const METRIC_NAMESPACE: &str = "DmarcTsv";

/// The error names the state machine's Retry/Catch rely on. Keep them stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Storage or queue trouble that a later attempt may not see (throttling, 5xx, timeouts).
    Transient,
    /// The invocation's input is wrong (unknown action, malformed partition): never retried.
    BadInput,
    /// The function's settings are wrong (bad DMARC_* value, missing bucket): never retried.
    Config,
}

impl FailureKind {
    pub fn error_type(self) -> &'static str {
        match self {
            FailureKind::Transient => "Transient",
            FailureKind::BadInput => "BadInput",
            FailureKind::Config => "Config",
        }
    }
}

/// A handler failure: a kind (the Lambda `errorType`) and a message for the logs.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl fmt::Display) -> Self {
        Failure {
            kind,
            message: message.to_string(),
        }
    }
    pub fn transient(message: impl fmt::Display) -> Self {
        Failure::new(FailureKind::Transient, message)
    }
    pub fn bad_input(message: impl fmt::Display) -> Self {
        Failure::new(FailureKind::BadInput, message)
    }
    pub fn config(message: impl fmt::Display) -> Self {
        Failure::new(FailureKind::Config, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.error_type(), self.message)
    }
}

impl std::error::Error for Failure {}

impl From<Failure> for Diagnostic {
    fn from(failure: Failure) -> Self {
        Diagnostic {
            error_type: failure.kind.error_type().to_string(),
            error_message: failure.message,
        }
    }
}

/// JSON log lines on stdout (CloudWatch parses them); `RUST_LOG` filters, default `info`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Deadlines below this (ms since the epoch, 2001-09-09) cannot be real: `cargo lambda watch`
/// sends the function timeout itself (e.g. 600000) instead of an absolute time.
const EARLIEST_PLAUSIBLE_DEADLINE_MS: u64 = 1_000_000_000_000;

/// How long the core may work in this invocation: the context deadline minus a safety margin
/// (15 % of the remaining time, at most 30 s) so the last batch can finish and the response can be
/// sent before Lambda kills the process. No deadline (0: tests, local runs) gives `fallback`; an
/// implausibly small one is read as a duration from now (the local emulator's habit).
pub fn work_budget(deadline_ms: u64, now: SystemTime, fallback: Duration) -> Duration {
    let remaining = match deadline_ms {
        0 => return fallback,
        ms if ms < EARLIEST_PLAUSIBLE_DEADLINE_MS => Duration::from_millis(ms),
        ms => {
            let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            deadline.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    let margin = (remaining * 15 / 100).min(Duration::from_secs(30));
    remaining.saturating_sub(margin)
}

/// One invocation's counters, written as Embedded Metric Format log lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// (metric name, value) in emission order; all are counts.
    pub counts: Vec<(&'static str, u64)>,
    /// Quarantined mails per reason code, emitted with a `Reason` dimension.
    pub quarantined_by_reason: Vec<(String, u64)>,
    /// Extra members of the main document: logged and searchable, but not metrics (free).
    pub properties: Vec<(String, Value)>,
}

impl Metrics {
    pub fn count(mut self, name: &'static str, value: u64) -> Self {
        self.counts.push((name, value));
        self
    }

    pub fn quarantined_reason(mut self, reason: impl Into<String>, value: u64) -> Self {
        self.quarantined_by_reason.push((reason.into(), value));
        self
    }

    pub fn with_property(mut self, name: impl Into<String>, value: Value) -> Self {
        self.properties.push((name.into(), value));
        self
    }

    /// The EMF documents: one with every count under the `Function` dimension, then one per
    /// quarantine reason under `Function`+`Reason`.
    pub fn emf_documents(&self, function: &str, timestamp_ms: u64) -> Vec<Value> {
        let mut documents = Vec::new();
        if !self.counts.is_empty() {
            let values: Vec<(String, u64)> = self
                .counts
                .iter()
                .map(|(name, value)| ((*name).to_string(), *value))
                .collect();
            let mut main = emf_document(timestamp_ms, &[("Function", function)], &values);
            if let Value::Object(members) = &mut main {
                for (name, value) in &self.properties {
                    members.insert(name.clone(), value.clone());
                }
            }
            documents.push(main);
        }
        for (reason, value) in &self.quarantined_by_reason {
            documents.push(emf_document(
                timestamp_ms,
                &[("Function", function), ("Reason", reason)],
                &[("Quarantined".to_string(), *value)],
            ));
        }
        documents
    }

    /// Prints the EMF lines to stdout, where the Lambda log agent picks them up.
    pub fn emit(&self, function: &str) {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for document in self.emf_documents(function, now_ms) {
            println!("{document}");
        }
    }
}

fn emf_document(timestamp_ms: u64, dimensions: &[(&str, &str)], values: &[(String, u64)]) -> Value {
    let dimension_names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let metric_definitions: Vec<Value> = values
        .iter()
        .map(|(name, _)| json!({"Name": name, "Unit": "Count"}))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [dimension_names],
                "Metrics": metric_definitions,
            }],
        }),
    );
    for (name, value) in dimensions {
        root.insert((*name).into(), Value::String((*value).into()));
    }
    for (name, value) in values {
        root.insert(name.clone(), json!(value));
    }
    Value::Object(root)
}

/// S3 requests sent between two readings of a store's counters (the adapters count per
/// container, an invocation reports its own share).
pub fn s3_request_delta(
    before: &dmarc_tsv_aws::S3Requests,
    after: &dmarc_tsv_aws::S3Requests,
) -> Value {
    json!({
        "get": after.get - before.get,
        "put": after.put - before.put,
        "copy": after.copy - before.copy,
        "delete": after.delete - before.delete,
        "list": after.list - before.list,
        "head": after.head - before.head,
    })
}

#[cfg(test)]
mod support_tests {
    use super::*;

    #[test]
    fn failure_becomes_a_diagnostic_with_the_stable_error_type() {
        for (failure, name) in [
            (Failure::transient("slow down"), "Transient"),
            (Failure::bad_input("no action"), "BadInput"),
            (Failure::config("DMARC_BUCKET unset"), "Config"),
        ] {
            let message = failure.message.clone();
            let diagnostic = Diagnostic::from(failure);
            assert_eq!(diagnostic.error_type, name);
            assert_eq!(diagnostic.error_message, message);
        }
    }

    #[test]
    fn work_budget_keeps_a_margin_of_fifteen_percent_capped_at_thirty_seconds() {
        let start = 1_800_000_000u64;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
        let in_ms = |secs: u64| (start + secs) * 1_000;
        // 60 s left: 15 % = 9 s margin.
        assert_eq!(
            work_budget(in_ms(60), now, Duration::ZERO),
            Duration::from_secs(51)
        );
        // 900 s left: 135 s would be 15 %, capped at 30 s.
        assert_eq!(
            work_budget(in_ms(900), now, Duration::ZERO),
            Duration::from_secs(870)
        );
        // Past the deadline: nothing left.
        assert_eq!(
            work_budget(in_ms(0) - 5_000, now, Duration::from_secs(5)),
            Duration::ZERO
        );
        // `cargo lambda watch` sends the timeout (600 s) instead of a time: read it as one.
        assert_eq!(
            work_budget(600_000, now, Duration::ZERO),
            Duration::from_secs(570)
        );
        // No deadline at all: the fallback.
        assert_eq!(
            work_budget(0, now, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn emf_document_has_the_cloudwatch_shape() {
        let metrics = Metrics::default()
            .with_property("Requests", json!({"s3": {"get": 1}}))
            .count("Mails", 3)
            .count("Rows", 42)
            .count("Quarantined", 2)
            .quarantined_reason("no_report", 2);
        let docs = metrics.emf_documents("ingest", 1_700_000_000_000);
        assert_eq!(docs.len(), 2);

        let main = &docs[0];
        let directive = &main["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(main["_aws"]["Timestamp"], json!(1_700_000_000_000u64));
        assert_eq!(directive["Namespace"], json!("DmarcTsv"));
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "Mails", "Unit": "Count"},
                {"Name": "Rows", "Unit": "Count"},
                {"Name": "Quarantined", "Unit": "Count"},
            ])
        );
        assert_eq!(main["Function"], json!("ingest"));
        assert_eq!(main["Mails"], json!(3));
        assert_eq!(main["Rows"], json!(42));
        // Properties ride along without becoming metrics.
        assert_eq!(main["Requests"], json!({"s3": {"get": 1}}));
        assert_eq!(directive["Metrics"].as_array().map(Vec::len), Some(3));

        // Every metric named in the directive must be a top-level member, every dimension too:
        // CloudWatch drops the document otherwise.
        for doc in &docs {
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            for metric in directive["Metrics"].as_array().into_iter().flatten() {
                let name = metric["Name"].as_str().unwrap_or_default();
                assert!(doc[name].is_number(), "metric {name} missing in {doc}");
            }
            for set in directive["Dimensions"].as_array().into_iter().flatten() {
                for dim in set.as_array().into_iter().flatten() {
                    let dim = dim.as_str().unwrap_or_default();
                    assert!(doc[dim].is_string(), "dimension {dim} missing in {doc}");
                }
            }
        }

        let by_reason = &docs[1];
        assert_eq!(
            by_reason["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Reason"]])
        );
        assert_eq!(by_reason["Reason"], json!("no_report"));
        assert_eq!(by_reason["Quarantined"], json!(2));
    }

    #[test]
    fn no_counts_means_no_document() {
        assert!(Metrics::default().emf_documents("compact", 1).is_empty());
    }
}
