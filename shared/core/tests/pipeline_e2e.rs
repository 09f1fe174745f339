//! The whole pipeline through the real parser on fixture mails, over a local store and an
//! in-memory queue: staging, quarantine, partitioning, dedup, moves, retries, failpoints, volume.

mod pipeline_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dmarc_tsv_core::pipeline::failpoint::{
    FAILPOINTS, FailpointSpec, formats_reaching, with_failpoint,
};
use dmarc_tsv_core::pipeline::layout::yyyymmdd;
use dmarc_tsv_core::pipeline::queue::{Message, Queue, QueueError, ReceiveOptions};
use dmarc_tsv_core::pipeline::run::compact_all;
use dmarc_tsv_core::pipeline::{
    ArchiveFormat, LocalStore, Pipeline, RetryPolicy, RunSummary, Settings, archive, drain, run_all,
};
use pipeline_support::*;

const SES: &str = "dmarc-report-ses-tsv/test-data/";
const USABLE: [&str; 2] = [
    "mail-with-gzip-dmarc-report.txt",
    "mail-with-zipped-dmarc-report.txt",
];
const BROKEN: [&str; 4] = [
    "mail-with-bad-gzip.txt",
    "mail-with-bad-zip.txt",
    "mail-with-non-dmarc-zip.txt",
    "mail-without-attachments.txt",
];
/// One report (2 records) in three containers: the same report delivered three times.
const SAME_REPORT: [&str; 3] = [
    "avvertix-dmarc-report-parser/tests/fixtures/dmarc.xml",
    "avvertix-dmarc-report-parser/tests/fixtures/dmarc.xml.gz",
    "avvertix-dmarc-report-parser/tests/fixtures/dmarc.zip",
];

fn never() -> bool {
    false
}

/// Copies fixtures into `incoming/` of the store; returns their keys.
fn put_mails(root: &Path, fixtures: &[&str]) -> Vec<String> {
    let store = LocalStore::new(root);
    fixtures
        .iter()
        .map(|f| {
            let name = f.rsplit('/').next().unwrap();
            let key = format!("incoming/{name}");
            dmarc_tsv_core::pipeline::store::ObjectStore::put(&store, &key, &corpus(f)).unwrap();
            key
        })
        .collect()
}

fn ses(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{SES}{n}")).collect()
}

fn settings() -> Settings {
    Settings {
        pollmessages: 4,
        // One batch per poll, so batch boundaries are easy to assert.
        stagebatch: 4,
        emptypolls: 1,
        move_prefix: "archive".into(),
        ..Settings::default()
    }
}

fn all_fixtures() -> Vec<String> {
    let mut f = ses(&USABLE);
    f.extend(ses(&BROKEN));
    f.extend(SAME_REPORT.iter().map(|s| s.to_string()));
    f
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn messages_of_several_polls_are_staged_as_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fixtures = all_fixtures();
    let keys = put_mails(root, &refs(&fixtures));
    let p = local_pipeline(
        root,
        Settings {
            stagebatch: 8,
            ..settings()
        },
    );
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));

    let s = drain(&p, &q, &never).unwrap();
    assert_eq!((s.mails, s.reports, s.rows), (9, 5, 8));
    // Polls of 4: 4+4 reach the batch size of 8, the last message is staged when the queue is dry.
    assert_eq!(s.batches, 2);
    assert_eq!(files(root, "staging/ledger/").len(), 2);
    assert_eq!(q.undeleted(), 0);
}

/// Redelivers every undeleted message on its second receive, as SQS does when a visibility
/// timeout runs out while messages are still being gathered.
struct RedeliverOnce {
    inner: MemQueue,
    receives: std::sync::atomic::AtomicU32,
}

impl Queue for RedeliverOnce {
    fn receive(&self, opts: &ReceiveOptions) -> Result<Vec<Message>, QueueError> {
        if self
            .receives
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.inner.redeliver();
        }
        self.inner.receive(opts)
    }
    fn delete(&self, receipts: &[String]) -> Result<(), QueueError> {
        self.inner.delete(receipts)
    }
    fn describe(&self) -> String {
        "redelivering queue".into()
    }
}

