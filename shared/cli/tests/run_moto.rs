//! `dmarc-tsv run` end to end against a moto server: bucket + queue + DLQ + S3→SQS notification,
//! real fixture mails (good, bad, duplicate) uploaded into `incoming/`, the binary run with
//! seed-style flags and env. Checks rows (against `dmarc-tsv parse` of the same files), the
//! archive (`-move`), quarantine objects and sidecars, an empty queue and empty staging.

#[path = "../../aws/tests/support/moto.rs"]
mod moto;
mod run_support;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use dmarc_tsv_core::pipeline::mbox::split_messages;
use moto::MotoServer;
use run_support::*;

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
        .env_remove("DMARC_FAILPOINT")
        .env_remove("DMARC_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .output()
        .expect("spawn dmarc-tsv run");
    assert_success(&output, moto, "dmarc-tsv run");
    output
}

#[test]
fn run_drains_stages_compacts_archives_and_quarantines_like_the_seed() {
    let moto = MotoServer::start();
    let aws = Aws::setup(&moto, BUCKET, QUEUE);
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
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("requests sent") && log.contains("s3_put="),
        "-verbose logs counts: {log}"
    );

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

/// The same mails archived as bundles: one gzipped mbox per staged batch instead of a COPY per
/// mail, every mail in it once, byte for byte. Prints the requests per report of both formats.
#[test]
fn run_with_archiveformat_mbox_bundles_each_batch_once() {
    let moto = MotoServer::start();
    let mut per_report = Vec::new();
    for format in ["mail", "mbox"] {
        let aws = Aws::setup(
            &moto,
            &format!("bundle-{format}"),
            &format!("bundle-{format}"),
        );
        for (fixture, key) in GOOD.iter().chain([&DUPLICATE_IN_RUN]) {
            aws.upload(fixture, key);
        }
        let archiveformat = format!("-archiveformat={format}");
        let output = run_binary(
            &moto,
            &aws,
            &[
                "-move=archive/",
                &archiveformat,
                "-polltimeout=1",
                "-emptypolls=1",
            ],
            &[],
        );
        assert_success(&output, &moto, &format!("run {archiveformat}"));
        let summary = summary_of(&output);
        print_requests(&format!("archiveformat={format}"), &summary);
        assert_eq!(aws.keys("incoming/"), Vec::<String>::new(), "{format}");
        let archived = aws.keys("archive/");
        let mails = GOOD.len() as u64 + 1;
        let copies = number(&summary, "/requests/s3/copy");
        if format == "mail" {
            assert_eq!(archived.len() as u64, mails);
            assert_eq!(copies, mails, "one COPY per mail");
        } else {
            assert_eq!(copies, 0, "bundles are written, not copied");
            assert_eq!(
                number(&summary, "/summary/archive/bundles"),
                archived.len() as u64
            );
            assert!(archived.len() < GOOD.len(), "{archived:?}");
            let mut got = Vec::new();
            for key in &archived {
                let (date, name) = date_folder(key, "archive/");
                assert!(today_candidates().contains(&date), "{key}");
                assert!(name.ends_with(".mbox.gz"), "{key}");
                got.extend(split_messages(&gunzip(&aws.get(key))));
            }
            let mut expected: Vec<Vec<u8>> = GOOD
                .iter()
                .chain([&DUPLICATE_IN_RUN])
                .map(|(fixture, _)| as_bundled(fixture))
                .collect();
            expected.sort();
            got.sort();
            assert!(got == expected, "every mail exactly once, byte for byte");
        }
        let reports = number(&summary, "/summary/stage/reports") as f64;
        per_report.push((
            format,
            number(&summary, "/requests/s3/put") as f64 / reports,
            copies as f64 / reports,
            number(&summary, "/requests/s3/get") as f64 / reports,
        ));
    }
    eprintln!("per report (PUT, COPY, GET): {per_report:?}");
}

