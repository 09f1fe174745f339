//! `dmarc-tsv local` as a user runs it: the binary on a folder, twice, with and without --move.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn local(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmarc-tsv"))
        .arg("local")
        .args(args)
        .current_dir(cwd)
        .env_remove("DMARC_FAILPOINT")
        .env_remove("RUST_LOG")
        .output()
        .expect("run dmarc-tsv")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Relative paths of every file under `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn rows(out: &Path, ext: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for f in tree(&out.join("dmarc")) {
        assert!(f.ends_with(&format!(".{ext}.gz")), "{f}");
        let bytes = std::fs::read(out.join("dmarc").join(&f)).unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        rows.extend(text.lines().map(str::to_string));
    }
    rows.sort();
    rows
}

fn copy_dir(from: &Path, to: &Path) {
    for f in tree(from) {
        let dest = to.join(&f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), dest).unwrap();
    }
}

#[test]
fn local_on_the_samples_twice_writes_each_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let samples = repo().join("samples");
    let before = tree(&samples);
    let args = [
        "--input",
        samples.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let first = local(tmp.path(), &args);
    let err = stderr(&first);
    assert!(first.status.success(), "{err}");
    assert!(
        err.contains("quarantined broken-zip-attachment.eml:"),
        "{err}"
    );
    assert!(err.contains("files written"), "{err}");
    assert!(!err.contains("NOTICE.md"), "notes are not inputs: {err}");
    assert!(err.contains("zcat "), "{err}");
    let rows1 = rows(&out, "tsv");
    assert!(rows1.len() >= 40, "{}", rows1.len());
    // Every row has every column; partitions are dates.
    let columns = dmarc_tsv_core::columns::COLUMNS.len();
    assert!(rows1.iter().all(|r| r.split('\t').count() == columns));
    assert!(
        tree(&out.join("dmarc"))
            .iter()
            .all(|f| f.starts_with("dt=") && f.contains("/part-"))
    );
    let quarantine = tree(&out.join("quarantine"));
    assert!(
        quarantine
            .iter()
            .any(|f| f.ends_with("/broken-zip-attachment.eml"))
    );
    assert!(
        quarantine
            .iter()
            .any(|f| f.ends_with("/broken-zip-attachment.eml.reason.json"))
    );
    assert!(tree(&out.join("staging")).is_empty());
    assert_eq!(tree(&samples), before, "inputs stay without --move");

    let second = local(tmp.path(), &args);
    let err2 = stderr(&second);
    assert!(second.status.success(), "{err2}");
    assert!(err2.contains("files written 0 (0 rows)"), "{err2}");
    assert_eq!(rows(&out, "tsv"), rows1);
}

#[test]
fn the_default_input_is_the_samples_folder_of_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = local(&repo(), &["--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!rows(&out, "tsv").is_empty());

    let o = local(tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--input"), "{}", stderr(&o));
    assert!(!tmp.path().join("dmarc-output").join("dmarc").exists());
}

#[test]
fn move_empties_the_input_into_dated_folders_and_csv_is_available() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let archive = tmp.path().join("archive");
    let out = tmp.path().join("out");
    copy_dir(&repo().join("samples"), &input.join("nested dir"));
    let o = local(
        tmp.path(),
        &[
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--move",
            archive.to_str().unwrap(),
            "--format",
            "csv",
            "--maxrecords",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Only the notes file (never an input) stays; the broken mail is in quarantine.
    let left = tree(&input);
    assert!(left.iter().all(|f| f.ends_with(".md")), "{left:?}");
    let moved = tree(&archive);
    assert!(!moved.is_empty());
    assert!(
        moved
            .iter()
            .all(|f| f.len() > 9 && f.as_bytes()[8] == b'/' && f[9..].starts_with("nested dir/")),
        "{moved:?}"
    );
    assert!(!moved.iter().any(|f| f.contains("broken-zip")));
    let csv = rows(&out, "csv");
    assert!(csv.iter().any(|r| r.starts_with("dmarc_report_to,")));
}

/// Archive bundles round-trip: the samples moved into one gzipped mbox, then that bundle given to
/// `local --input` as is, give the same rows.
#[test]
fn an_mbox_archive_bundle_reads_back_as_input_with_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let archive = tmp.path().join("archive");
    let out = tmp.path().join("out");
    copy_dir(&repo().join("samples"), &input);
    let run = |args: &[&str]| {
        let o = local(tmp.path(), args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = run(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--move",
        archive.to_str().unwrap(),
        "--archiveformat",
        "mbox",
        // One worker: one staged batch, so one bundle.
        "--jobs",
        "1",
    ]);
    assert!(stderr(&o).contains("mbox bundle"), "{}", stderr(&o));
    let left = tree(&input);
    assert!(left.iter().all(|f| f.ends_with(".md")), "{left:?}");
    let bundles = tree(&archive);
    assert_eq!(
        bundles.len(),
        1,
        "one staged batch, one bundle: {bundles:?}"
    );
    assert!(bundles[0].ends_with(".mbox.gz"), "{bundles:?}");

    let again = tmp.path().join("again");
    let bundle = archive.join(&bundles[0]);
    let o = run(&[
        "--input",
        bundle.to_str().unwrap(),
        "--output",
        again.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("quarantined 0"), "{}", stderr(&o));
    // Every column but the last, source_key: that names the message in the bundle now.
    let without_source = |rows: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = rows
            .iter()
            .map(|r| {
                r.rsplit_once('\t')
                    .map_or(r.clone(), |(head, _)| head.to_string())
            })
            .collect();
        v.sort();
        v
    };
    let again_rows = rows(&again, "tsv");
    assert!(
        again_rows.iter().all(|r| r.contains(".mbox.gz#")),
        "source_key names the bundle"
    );
    assert_eq!(
        without_source(again_rows),
        without_source(rows(&out, "tsv"))
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = local(tmp.path(), &["--maxrecords", "0", "--input", "."]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("maxrecords"), "{}", stderr(&o));
    let o = local(tmp.path(), &["--format", "xlsx"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn an_mbox_gives_the_same_rows_as_its_mails_as_files() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = repo().join("samples");
    let names = ["google-zip.eml", "yahoo-gzip.eml", "ses-raw-google-zip.eml"];
    let files_in = tmp.path().join("files");
    let mbox_in = tmp.path().join("mbox");
    std::fs::create_dir_all(&files_in).unwrap();
    std::fs::create_dir_all(&mbox_in).unwrap();
    let mut mbox = Vec::new();
    for name in names {
        let mail = std::fs::read(samples.join(name)).unwrap();
        std::fs::write(files_in.join(name), &mail).unwrap();
        mbox.extend_from_slice(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2024\n");
        mbox.extend_from_slice(&mail);
        mbox.extend_from_slice(b"\n\n");
    }
    std::fs::write(mbox_in.join("inbox"), mbox).unwrap();
    let run = |input: &Path, out: &Path| {
        let o = local(
            tmp.path(),
            &[
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = run(&mbox_in, &tmp.path().join("out-mbox"));
    assert!(err.contains("mails 3,"), "{err}");
    run(&files_in, &tmp.path().join("out-files"));
    // Rows differ only in source_key (the last column): `inbox#2` instead of the file name.
    let strip = |rows: Vec<String>| -> Vec<String> {
        let mut v: Vec<String> = rows
            .into_iter()
            .map(|r| r.rsplit_once('\t').unwrap().0.to_string())
            .collect();
        v.sort();
        v
    };
    let from_mbox = rows(&tmp.path().join("out-mbox"), "tsv");
    assert!(from_mbox.iter().all(|r| r.contains("\tinbox#")));
    assert_eq!(
        strip(from_mbox),
        strip(rows(&tmp.path().join("out-files"), "tsv"))
    );
    assert!(!strip(rows(&tmp.path().join("out-files"), "tsv")).is_empty());
}