#[test]
fn a_message_redelivered_while_gathering_is_staged_and_deleted_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fixtures = all_fixtures();
    let keys = put_mails(root, &refs(&fixtures));
    let p = local_pipeline(
        root,
        Settings {
            stagebatch: 100,
            ..settings()
        },
    );
    let q = RedeliverOnce {
        inner: MemQueue::new(),
        receives: Default::default(),
    };
    q.inner.send_keys(&refs(&keys));

    let s = drain(&p, &q, &never).unwrap();
    assert_eq!((s.mails, s.reports, s.rows), (9, 5, 8));
    assert_eq!(s.batches, 1, "all gathered into one batch");
    assert_eq!(s.deleted_messages, 9, "the redelivered four are kept once");
    assert_eq!(q.inner.undeleted(), 0);
}

#[test]
fn gathering_ends_before_the_visibility_timeout_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fixtures = all_fixtures();
    let keys = put_mails(root, &refs(&fixtures));
    // A 1-second visibility timeout leaves no time to gather: every poll is staged at once.
    let p = local_pipeline(
        root,
        Settings {
            stagebatch: 100,
            sqsprocessingtime: 1,
            ..settings()
        },
    );
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));

    let s = drain(&p, &q, &never).unwrap();
    assert_eq!(s.mails, 9);
    assert_eq!(
        s.batches, 3,
        "9 messages at 4 per poll, each poll staged on its own"
    );
    assert_eq!(q.undeleted(), 0);
}

#[test]
fn stage_writes_staged_rows_and_ledgers_and_quarantines_then_compaction_and_archive_finish() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fixtures = all_fixtures();
    let keys = put_mails(root, &refs(&fixtures));
    let p = local_pipeline(root, settings());
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));

    let s = drain(&p, &q, &never).unwrap();
    assert_eq!((s.mails, s.reports, s.rows), (9, 5, 8));
    assert_eq!(s.quarantined, 4);
    assert_eq!(s.quarantined_by_reason.values().sum::<u64>(), 4);
    assert_eq!(s.batches, 3, "9 messages at 4 per poll");
    assert_eq!(q.undeleted(), 0);
    let staged = files(root, "staging/dt=");
    assert!(!staged.is_empty());
    assert_eq!(files(root, "staging/ledger/").len(), 3);
    // Quarantine: the mail and its reason, and the original is gone.
    let day = yyyymmdd(p.now());
    for name in BROKEN {
        let q = format!("quarantine/{day}/{name}");
        assert!(root.join(&q).is_file(), "{q}");
        let reason: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join(format!("{q}.reason.json"))).unwrap())
                .unwrap();
        assert!(!reason["code"].as_str().unwrap().is_empty());
        assert!(
            !reason["reasons"].as_array().unwrap().is_empty(),
            "{reason}"
        );
        assert!(!root.join(format!("incoming/{name}")).exists());
    }
    // Archive waits for compaction.
    let a = archive(&p, &never).unwrap();
    assert_eq!((a.moved, a.waiting), (0, 3));

    let mut total = RunSummary::default();
    assert!(!compact_all(&p, &never, &mut total).unwrap());
    assert_eq!(
        total.rows_written, 4,
        "2 single-record mails + one 2-record report"
    );
    assert_eq!((total.duplicates, total.duplicate_rows), (2, 4));
    let a = archive(&p, &never).unwrap();
    assert_eq!((a.moved, a.quarantined, a.ledgers), (5, 4, 3));
    assert!(files(root, "incoming/").is_empty());
    assert_eq!(files(root, &format!("archive/{day}/incoming/")).len(), 5);
    assert_no_leftovers(root);
}

