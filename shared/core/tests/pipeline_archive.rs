//! Archiving as mbox bundles (`-archiveformat mbox`) and the concurrent mail fetches of ingest,
//! over a local store: one bundle per ledger with every mail once, parts, reruns after crashes,
//! mails gone before bundling, ledgers of older versions.

mod pipeline_support;

use std::path::Path;
use std::sync::Arc;

use dmarc_tsv_core::pipeline::events::synthetic_s3_event;
use dmarc_tsv_core::pipeline::failpoint::{FailpointSpec, with_failpoint};
use dmarc_tsv_core::pipeline::layout::yyyymmdd;
use dmarc_tsv_core::pipeline::stage::Ledger;
use dmarc_tsv_core::pipeline::store::ObjectStore;
use dmarc_tsv_core::pipeline::{
    ArchiveFormat, LocalStore, Pipeline, RetryPolicy, Settings, archive, drain, run_all,
};
use pipeline_support::*;

const MAILS: [&str; 3] = [
    "dmarc-report-ses-tsv/test-data/mail-with-gzip-dmarc-report.txt",
    "dmarc-report-ses-tsv/test-data/mail-with-zipped-dmarc-report.txt",
    "avvertix-dmarc-report-parser/tests/fixtures/dmarc.zip",
];

fn never() -> bool {
    false
}

fn settings() -> Settings {
    Settings {
        pollmessages: 10,
        emptypolls: 1,
        move_prefix: "archive/".into(),
        archiveformat: ArchiveFormat::Mbox,
        ..Settings::default()
    }
}

/// A mail as an mbox gives it back: mbox cannot keep a missing final newline (the bare zip file
/// here has none), so it gets one.
fn as_archived(f: &str) -> String {
    let mut bytes = corpus(f);
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    digest(&bytes)
}

/// The fixtures under `incoming/`, and their archived digests sorted (what the archive must hold).
fn put_mails(root: &Path) -> (Vec<String>, Vec<String>) {
    let store = LocalStore::new(root);
    let mut keys = Vec::new();
    let mut bytes = Vec::new();
    for f in MAILS {
        let key = format!("incoming/{}", f.rsplit('/').next().unwrap());
        store.put(&key, &corpus(f)).unwrap();
        keys.push(key);
        bytes.push(as_archived(f));
    }
    bytes.sort();
    (keys, bytes)
}

fn queue_of(keys: &[String]) -> MemQueue {
    let q = MemQueue::new();
    q.send_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    q
}

#[test]
fn one_bundle_per_ledger_holds_every_mail_once_and_the_sources_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, expected) = put_mails(root);
    let p = local_pipeline(root, settings());
    let s = run_all(&p, &queue_of(&keys), &never).unwrap();
    let day = yyyymmdd(p.now());
    let bundles = files(root, "archive/");
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert!(
        bundles[0].starts_with(&format!("archive/{day}/")) && bundles[0].ends_with(".mbox.gz"),
        "{bundles:?}"
    );
    assert_eq!(archived_mails(root, "archive/"), expected);
    assert!(files(root, "incoming/").is_empty());
    assert_eq!((s.archive.moved, s.archive.bundles), (3, 1));
    assert_no_leftovers(root);
}

#[test]
fn a_bundle_over_the_part_size_is_split_and_its_final_part_is_written_last() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, expected) = put_mails(root);
    let mut p = local_pipeline(root, settings());
    // Every mail passes this: one part per mail, and an empty final part that marks completion.
    p.bundle_part_bytes = 1;
    let q = queue_of(&keys);
    // Die after the second part: no mail may be deleted yet, no final part may exist.
    let spec: FailpointSpec = "archive.after_bundle_put:2:error".parse().unwrap();
    assert!(with_failpoint(spec, || run_all(&p, &q, &never)).is_err());
    assert_eq!(files(root, "incoming/").len(), 3);
    let parts = files(root, "archive/");
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts.iter().all(|k| k.contains(".part")), "{parts:?}");

    let s = run_all(&p, &q, &never).unwrap();
    let parts = files(root, "archive/");
    assert_eq!(parts.len(), 4, "3 parts + the final one: {parts:?}");
    assert_eq!(archived_mails(root, "archive/"), expected);
    assert_eq!(s.archive.bundles, 4);
    assert!(files(root, "incoming/").is_empty());
}