#[test]
fn the_same_input_gives_the_same_output_keys_and_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = repo().join("samples");
    let outputs: Vec<Vec<(String, Vec<u8>)>> = ["a", "b"]
        .iter()
        .map(|name| {
            let out = tmp.path().join(name);
            let o = local(
                tmp.path(),
                &[
                    "--input",
                    samples.to_str().unwrap(),
                    "--output",
                    out.to_str().unwrap(),
                ],
            );
            assert!(o.status.success(), "{}", stderr(&o));
            tree(&out.join("dmarc"))
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(out.join("dmarc").join(&f)).unwrap();
                    (f, bytes)
                })
                .collect()
        })
        .collect();
    assert!(!outputs[0].is_empty());
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn one_run_per_output_folder_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let held = std::fs::File::create(out.join(".dmarc-tsv.lock")).unwrap();
    held.try_lock().unwrap();
    let samples = repo().join("samples");
    let args = [
        "--input",
        samples.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    let o = local(tmp.path(), &args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("another dmarc-tsv local"),
        "{}",
        stderr(&o)
    );
    drop(held);
    let o = local(tmp.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn input_may_name_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let file = repo().join("samples/google-20-records.xml.gz");
    let o = local(
        tmp.path(),
        &[
            "--input",
            file.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("mails 1,"), "{}", stderr(&o));
    assert_eq!(rows(&out, "tsv").len(), 20);
    let o = local(tmp.path(), &["--input", "no-such-thing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no such file or folder"),
        "{}",
        stderr(&o)
    );
}

/// Workers split the inputs, not the work's result: any number of jobs gives the same rows, and
/// three workers over one input count every mail once.
#[test]
fn any_number_of_jobs_gives_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for jobs in ["1", "3", "16"] {
        let out = tmp.path().join(format!("out-{jobs}"));
        let o = local(
            tmp.path(),
            &[
                "--input",
                repo().join("samples").to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--jobs",
                jobs,
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("mails 16, reports 17, rows 44"),
            "jobs {jobs}: {err}"
        );
        outputs.push(rows(&out, "tsv"));
    }
    assert_eq!(outputs[0].len(), 44);
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
    let zero = local(tmp.path(), &["--jobs", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
}