#[test]
fn rows_are_partitioned_by_report_begin_date_utc() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = LocalStore::new(root);
    let day1 = 1_704_067_200; // 2024-01-01 00:00:00
    let reports = [
        ("a", day1, 2),
        ("b", day1 + 86_399, 3),
        ("c", day1 + 86_400, 4),
    ];
    let q = MemQueue::new();
    for (id, begin, records) in reports {
        let key = format!("incoming/{id}.xml");
        dmarc_tsv_core::pipeline::store::ObjectStore::put(
            &store,
            &key,
            report_xml("org.example", id, begin, records).as_bytes(),
        )
        .unwrap();
        q.send_keys(&[&key]);
    }
    let p = local_pipeline(root, settings());
    run_all(&p, &q, &never).unwrap();
    let count = |d: &str| -> usize {
        files(root, &format!("dmarc/dt={d}/"))
            .iter()
            .map(|k| file_lines(&root.join(k)).len())
            .sum()
    };
    assert_eq!(count("2024-01-01"), 5);
    assert_eq!(count("2024-01-02"), 4);
}

#[test]
fn the_same_report_in_two_runs_or_re_sent_in_another_mail_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = local_pipeline(
        root,
        Settings {
            move_prefix: String::new(),
            ..settings()
        },
    );
    let keys = put_mails(root, &[SAME_REPORT[0]]);
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));
    let first = run_all(&p, &q, &never).unwrap();
    assert_eq!((first.rows_written, first.duplicates), (2, 0));
    let rows = output_rows(root);

    // Second run: the same mail again (not moved) and the report re-sent zipped.
    let keys = put_mails(root, &[SAME_REPORT[0], SAME_REPORT[2]]);
    q.send_keys(&refs(&keys));
    let second = run_all(&p, &q, &never).unwrap();
    assert_eq!((second.rows_written, second.duplicates), (0, 2));
    assert_eq!(output_rows(root), rows);
    assert_no_leftovers(root);
}

#[test]
fn messages_that_name_no_mail_or_a_gone_mail_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let p = local_pipeline(dir.path(), settings());
    let q = MemQueue::new();
    q.send(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#);
    q.send("this is not an event");
    q.send_keys(&["incoming/archived-long-ago.eml"]);
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!((s.stage.ignored, s.stage.foreign, s.stage.gone), (1, 1, 1));
    // The foreign message stays for the DLQ; the others are deleted.
    assert_eq!(q.undeleted(), 1);
}

#[test]
fn transient_store_errors_are_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let keys = put_mails(dir.path(), &refs(&ses(&USABLE)));
    let flaky = Arc::new(FlakyStore::new(LocalStore::new(dir.path())));
    flaky.fail_next("put", 2);
    flaky.fail_next("get", 2);
    flaky.fail_next("list", 2);
    let p = Pipeline::single_store(settings(), flaky.clone())
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        });
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!((s.rows_written, s.archive.moved), (2, 2));
    assert_eq!(q.undeleted(), 0);
}

#[test]
fn a_mail_that_cannot_be_read_leaves_its_message_for_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let keys = put_mails(dir.path(), &refs(&ses(&USABLE)));
    let flaky = Arc::new(FlakyStore::new(LocalStore::new(dir.path())));
    flaky.fail_next("get", 1);
    let p = Pipeline::single_store(settings(), flaky.clone())
        .unwrap()
        .with_retry(RetryPolicy::none());
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!((s.stage.left_for_retry, s.rows_written), (1, 1));
    assert_eq!(q.undeleted(), 1);
    q.redeliver();
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!((s.rows_written, q.undeleted()), (1, 0));
    assert_eq!(output_rows(dir.path()).len(), 2);
}

#[test]
fn a_deadline_stops_the_drain_and_says_more() {
    let dir = tempfile::tempdir().unwrap();
    let keys = put_mails(dir.path(), &refs(&ses(&USABLE)));
    let p = local_pipeline(dir.path(), settings());
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));
    let s = run_all(&p, &q, &|| true).unwrap();
    assert!(s.more && s.stage.more);
    assert_eq!(s.stage.mails, 0);
    let s = run_all(&p, &q, &never).unwrap();
    assert!(!s.more);
    assert_eq!(s.rows_written, 2);
}

/// What a finished run leaves: output rows, quarantined files, archived files and the archived
/// mails (bundles opened), staging/commits.
type EndState = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn end_state(root: &Path) -> EndState {
    (
        output_rows(root),
        files(root, "quarantine/"),
        files(root, "archive/"),
        archived_mails(root, "archive/"),
    )
}