#[test]
fn run_fails_with_a_named_error_when_the_queue_does_not_exist() {
    let moto = MotoServer::start();
    let aws = Aws::setup(&moto, BUCKET, QUEUE);
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

#[test]
fn run_reads_mails_from_the_bucket_the_event_names() {
    let moto = MotoServer::start();
    let data = Aws::setup(&moto, "split-data", "split-queue");
    let mail = data.add_mail_bucket("split-mail");
    let (good_fixture, good_key) = GOOD[1];
    let (bad_fixture, bad_key, _) = BAD[0];
    mail.upload(good_fixture, good_key);
    mail.upload(bad_fixture, bad_key);

    let output = run_binary(
        &moto,
        &data,
        &["-move=archive", "-polltimeout=1", "-emptypolls=1"],
        &[],
    );
    assert_success(&output, &moto, "run with a separate mail bucket");
    let summary = summary_of(&output);
    assert_eq!(number(&summary, "/summary/stage/mails"), 2, "{summary}");

    // Rows and pipeline state in the data bucket; the mail bucket only loses its incoming/.
    assert_eq!(
        multiset(&output_rows(&data)),
        multiset(&parsed_rows(good_fixture))
    );
    assert!(data.keys("incoming/").is_empty() && data.keys("archive/").is_empty());
    assert_eq!(mail.keys("incoming/"), Vec::<String>::new());
    assert!(mail.keys("dmarc/").is_empty() && mail.keys("staging/").is_empty());
    // The archive stays next to the mail (seed semantics: -move within the mail's bucket).
    let archived = mail.keys("archive/");
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(archived[0].ends_with(good_key), "{archived:?}");
    // Quarantine belongs to the pipeline: the data bucket.
    let quarantined = data.keys("quarantine/");
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(
        quarantined.iter().any(|k| k.ends_with("no-attachment.txt")),
        "{quarantined:?}"
    );
    assert_eq!(data.queue_depth(&data.queue_url), 0);
    assert_eq!(data.keys("staging/"), Vec::<String>::new());
}

fn send(aws: &Aws, body: &str) {
    aws.rt
        .block_on(
            aws.sqs
                .send_message()
                .queue_url(&aws.queue_url)
                .message_body(body)
                .send(),
        )
        .expect("send message");
}

#[test]
fn unreadable_mails_fail_the_run_with_75_and_stay_queued_but_foreign_messages_do_not() {
    let moto = MotoServer::start();
    let aws = Aws::setup(&moto, "leftover-data", "leftover-queue");
    let args = ["-polltimeout=1", "-emptypolls=1", "-sqsprocessingtime=300"];

    // A message nobody understands: logged, left for the dead-letter queue, not a failure.
    send(&aws, "hello, this is not an S3 event");
    let output = run_binary(&moto, &aws, &args, &[]);
    assert_success(&output, &moto, "run with a foreign message");
    let summary = summary_of(&output);
    assert_eq!(number(&summary, "/summary/stage/foreign"), 1, "{summary}");
    assert_eq!(
        aws.queue_depth(&aws.queue_url),
        1,
        "the foreign message stays"
    );

    // A mail in a bucket that does not exist: the GET fails for good, the message stays.
    let ghost = dmarc_tsv_core::pipeline::events::synthetic_s3_event(
        "ghost-bucket",
        "incoming/lost.eml",
        Some(10),
    );
    send(&aws, &ghost);
    let output = run_binary(&moto, &aws, &args, &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{log}");
    assert!(
        log.contains("ghost-bucket") || log.contains("lost.eml"),
        "{log}"
    );
    let summary = summary_of(&output);
    assert_eq!(
        number(&summary, "/summary/stage/left_for_retry"),
        1,
        "{summary}"
    );
    assert_eq!(
        aws.queue_depth(&aws.queue_url),
        2,
        "both messages stay queued"
    );
    assert!(
        aws.keys("").is_empty(),
        "nothing written: {:?}",
        aws.keys("")
    );
}

/// SIGTERM (a Kubernetes deadline, a Ctrl-C) stops a run at the next safe point: messages in hand
/// are staged, the summary is printed and the exit status says "run again" (75). A later run
/// finishes the work.
#[test]
fn sigterm_stops_a_run_cleanly_and_the_next_run_finishes() {
    let moto = MotoServer::start();
    let aws = Aws::setup(&moto, BUCKET, QUEUE);
    for (fixture, key) in GOOD {
        aws.upload(fixture, key);
    }
    // So many empty polls allowed that, unstopped, the run would poll for ~15 minutes.
    let child = Command::new(BIN)
        .args([
            "run",
            "-bucket=dmarc-data",
            "-bucketregion=us-east-1",
            "-sqs",
            QUEUE,
        ])
        .args(["-sqsregion=us-east-1", "-polltimeout=1", "-emptypolls=900"])
        .envs(moto.env())
        .env_remove("DMARC_FAILPOINT")
        .env_remove("DMARC_LOG_FORMAT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dmarc-tsv run");
    std::thread::sleep(std::time::Duration::from_secs(4));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let output = child.wait_with_output().expect("wait for dmarc-tsv run");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "a stopped run ends at the next poll, not after its empty polls: {log}"
    );
    assert_eq!(output.status.code(), Some(75), "{log}");
    assert!(log.contains("stop requested"), "{log}");
    let summary = summary_of(&output);
    assert_eq!(
        summary["summary"]["more"],
        serde_json::json!(true),
        "{summary}"
    );

    // The next run compacts what the stopped one staged: every good row lands, once.
    let second = Command::new(BIN)
        .args([
            "run",
            "-bucket=dmarc-data",
            "-bucketregion=us-east-1",
            "-sqs",
            QUEUE,
        ])
        .args(["-sqsregion=us-east-1", "-polltimeout=1", "-emptypolls=1"])
        .envs(moto.env())
        .env_remove("DMARC_FAILPOINT")
        .output()
        .expect("spawn second run");
    assert_success(&second, &moto, "second run");
    let mut expected = Vec::new();
    for (fixture, _) in GOOD {
        expected.extend(parsed_rows(fixture));
    }
    assert_eq!(multiset(&output_rows(&aws)), multiset(&expected));
}
