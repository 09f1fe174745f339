//! Shared by the `run_*` tests: a bucket + queue + DLQ + S3→SQS notification on a moto server,
//! the fixture mails, running the binary, and reading the outputs back.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use dmarc_tsv_aws::aws_sdk_s3 as s3;
use dmarc_tsv_aws::aws_sdk_sqs as sqs;
use s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use sqs::types::QueueAttributeName;
use tokio::runtime::Runtime;

use crate::moto::MotoServer;

pub const BIN: &str = env!("CARGO_BIN_EXE_dmarc-tsv");
/// The names the seed-style end-to-end test uses.
pub const BUCKET: &str = "dmarc-data";
pub const QUEUE: &str = "dmarc-incoming";
/// `source_key` is the last output column; everything before it comes from the report itself.
pub const COLUMNS: usize = 45;

/// Mails with a usable aggregate report: (fixture path, key under `incoming/`).
pub const GOOD: &[(&str, &str)] = &[
    (
        "mox/testdata/dmarc-reports/google.eml",
        "incoming/mox-google",
    ),
    (
        "mox/testdata/dmarc-reports/mailru.eml",
        "incoming/mox-mailru",
    ),
    (
        "mox/testdata/dmarc-reports/outlook.eml",
        "incoming/mox-outlook",
    ),
    ("mox/testdata/dmarc-reports/yahoo.eml", "incoming/mox-yahoo"),
    (
        "mail-auth/resources/dmarc-feedback/100.eml",
        "incoming/ma100",
    ),
    (
        "mail-auth/resources/dmarc-feedback/104.eml",
        "incoming/ma104",
    ),
    (
        "dmarc-report-ses-tsv/test-data/mail-with-zipped-dmarc-report.txt",
        "incoming/ses zipped+report.txt",
    ),
    (
        "parsedmarc/samples/aggregate/Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml",
        "incoming/Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml",
    ),
    (
        "parsedmarc/samples/aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz",
        "incoming/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz",
    ),
];

/// The same report as a GOOD mail, received again in the same run.
pub const DUPLICATE_IN_RUN: (&str, &str) = (
    "mox/testdata/dmarc-reports/yahoo.eml",
    "incoming/resent/mox-yahoo-again",
);

/// Mails with no usable report: quarantined with the reason code.
pub const BAD: &[(&str, &str, &str)] = &[
    (
        "dmarc-report-ses-tsv/test-data/mail-without-attachments.txt",
        "incoming/no-attachment.txt",
        "no_attachment",
    ),
    (
        "dmarc-report-ses-tsv/test-data/mail-with-bad-gzip.txt",
        "incoming/bad-gzip.txt",
        "corrupt_gzip",
    ),
    (
        "mox/testdata/tlsreports/example.eml",
        "incoming/tls-report.eml",
        "unsupported_report",
    ),
];

/// Received again in a LATER run: deduplicated against what the first run committed.
pub const DUPLICATE_LATER: (&str, &str) = (
    "mox/testdata/dmarc-reports/google.eml",
    "incoming/later/mox-google-again",
);

/// A fixture's bytes as an mbox bundle gives them back: mbox cannot keep a missing final newline
/// (a bare `.xml.gz` file has none), so it gets one.
pub fn as_bundled(fixture: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(corpus(fixture)).unwrap();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes
}

pub fn corpus(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/corpus")
        .join(path)
}

/// One data bucket with its queue and DLQ on a moto server, and clients to inspect them.
pub struct Aws {
    pub rt: Arc<Runtime>,
    pub s3: s3::Client,
    pub sqs: sqs::Client,
    pub bucket: String,
    pub queue: String,
    pub queue_url: String,
    pub dlq_url: String,
}