#[test]
fn every_failpoint_in_error_mode_then_a_rerun_gives_the_clean_output() {
    let fixtures = all_fixtures();
    for format in [ArchiveFormat::Mail, ArchiveFormat::Mbox] {
        let settings = Settings {
            archiveformat: format,
            ..settings()
        };
        let clean_dir = tempfile::tempdir().unwrap();
        let keys = put_mails(clean_dir.path(), &refs(&fixtures));
        let p = local_pipeline(clean_dir.path(), settings.clone());
        let q = MemQueue::new();
        q.send_keys(&refs(&keys));
        run_all(&p, &q, &never).unwrap();
        let clean = end_state(clean_dir.path());
        assert_eq!(clean.0.len(), 4);
        assert_eq!(
            clean.3.len(),
            5,
            "{format}: every usable mail archived once"
        );

        for name in FAILPOINTS
            .iter()
            .filter(|n| formats_reaching(n).contains(&format))
        {
            let dir = tempfile::tempdir().unwrap();
            let keys = put_mails(dir.path(), &refs(&fixtures));
            let p = local_pipeline(dir.path(), settings.clone());
            let q = MemQueue::new();
            q.send_keys(&refs(&keys));
            let spec: FailpointSpec = format!("{name}:1:error").parse().unwrap();
            let first = with_failpoint(spec, || run_all(&p, &q, &never));
            // Errors on one mail leave its message (the batch goes on); others fail the call.
            let fired = match &first {
                Err(e) => e.is_transient() && e.to_string().contains(name),
                Ok(s) => s.stage.left_for_retry > 0,
            };
            assert!(fired, "{format} {name}: {first:?}");
            q.redeliver();
            let second = run_all(&p, &q, &never).unwrap();
            assert!(!second.more);
            assert_eq!(end_state(dir.path()), clean, "{format} {name}");
            assert_no_leftovers(dir.path());
            assert!(files(dir.path(), "staging/ledger/").is_empty(), "{name}");
            assert_eq!(q.undeleted(), 0, "{name}");
        }
    }
}

#[test]
fn volume_files_are_full_except_the_last_of_each_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = LocalStore::new(root);
    let q = MemQueue::new();
    let day1 = 1_704_067_200;
    let mut expected_rows = BTreeMap::new();
    // 300 reports, unique ids, 1..=40 records, over 3 days.
    for i in 0..300u32 {
        let records = 1 + (i * 7919) % 40;
        let begin = day1 + i64::from(i % 3) * 86_400;
        let key = format!("incoming/gen-{i:04}.xml");
        let xml = report_xml("volume.example", &format!("vol-{i}"), begin, records);
        dmarc_tsv_core::pipeline::store::ObjectStore::put(&store, &key, xml.as_bytes()).unwrap();
        q.send_keys(&[&key]);
        *expected_rows.entry(i % 3).or_insert(0u64) += u64::from(records);
    }
    let p = local_pipeline(
        root,
        Settings {
            maxrecords: 1,
            pollmessages: 10,
            ..settings()
        },
    );
    let s = run_all(&p, &q, &never).unwrap();
    let total: u64 = expected_rows.values().sum();
    assert_eq!((s.stage.mails, s.rows_written), (300, total));
    let mut full = 0;
    let mut files_n = 0;
    for d in ["2024-01-01", "2024-01-02", "2024-01-03"] {
        let sizes: Vec<usize> = files(root, &format!("dmarc/dt={d}/"))
            .iter()
            .map(|k| file_lines(&root.join(k)).len())
            .collect();
        let partials = sizes.iter().filter(|n| **n != 1024).count();
        assert!(partials <= 1, "{d}: {sizes:?}");
        assert!(sizes.iter().all(|n| *n <= 1024));
        full += sizes.len() - partials;
        files_n += sizes.len();
    }
    let all_but_last = files_n - 3;
    assert!(full >= all_but_last && full * 100 >= all_but_last * 95);
    assert_no_leftovers(root);
}

