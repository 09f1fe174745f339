//! `dmarc-tsv run` end to end against a moto server: bucket + queue + DLQ + S3→SQS notification,
//! real fixture mails (good, bad, duplicate) uploaded into `incoming/`, the binary run with
//! seed-style flags and env. Checks rows (against `dmarc-tsv parse` of the same files), the
//! archive (`-move`), quarantine objects and sidecars, an empty queue and empty staging.

#[path = "../../aws/tests/support/moto.rs"]
mod moto;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};

use dmarc_tsv_aws::aws_sdk_s3 as s3;
use dmarc_tsv_aws::aws_sdk_sqs as sqs;
use moto::MotoServer;
use s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use sqs::types::QueueAttributeName;
use tokio::runtime::Runtime;

const BIN: &str = env!("CARGO_BIN_EXE_dmarc-tsv");
const BUCKET: &str = "dmarc-data";
const QUEUE: &str = "dmarc-incoming";
const DLQ: &str = "dmarc-incoming-dlq";
/// `source_key` is the last output column; everything before it comes from the report itself.
const COLUMNS: usize = 45;

/// Mails with a usable aggregate report: (fixture path, key under `incoming/`).
const GOOD: &[(&str, &str)] = &[
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
const DUPLICATE_IN_RUN: (&str, &str) = (
    "mox/testdata/dmarc-reports/yahoo.eml",
    "incoming/resent/mox-yahoo-again",
);

/// Mails with no usable report: quarantined with the reason code.
const BAD: &[(&str, &str, &str)] = &[
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
const DUPLICATE_LATER: (&str, &str) = (
    "mox/testdata/dmarc-reports/google.eml",
    "incoming/later/mox-google-again",
);

fn corpus(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/corpus")
        .join(path)
}

struct Aws {
    rt: Runtime,
    s3: s3::Client,
    sqs: sqs::Client,
    queue_url: String,
    dlq_url: String,
}

impl Aws {
    fn setup(moto: &MotoServer) -> Aws {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
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
        let (queue_url, dlq_url) = rt.block_on(create_resources(&s3, &sqs));
        Aws {
            rt,
            s3,
            sqs,
            queue_url,
            dlq_url,
        }
    }

    fn put(&self, key: &str, body: Vec<u8>) {
        self.rt
            .block_on(
                self.s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    fn upload(&self, fixture: &str, key: &str) {
        let bytes = std::fs::read(corpus(fixture)).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        self.put(key, bytes);
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .s3
                .list_objects_v2()
                .bucket(BUCKET)
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

    fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let object = self.s3.get_object().bucket(BUCKET).key(key).send().await;
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

    /// Visible + in flight + delayed messages.
    fn queue_depth(&self, url: &str) -> u64 {
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

async fn create_resources(s3: &s3::Client, sqs: &sqs::Client) -> (String, String) {
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let dlq_url = sqs
        .create_queue()
        .queue_name(DLQ)
        .send()
        .await
        .expect("dlq")
        .queue_url;
    let dlq_url = dlq_url.expect("dlq url");
    let dlq_arn = queue_arn(sqs, &dlq_url).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let queue_url = sqs
        .create_queue()
        .queue_name(QUEUE)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let queue_arn = queue_arn(sqs, &queue_url).await;
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
        .bucket(BUCKET)
        .notification_configuration(notification)
        .send()
        .await
        .expect("notification configuration");
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

/// The seed's cron line, mixing every accepted spelling and the environment.
fn run_dmarc_tsv(moto: &MotoServer) -> Output {
    let output = Command::new(BIN)
        .args([
            "run",
            "-bucket=dmarc-data",
            "-bucketregion",
            "us-east-1",
            "--sqs",
            QUEUE,
            "-move",
            "archive",
            "-polltimeout=1",
            "--emptypolls=1",
            "-pollmessages",
            "4",
            "-verbose",
            "-deletesqs=true",
        ])
        .envs(moto.env())
        .env("DMARC_SQSREGION", "us-east-1")
        .env("DMARC_MAXRECORDS", "1")
        .env_remove("DMARC_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .output()
        .expect("spawn dmarc-tsv run");
    assert!(
        output.status.success(),
        "dmarc-tsv run failed ({}):\n{}\nmoto log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        moto.log_tail()
    );
    output
}

fn summary_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn number(value: &serde_json::Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

/// Rows of one fixture as `dmarc-tsv parse` prints them (TSV, `source_key` = the path given).
fn parsed_rows(fixture: &str) -> Vec<Vec<String>> {
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

fn tsv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
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

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip output");
    out
}

/// Every output row, checking file names and that each row sits in its `dt=` partition.
fn output_rows(aws: &Aws) -> Vec<Vec<String>> {
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
fn multiset(rows: &[Vec<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row[..COLUMNS - 1].join("\t")).or_default() += 1;
    }
    counts
}

fn today_candidates() -> BTreeSet<String> {
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

fn date_folder(key: &str, prefix: &str) -> (String, String) {
    let rest = key
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{key} not under {prefix}"));
    let (date, tail) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("{key}: no date folder"));
    (date.to_owned(), tail.to_owned())
}

fn print_requests(label: &str, summary: &serde_json::Value) {
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

#[test]
fn run_drains_stages_compacts_archives_and_quarantines_like_the_seed() {
    let moto = MotoServer::start();
    let aws = Aws::setup(&moto);
    for (fixture, key) in GOOD.iter().chain([&DUPLICATE_IN_RUN]) {
        aws.upload(fixture, key);
    }
    for (fixture, key, _) in BAD {
        aws.upload(fixture, key);
    }
    // Not under incoming/: no notification, never touched.
    aws.put("notes/readme.txt", b"not a mail".to_vec());
    let dates = today_candidates();

    let output = run_dmarc_tsv(&moto);
    let summary = summary_of(&output);
    print_requests("first run", &summary);

    // Rows: exactly the parse of the good mails, the in-run duplicate counted once.
    let mut expected = Vec::new();
    for (fixture, _) in GOOD {
        expected.extend(parsed_rows(fixture));
    }
    let rows = output_rows(&aws);
    assert_eq!(
        multiset(&rows),
        multiset(&expected),
        "output rows differ from `dmarc-tsv parse`"
    );
    let sources: BTreeSet<&str> = rows.iter().map(|r| r[COLUMNS - 1].as_str()).collect();
    for (_, key) in GOOD.iter().filter(|(f, _)| *f != DUPLICATE_IN_RUN.0) {
        assert!(
            sources.contains(key),
            "no row has source_key {key}: {sources:?}"
        );
    }
    assert_eq!(
        number(&summary, "/summary/rows_written"),
        expected.len() as u64
    );
    assert_eq!(number(&summary, "/summary/duplicates"), 1, "{summary}");
    assert_eq!(
        number(&summary, "/summary/stage/quarantined"),
        BAD.len() as u64
    );
    assert!(
        number(&summary, "/summary/stage/ignored") >= 1,
        "moto's s3:TestEvent: {summary}"
    );
    assert_eq!(number(&summary, "/summary/stage/foreign"), 0);

    // Archive: every usable mail moved to archive/YYYYMMDD/<key>, nothing left in incoming/.
    assert_eq!(
        aws.keys("incoming/"),
        Vec::<String>::new(),
        "incoming/ is emptied"
    );
    let archived = aws.keys("archive/");
    let mut archived_keys = BTreeSet::new();
    for key in &archived {
        let (date, original) = date_folder(key, "archive/");
        assert!(
            dates.contains(&date),
            "archive date {date} is not today ({dates:?})"
        );
        archived_keys.insert(original);
    }
    let expected_archive: BTreeSet<String> = GOOD
        .iter()
        .chain([&DUPLICATE_IN_RUN])
        .map(|(_, key)| key.to_string())
        .collect();
    assert_eq!(archived_keys, expected_archive);
    let (_, sample_key) = GOOD[0];
    let sample = archived
        .iter()
        .find(|k| k.ends_with(sample_key))
        .expect("archived sample");
    assert_eq!(
        aws.get(sample),
        std::fs::read(corpus(GOOD[0].0)).unwrap(),
        "bytes kept"
    );

    // Quarantine: the mail bytes and a reason sidecar per bad mail.
    let quarantined = aws.keys("quarantine/");
    assert_eq!(quarantined.len(), 2 * BAD.len(), "{quarantined:?}");
    for (fixture, key, code) in BAD {
        let relative = key.strip_prefix("incoming/").unwrap();
        let mail = quarantined
            .iter()
            .find(|k| k.ends_with(&format!("/{relative}")))
            .unwrap_or_else(|| panic!("{key} not quarantined: {quarantined:?}"));
        let (date, _) = date_folder(mail, "quarantine/");
        assert!(dates.contains(&date), "{mail}");
        assert_eq!(aws.get(mail), std::fs::read(corpus(fixture)).unwrap());
        let sidecar = String::from_utf8(aws.get(&format!("{mail}.reason.json"))).unwrap();
        let _: serde_json::Value = serde_json::from_str(&sidecar).expect("sidecar is JSON");
        assert!(
            sidecar.contains(code),
            "{key}: sidecar lacks {code}: {sidecar}"
        );
    }

    // Nothing left behind.
    assert_eq!(aws.queue_depth(&aws.queue_url), 0, "queue drained");
    assert_eq!(aws.queue_depth(&aws.dlq_url), 0, "nothing dead-lettered");
    assert_eq!(
        aws.keys("staging/"),
        Vec::<String>::new(),
        "staging emptied"
    );
    assert_eq!(
        aws.keys("state/commits/"),
        Vec::<String>::new(),
        "no unfinished commit"
    );
    assert!(
        !aws.keys("state/manifests/").is_empty(),
        "manifests remember committed reports"
    );
    assert_eq!(aws.keys("notes/"), vec!["notes/readme.txt".to_owned()]);

    // A later run: one re-sent report (deduplicated against the manifests) and nothing else.
    let outputs_before = aws.keys("dmarc/");
    aws.upload(DUPLICATE_LATER.0, DUPLICATE_LATER.1);
    let output = run_dmarc_tsv(&moto);
    let second = summary_of(&output);
    print_requests("second run", &second);
    assert_eq!(number(&second, "/summary/stage/mails"), 1, "{second}");
    assert_eq!(number(&second, "/summary/duplicates"), 1, "{second}");
    assert_eq!(number(&second, "/summary/rows_written"), 0, "{second}");
    assert_eq!(aws.keys("dmarc/"), outputs_before, "no new output file");
    assert_eq!(multiset(&output_rows(&aws)), multiset(&expected));
    assert!(
        aws.keys("archive/")
            .iter()
            .any(|k| k.ends_with(DUPLICATE_LATER.1)),
        "the re-sent mail is archived too"
    );
    assert_eq!(aws.keys("incoming/"), Vec::<String>::new());
    assert_eq!(aws.keys("staging/"), Vec::<String>::new());
    assert_eq!(aws.queue_depth(&aws.queue_url), 0);

    // An idle run: nothing to do, nothing written.
    let idle = summary_of(&run_dmarc_tsv(&moto));
    assert_eq!(number(&idle, "/summary/stage/mails"), 0, "{idle}");
    assert_eq!(
        number(&idle, "/requests/s3/put"),
        0,
        "an idle run writes nothing: {idle}"
    );
    assert_eq!(aws.keys("dmarc/"), outputs_before);
}

#[test]
fn run_fails_with_a_named_error_when_the_queue_does_not_exist() {
    let moto = MotoServer::start();
    let aws = Aws::setup(&moto);
    let output = Command::new(BIN)
        .args([
            "run",
            "-bucket",
            BUCKET,
            "-bucketregion",
            "us-east-1",
            "-sqs",
            "no-such-queue",
        ])
        .args(["-sqsregion", "us-east-1"])
        .envs(moto.env())
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-queue"), "{stderr}");
    assert_eq!(aws.keys(""), Vec::<String>::new(), "nothing written");
}