#[test]
fn stale_parts_of_an_attempt_that_had_more_mails_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, _) = put_mails(root);
    let mut p = local_pipeline(root, settings());
    p.bundle_part_bytes = 1;
    let q = queue_of(&keys);
    let spec: FailpointSpec = "archive.after_bundle_put:3:error".parse().unwrap();
    assert!(with_failpoint(spec, || run_all(&p, &q, &never)).is_err());
    assert_eq!(
        files(root, "archive/").len(),
        3,
        "three parts, no final one"
    );
    // Two mails vanish meanwhile (in production: archived by another ledger's bundle).
    let store = LocalStore::new(root);
    store.delete(&keys[0]).unwrap();
    store.delete(&keys[1]).unwrap();
    run_all(&p, &q, &never).unwrap();
    let archived = archived_mails(root, "archive/");
    assert_eq!(
        archived,
        vec![as_archived(MAILS[2])],
        "the remaining mail, once"
    );
    assert_eq!(files(root, "archive/").len(), 2, "one part + the final one");
}

#[test]
fn a_crash_after_the_bundle_put_goes_straight_to_the_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, expected) = put_mails(root);
    let p = local_pipeline(root, settings());
    let q = queue_of(&keys);
    let spec: FailpointSpec = "archive.after_source_delete:1:error".parse().unwrap();
    assert!(with_failpoint(spec, || run_all(&p, &q, &never)).is_err());
    assert_eq!(files(root, "incoming/").len(), 2, "one mail deleted");
    let s = run_all(&p, &q, &never).unwrap();
    assert_eq!(s.archive.bundles, 0, "the bundle was not written again");
    assert_eq!(archived_mails(root, "archive/"), expected);
    assert!(files(root, "incoming/").is_empty());
}

#[test]
fn a_mail_gone_before_bundling_is_logged_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, _) = put_mails(root);
    let p = local_pipeline(root, settings());
    let q = queue_of(&keys);
    drain(&p, &q, &never).unwrap();
    let mut total = Default::default();
    dmarc_tsv_core::pipeline::run::compact_all(&p, &never, &mut total).unwrap();
    LocalStore::new(root).delete(&keys[1]).unwrap();
    let a = archive(&p, &never).unwrap();
    assert_eq!((a.moved, a.ledgers), (2, 1));
    let mut expected = vec![as_archived(MAILS[0]), as_archived(MAILS[2])];
    expected.sort();
    assert_eq!(archived_mails(root, "archive/"), expected);
}

#[test]
fn a_ledger_without_a_day_gets_one_before_its_bundle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, expected) = put_mails(root);
    let p = local_pipeline(root, settings());
    let q = queue_of(&keys);
    drain(&p, &q, &never).unwrap();
    let mut total = Default::default();
    dmarc_tsv_core::pipeline::run::compact_all(&p, &never, &mut total).unwrap();
    // Rewrite the ledger as an older version wrote it (no day).
    let store = LocalStore::new(root);
    let key = files(root, "staging/ledger/").remove(0);
    let mut ledger: Ledger = serde_json::from_slice(&store.get(&key).unwrap().unwrap()).unwrap();
    assert!(ledger.day.is_some(), "new ledgers carry their day");
    ledger.day = None;
    store
        .put(&key, &serde_json::to_vec(&ledger).unwrap())
        .unwrap();
    // Die after the bundle: the ledger must now say which day its bundle is under.
    let spec: FailpointSpec = "archive.after_bundle_put:1:error".parse().unwrap();
    assert!(with_failpoint(spec, || archive(&p, &never)).is_err());
    let pinned: Ledger = serde_json::from_slice(&store.get(&key).unwrap().unwrap()).unwrap();
    assert_eq!(pinned.day, Some(yyyymmdd(p.now())));
    archive(&p, &never).unwrap();
    assert_eq!(archived_mails(root, "archive/"), expected);
    assert_eq!(files(root, "archive/").len(), 1);
}

