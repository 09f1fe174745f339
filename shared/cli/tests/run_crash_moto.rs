//! Crash consistency of `dmarc-tsv run` on S3/SQS (moto): the process is killed at every
//! failpoint (`DMARC_FAILPOINT=<name>:<nth>:abort`, exit 86), then run again without it. The end
//! state must be the one of an undisturbed run: the same rows (as a multiset), every mail archived
//! or quarantined, the queue empty, nothing left in staging or in unfinished commits.

#[path = "../../aws/tests/support/moto.rs"]
mod moto;
mod run_support;

use std::collections::BTreeSet;
use std::time::Duration;

use dmarc_tsv_core::pipeline::failpoint::formats_reaching;
use dmarc_tsv_core::pipeline::layout::hash_parts;
use dmarc_tsv_core::pipeline::mbox::split_messages;
use dmarc_tsv_core::pipeline::{ArchiveFormat, FAILPOINTS};
use moto::MotoServer;
use run_support::*;

/// Exit status of a process stopped by an `abort` failpoint.
const ABORT_EXIT: i32 = 86;
/// Visibility timeout of the crashing run: its received messages come back this soon.
const CRASH_VISIBILITY_SECONDS: u64 = 3;

fn mails() -> Vec<(&'static str, &'static str)> {
    let mut mails: Vec<_> = GOOD[..4].to_vec();
    mails.push(DUPLICATE_IN_RUN);
    mails.push((BAD[0].0, BAD[0].1));
    mails
}

/// Every failpoint at its first hit under each archive format that reaches it, plus later hits
/// where a step runs more than once.
fn cases() -> Vec<(String, ArchiveFormat)> {
    let mut cases: Vec<(String, ArchiveFormat)> = FAILPOINTS
        .iter()
        .flat_map(|name| {
            formats_reaching(name)
                .iter()
                .map(move |format| (format!("{name}:1:abort"), *format))
        })
        .collect();
    cases.extend(
        [
            ("stage.after_get_mail:3:abort", ArchiveFormat::Mail),
            ("stage.after_staged_put:2:abort", ArchiveFormat::Mail),
            ("compact.after_output_put:2:abort", ArchiveFormat::Mail),
            ("archive.after_copy:3:abort", ArchiveFormat::Mail),
            ("archive.after_source_delete:3:abort", ArchiveFormat::Mbox),
        ]
        .map(|(case, format)| (case.to_string(), format)),
    );
    cases
}

/// Short polls; several batches (2 messages each); a short visibility only for the crash run.
fn run_args(visibility: u64, format: ArchiveFormat) -> Vec<String> {
    [
        "-move=archive",
        "-polltimeout=1",
        "-emptypolls=1",
        "-pollmessages=2",
        "-maxrecords=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("-sqsprocessingtime={visibility}"),
        format!("-archiveformat={format}"),
    ])
    .collect()
}

/// The archived mails as short digests, sorted: single objects as they are, bundles opened.
fn archived_mails(aws: &Aws) -> Vec<String> {
    let mut mails = Vec::new();
    for key in aws.keys("archive/") {
        let bytes = aws.get(&key);
        if key.ends_with(".mbox.gz") {
            mails.extend(split_messages(&gunzip(&bytes)));
        } else {
            mails.push(bytes);
        }
    }
    let mut digests: Vec<String> = mails.iter().map(|m| hash_parts([m], 8)).collect();
    digests.sort();
    digests
}