impl Aws {
    /// Creates `bucket`, queue `queue` (+ `<queue>-dlq`) and the notification on `incoming/`.
    pub fn setup(moto: &MotoServer, bucket: &str, queue: &str) -> Aws {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s3_config = s3::Config::builder()
            .behavior_version(s3::config::BehaviorVersion::latest())
            .region(s3::config::Region::new("us-east-1"))
            .credentials_provider(s3::config::Credentials::new(
                "test", "test", None, None, "t",
            ))
            .endpoint_url(moto.endpoint())
            .force_path_style(true)
            .build();
        let sqs_config = sqs::Config::builder()
            .behavior_version(sqs::config::BehaviorVersion::latest())
            .region(sqs::config::Region::new("us-east-1"))
            .credentials_provider(sqs::config::Credentials::new(
                "test", "test", None, None, "t",
            ))
            .endpoint_url(moto.endpoint())
            .build();
        let s3 = s3::Client::from_conf(s3_config);
        let sqs = sqs::Client::from_conf(sqs_config);
        let (queue_url, dlq_url) = rt.block_on(create_resources(&s3, &sqs, bucket, queue));
        Aws {
            rt: Arc::new(rt),
            bucket: bucket.to_owned(),
            queue: queue.to_owned(),
            s3,
            sqs,
            queue_url,
            dlq_url,
        }
    }

    pub fn put(&self, key: &str, body: Vec<u8>) {
        self.rt
            .block_on(
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    pub fn upload(&self, fixture: &str, key: &str) {
        let bytes = std::fs::read(corpus(fixture)).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        self.put(key, bytes);
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.expect("list");
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
            }
            keys.sort();
            keys
        })
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let object = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
            let object = object.unwrap_or_else(|e| panic!("get {key}: {e:?}"));
            object
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec()
        })
    }

    /// Another bucket whose `incoming/` notifies this site's queue (mails stored apart from the
    /// data bucket, as the seed tool allowed); the returned view shares clients and queues.
    pub fn add_mail_bucket(&self, bucket: &str) -> Aws {
        self.rt.block_on(async {
            self.s3
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .expect("create mail bucket");
            let arn = queue_arn(&self.sqs, &self.queue_url).await;
            notify_queue_on_incoming(&self.s3, bucket, &arn).await;
        });
        Aws {
            rt: Arc::clone(&self.rt),
            s3: self.s3.clone(),
            sqs: self.sqs.clone(),
            bucket: bucket.to_owned(),
            queue: self.queue.clone(),
            queue_url: self.queue_url.clone(),
            dlq_url: self.dlq_url.clone(),
        }
    }

    /// Visible + in flight + delayed messages.
    pub fn queue_depth(&self, url: &str) -> u64 {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ];
        let attrs = self
            .rt
            .block_on(
                self.sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .set_attribute_names(Some(names.to_vec()))
                    .send(),
            )
            .expect("queue attributes");
        let values = attrs.attributes().cloned().unwrap_or_default();
        names
            .iter()
            .map(|n| {
                values
                    .get(n)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

async fn create_resources(
    s3: &s3::Client,
    sqs: &sqs::Client,
    bucket: &str,
    queue: &str,
) -> (String, String) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{queue}-dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url;
    let dlq_url = dlq_url.expect("dlq url");
    let dlq_arn = queue_arn(sqs, &dlq_url).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let queue_url = sqs
        .create_queue()
        .queue_name(queue)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let queue_arn = queue_arn(sqs, &queue_url).await;
    notify_queue_on_incoming(s3, bucket, &queue_arn).await;
    (queue_url, dlq_url)
}

async fn queue_arn(sqs: &sqs::Client, url: &str) -> String {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue arn");
    attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .expect("QueueArn attribute")
}

/// Runs `dmarc-tsv run` on this site with the given extra arguments and environment.
pub fn run_binary(moto: &MotoServer, aws: &Aws, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .args(args)
        .envs(moto.env())
        .env("DMARC_BUCKET", &aws.bucket)
        .env("DMARC_SQS", &aws.queue)
        .env("DMARC_BUCKETREGION", "us-east-1")
        .env("DMARC_SQSREGION", "us-east-1")
        .env_remove("DMARC_FAILPOINT")
        .env_remove("DMARC_FAILPOINT_ONCE_FILE")
        .env_remove("DMARC_LOG_FORMAT")
        .env_remove("RUST_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("spawn dmarc-tsv run")
}

/// Panics with the run's stderr and moto's log unless the run succeeded.
pub fn assert_success(output: &Output, moto: &MotoServer, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\nmoto log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        moto.log_tail()
    );
}

/// The rows the GOOD mails must produce, per `dmarc-tsv parse`.
pub fn expected_good_rows() -> Vec<Vec<String>> {
    GOOD.iter()
        .flat_map(|(fixture, _)| parsed_rows(fixture))
        .collect()
}

pub fn summary_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

pub fn number(value: &serde_json::Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

/// Rows of one fixture as `dmarc-tsv parse` prints them (TSV, `source_key` = the path given).
pub fn parsed_rows(fixture: &str) -> Vec<Vec<String>> {
    let output = Command::new(BIN)
        .arg("parse")
        .arg(corpus(fixture))
        .output()
        .expect("parse");
    assert!(
        output.status.success(),
        "parse {fixture}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    tsv_rows(&output.stdout)
}

pub fn tsv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8 rows");
    text.lines()
        .map(|line| {
            let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
            assert_eq!(
                fields.len(),
                COLUMNS,
                "row with {} fields: {line}",
                fields.len()
            );
            fields
        })
        .collect()
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip output");
    out
}

/// Every output row, checking file names and that each row sits in its `dt=` partition.
pub fn output_rows(aws: &Aws) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for key in aws.keys("dmarc/") {
        let (partition, name) = key
            .strip_prefix("dmarc/dt=")
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or_else(|| panic!("output key outside a dt= partition: {key}"));
        assert!(
            name.starts_with("part-") && name.ends_with(".tsv.gz"),
            "{key}"
        );
        let file_rows = tsv_rows(&gunzip(&aws.get(&key)));
        assert!(!file_rows.is_empty(), "empty output file {key}");
        assert!(
            file_rows.len() <= 1024,
            "-maxrecords 1 allows 1024 rows per file: {key}"
        );
        for row in &file_rows {
            assert!(
                row[2].starts_with(partition),
                "row begins {} outside {key}",
                row[2]
            );
        }
        rows.extend(file_rows);
    }
    rows
}

/// Rows keyed by everything but `source_key`, counted.
pub fn multiset(rows: &[Vec<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row[..COLUMNS - 1].join("\t")).or_default() += 1;
    }
    counts
}