#[test]
fn mail_format_still_copies_each_mail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, expected) = put_mails(root);
    let settings = Settings {
        archiveformat: ArchiveFormat::Mail,
        ..settings()
    };
    let p = local_pipeline(root, settings);
    let s = run_all(&p, &queue_of(&keys), &never).unwrap();
    assert_eq!((s.archive.moved, s.archive.bundles), (3, 0));
    assert_eq!(files(root, "archive/").len(), 3);
    // Copies keep the bytes exactly (no newline added to the bare zip file).
    let mut exact: Vec<String> = MAILS.iter().map(|f| digest(&corpus(f))).collect();
    exact.sort();
    assert_eq!(archived_mails(root, "archive/"), exact);
    assert_ne!(exact, expected);
}

#[test]
fn ingest_fetches_a_receive_worth_of_mails_at_once_and_retries_each_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keys, _) = put_mails(root);
    let flaky = Arc::new(FlakyStore::new(LocalStore::new(root)));
    // The concurrent first try of one mail fails; its own retry then succeeds.
    flaky.fail_next("get", 1);
    let settings = Settings {
        move_prefix: String::new(),
        ..settings()
    };
    let p = Pipeline::single_store(settings, flaky.clone())
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 2,
            base: std::time::Duration::from_millis(1),
            max: std::time::Duration::from_millis(1),
        });
    // S3 events announce each mail's size: that is what bounds the bytes fetched at once.
    let q = MemQueue::new();
    for (key, f) in keys.iter().zip(MAILS) {
        q.send(&synthetic_s3_event(
            BUCKET,
            key,
            Some(corpus(f).len() as u64),
        ));
    }
    let s = drain(&p, &q, &never).unwrap();
    assert_eq!((s.mails, s.left_for_retry, s.reports), (3, 0, 3));
    let calls = flaky.get_many_calls.lock().unwrap().clone();
    assert_eq!(calls, vec![keys.clone()], "one fetch of the three mails");

    // Without sizes a mail may be as large as maxmailbytes: only the first is fetched ahead, the
    // others one by one as they are handled.
    flaky.get_many_calls.lock().unwrap().clear();
    let q = MemQueue::new();
    q.send_keys(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    let s = drain(&p, &q, &never).unwrap();
    assert_eq!(s.mails, 3);
    let calls = flaky.get_many_calls.lock().unwrap().clone();
    assert_eq!(calls, vec![vec![keys[0].clone()]]);
}

#[test]
fn mails_staged_again_under_another_ledger_are_bundled_once() {
    // Whichever way the second ledger's name sorts against the first, no mail is bundled twice.
    let mut second_sorted_first = false;
    for skip in 0..MAILS.len() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (keys, expected) = put_mails(root);
        let p = local_pipeline(root, settings());
        // First ledger: all mails; its bundle is written, then the worker dies.
        let q = queue_of(&keys);
        let spec: FailpointSpec = "archive.after_bundle_put:1:error".parse().unwrap();
        assert!(with_failpoint(spec, || run_all(&p, &q, &never)).is_err());
        let first = files(root, "staging/ledger/");
        // The mails are found again (local mode lists its input again) in another grouping.
        let again: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, k)| k.clone())
            .collect();
        drain(&p, &queue_of(&again), &never).unwrap();
        let mut total = Default::default();
        dmarc_tsv_core::pipeline::run::compact_all(&p, &never, &mut total).unwrap();
        let ledgers = files(root, "staging/ledger/");
        assert_eq!(ledgers.len(), 2);
        second_sorted_first |= ledgers[0] != first[0];
        archive(&p, &never).unwrap();
        assert_eq!(archived_mails(root, "archive/"), expected, "skip {skip}");
        assert_eq!(files(root, "archive/").len(), 1, "skip {skip}");
        assert!(files(root, "incoming/").is_empty());
        assert!(files(root, "staging/ledger/").is_empty());
    }
    assert!(
        second_sorted_first,
        "some case must list the second ledger first, or the ordering is not exercised"
    );
}