fn check_end_state(aws: &Aws, case: &str, expected: &[Vec<String>]) {
    assert_eq!(
        multiset(&output_rows(aws)),
        multiset(expected),
        "{case}: rows differ"
    );
    assert_eq!(
        aws.keys("incoming/"),
        Vec::<String>::new(),
        "{case}: incoming/ left"
    );
    let usable = mails().into_iter().filter(|(_, key)| *key != BAD[0].1);
    let keys = aws.keys("archive/");
    if keys.iter().all(|k| k.ends_with(".mbox.gz")) {
        // Bundles: every usable mail exactly once, as an mbox gives it back.
        let mut expected: Vec<String> = usable
            .map(|(fixture, _)| hash_parts([as_bundled(fixture)], 8))
            .collect();
        expected.sort();
        assert_eq!(archived_mails(aws), expected, "{case}: archived mails");
    } else {
        let archived: BTreeSet<String> = keys
            .iter()
            .map(|key| date_folder(key, "archive/").1)
            .collect();
        let expected: BTreeSet<String> = usable.map(|(_, key)| key.to_string()).collect();
        assert_eq!(archived, expected, "{case}: archive");
    }
    assert_eq!(
        aws.keys("quarantine/").len(),
        2,
        "{case}: quarantined mail + sidecar"
    );
    assert_eq!(
        aws.queue_depth(&aws.queue_url),
        0,
        "{case}: queue not empty"
    );
    assert_eq!(aws.queue_depth(&aws.dlq_url), 0, "{case}: dead-lettered");
    assert_eq!(
        aws.keys("staging/"),
        Vec::<String>::new(),
        "{case}: staging left"
    );
    assert_eq!(
        aws.keys("state/commits/"),
        Vec::<String>::new(),
        "{case}: open commit"
    );
}

#[test]
fn a_run_killed_at_any_failpoint_then_rerun_ends_like_an_undisturbed_run() {
    let moto = MotoServer::start();
    let expected: Vec<Vec<String>> = GOOD[..4]
        .iter()
        .flat_map(|(fixture, _)| parsed_rows(fixture))
        .collect();
    // Crash every case first, then wait once for the in-flight messages to come back.
    let mut sites = Vec::new();
    for (index, (case, format)) in cases().into_iter().enumerate() {
        let crash_args = run_args(CRASH_VISIBILITY_SECONDS, format);
        let crash_args: Vec<&str> = crash_args.iter().map(String::as_str).collect();
        let aws = Aws::setup(&moto, &format!("crash-{index}"), &format!("crash-{index}"));
        for (fixture, key) in mails() {
            aws.upload(fixture, key);
        }
        let output = run_binary(
            &moto,
            &aws,
            &crash_args,
            &[("DMARC_FAILPOINT", case.as_str())],
        );
        assert_eq!(
            output.status.code(),
            Some(ABORT_EXIT),
            "{case} did not fire (or failed otherwise):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        sites.push((format!("{format} {case}"), format, aws));
    }
    std::thread::sleep(Duration::from_secs(CRASH_VISIBILITY_SECONDS + 1));

    for (case, format, aws) in &sites {
        let rerun_args = run_args(300, *format);
        let rerun_args: Vec<&str> = rerun_args.iter().map(String::as_str).collect();
        let output = run_binary(&moto, aws, &rerun_args, &[]);
        assert_success(&output, &moto, &format!("rerun after {case}"));
        check_end_state(aws, case, &expected);
    }
}

/// Exit status of a run that gave up on transient errors.
const TRANSIENT_EXIT: i32 = 75;

#[test]
fn a_transient_failure_exits_75_and_the_next_run_recovers() {
    let moto = MotoServer::start();
    let expected: Vec<Vec<String>> = GOOD[..4]
        .iter()
        .flat_map(|(fixture, _)| parsed_rows(fixture))
        .collect();
    let failing_args = run_args(CRASH_VISIBILITY_SECONDS, ArchiveFormat::Mail);
    let failing_args: Vec<&str> = failing_args.iter().map(String::as_str).collect();
    let cases = [
        "stage.after_staged_put:1:error",
        "compact.after_commit_put:1:error",
        "archive.after_copy:1:error",
    ];
    let mut sites = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let aws = Aws::setup(&moto, &format!("flaky-{index}"), &format!("flaky-{index}"));
        for (fixture, key) in mails() {
            aws.upload(fixture, key);
        }
        let output = run_binary(&moto, &aws, &failing_args, &[("DMARC_FAILPOINT", case)]);
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(TRANSIENT_EXIT), "{case}: {log}");
        assert!(
            log.contains("Transient"),
            "{case}: the error type is logged: {log}"
        );
        sites.push((case, aws));
    }
    std::thread::sleep(Duration::from_secs(CRASH_VISIBILITY_SECONDS + 1));
    let args = run_args(300, ArchiveFormat::Mail);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for (case, aws) in &sites {
        let output = run_binary(&moto, aws, &args, &[]);
        assert_success(&output, &moto, &format!("run after {case}"));
        check_end_state(aws, case, &expected);
    }
}