pub fn today_candidates() -> BTreeSet<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // The run may cross midnight UTC between this and its start.
    [now - 600, now, now + 600]
        .iter()
        .map(|t| dmarc_tsv_core::pipeline::layout::yyyymmdd(*t))
        .collect()
}

pub fn date_folder(key: &str, prefix: &str) -> (String, String) {
    let rest = key
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{key} not under {prefix}"));
    let (date, tail) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("{key}: no date folder"));
    (date.to_owned(), tail.to_owned())
}

pub fn print_requests(label: &str, summary: &serde_json::Value) {
    let reports = number(summary, "/summary/stage/reports").max(1);
    let s3 = &summary["requests"]["s3"];
    let sqs = &summary["requests"]["sqs"];
    let total_s3: u64 = ["get", "put", "copy", "delete", "list", "head"]
        .iter()
        .map(|k| s3[*k].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "{label}: {reports} reports; S3 {s3}; SQS {sqs}; {:.1} S3 requests per report; \
         estimated ${}",
        total_s3 as f64 / reports as f64,
        summary["requests"]["estimated_request_cost_usd"]
    );
}

/// S3 → SQS notification for every object created under `incoming/` of `bucket`.
async fn notify_queue_on_incoming(s3: &s3::Client, bucket: &str, queue_arn: &str) {
    let filter = NotificationConfigurationFilter::builder()
        .key(
            S3KeyFilter::builder()
                .filter_rules(
                    FilterRule::builder()
                        .name(FilterRuleName::Prefix)
                        .value("incoming/")
                        .build(),
                )
                .build(),
        )
        .build();
    let notification = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(queue_arn)
                .events(Event::from("s3:ObjectCreated:*"))
                .filter(filter)
                .build()
                .expect("queue configuration"),
        )
        .build();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(notification)
        .send()
        .await
        .expect("notification configuration");
}