#[test]
fn a_report_dated_beyond_any_partition_is_quarantined_not_stuck_in_staging() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = LocalStore::new(root);
    let q = MemQueue::new();
    for (id, begin) in [
        ("far", 999_999_999_999i64),
        ("past", -99_999_999_999),
        ("ok", 1_704_067_200),
    ] {
        let key = format!("incoming/{id}.xml");
        let xml = report_xml("org.example", id, begin, 2);
        dmarc_tsv_core::pipeline::store::ObjectStore::put(&store, &key, xml.as_bytes()).unwrap();
        q.send_keys(&[&key]);
    }
    let p = local_pipeline(root, settings());
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!((s.stage.quarantined, s.rows_written), (2, 2));
    assert_eq!(
        s.stage.quarantined_by_reason.get("report_unusable"),
        Some(&2)
    );
    assert_no_leftovers(root);
    assert!(files(root, "staging/ledger/").is_empty());
}

#[test]
fn invalid_settings_are_a_config_error_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Settings {
        maxrecords: 0,
        ..Settings::default()
    };
    let e = Pipeline::single_store(bad, Arc::new(LocalStore::new(dir.path()))).err();
    let e = e.expect("maxrecords 0 is refused");
    assert_eq!(e.error_type(), "Config");
    assert!(e.to_string().contains("maxrecords"), "{e}");
}

#[test]
fn hooks_see_quarantines_and_summaries_give_metrics() {
    use dmarc_tsv_core::Skipped;
    use dmarc_tsv_core::pipeline::{Hooks, MailRef};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);
    impl Hooks for Seen {
        fn quarantined(&self, mail: &MailRef, reasons: &[Skipped]) {
            let code = reasons.first().map(|r| r.reason.code()).unwrap_or("none");
            self.0.lock().unwrap().push(format!("{} {code}", mail.key));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = put_mails(
        dir.path(),
        &refs(&ses(&["mail-without-attachments.txt", USABLE[0]])),
    );
    let seen = Arc::new(Seen::default());
    let p = local_pipeline(dir.path(), settings()).with_hooks(seen.clone());
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        ["incoming/mail-without-attachments.txt no_attachment"]
    );
    let metrics: BTreeMap<String, f64> = s.metrics().into_iter().collect();
    assert_eq!(metrics["Quarantined"], 1.0);
    assert_eq!(metrics["Quarantined_no_attachment"], 1.0);
    assert_eq!(metrics["RowsWritten"], 1.0);
    assert_eq!(metrics["MailsMoved"], 1.0);
}

#[test]
fn a_mail_announced_bigger_than_maxmailbytes_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = put_mails(root, &refs(&ses(&USABLE)));
    let p = local_pipeline(
        root,
        Settings {
            maxmailbytes: 1000,
            ..settings()
        },
    );
    let q = MemQueue::new();
    for key in &keys {
        let size = std::fs::metadata(root.join(key)).unwrap().len();
        assert!(size > 1000);
        q.send(&dmarc_tsv_core::pipeline::events::synthetic_s3_event(
            BUCKET,
            key,
            Some(size),
        ));
    }
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!(
        s.stage.quarantined_by_reason.get("limit_exceeded"),
        Some(&2)
    );
    assert_eq!(s.rows_written, 0);
    let day = yyyymmdd(p.now());
    let sidecars = files(root, &format!("quarantine/{day}/"));
    assert_eq!(sidecars.len(), 2, "reasons only: {sidecars:?}");
    assert!(sidecars.iter().all(|k| k.ends_with(".reason.json")));
    assert_eq!(
        files(root, "incoming/").len(),
        2,
        "the mails stay where they are"
    );
    assert_eq!(q.undeleted(), 0);
}

#[test]
fn an_unreadable_ledger_does_not_stop_the_archiving_of_others() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keys = put_mails(root, &refs(&ses(&USABLE)));
    let p = local_pipeline(root, settings());
    p.data
        .put("staging/ledger/0000-garbage.json", b"{not json")
        .unwrap();
    let q = MemQueue::new();
    q.send_keys(&refs(&keys));
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!((s.archive.moved, s.archive.unreadable), (2, 1));
    assert_eq!(
        files(root, "staging/ledger/"),
        ["staging/ledger/0000-garbage.json"]
    );
}
