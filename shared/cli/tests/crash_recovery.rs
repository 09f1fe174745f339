//! Kill `dmarc-tsv local` at every failpoint (DMARC_FAILPOINT=<name>:abort), run it again, and
//! compare with an undisturbed run: same rows (as a multiset), same quarantine and archive (for
//! mbox bundles: the same bundles holding every archived mail exactly once), nothing left in
//! staging/ or state/commits/. Archive failpoints run under each archive format that reaches them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dmarc_tsv_core::pipeline::failpoint::{ABORT_EXIT_CODE, formats_reaching};
use dmarc_tsv_core::pipeline::layout::hash_parts;
use dmarc_tsv_core::pipeline::mbox::split_messages;
use dmarc_tsv_core::pipeline::{ArchiveFormat, FAILPOINTS};

const INPUTS: &[&str] = &[
    "dmarc-report-ses-tsv/test-data/mail-with-gzip-dmarc-report.txt",
    "dmarc-report-ses-tsv/test-data/mail-with-zipped-dmarc-report.txt",
    "dmarc-report-ses-tsv/test-data/mail-with-bad-zip.txt",
    "dmarc-report-ses-tsv/test-data/mail-without-attachments.txt",
    "avvertix-dmarc-report-parser/tests/fixtures/dmarc.xml",
    "avvertix-dmarc-report-parser/tests/fixtures/dmarc.zip",
    "dmarc-report-converter/pkg/dmarc/testdata/test.xml.gz",
    "dmarc-report-converter/pkg/dmarc/testdata/test2.xml",
    "parsedmarc/samples/extract_report/nice-input.xml.gz",
    "parsedmarc/samples/extract_report/nice-input.xml.zip",
];

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/corpus")
}

struct Case {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
    archive: PathBuf,
    format: ArchiveFormat,
}

/// Rows (multiset), quarantine files, archived files, the archived mails (digests, sorted; bundles
/// opened), input files left.
type EndState = (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

impl Case {
    fn new(format: ArchiveFormat) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in");
        for f in INPUTS {
            let dest = input.join(f);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(corpus().join(f), dest).unwrap();
        }
        Case {
            input,
            output: tmp.path().join("out"),
            archive: tmp.path().join("archive"),
            format,
            _tmp: tmp,
        }
    }

    fn run(&self, failpoint: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmarc-tsv"));
        cmd.arg("local")
            .arg("--input")
            .arg(&self.input)
            .arg("--output")
            .arg(&self.output)
            .arg("--move")
            .arg(&self.archive)
            .args(["--maxrecords", "1"])
            .args(["--archiveformat", self.format.as_str()])
            .env_remove("DMARC_FAILPOINT")
            .env_remove("DMARC_FAILPOINT_ONCE_FILE");
        if let Some(f) = failpoint {
            cmd.env("DMARC_FAILPOINT", f);
        }
        cmd.output().expect("run dmarc-tsv")
    }

    fn end_state(&self) -> EndState {
        let mut rows = Vec::new();
        for f in tree(&self.output.join("dmarc")) {
            let bytes = std::fs::read(self.output.join("dmarc").join(f)).unwrap();
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .unwrap();
            rows.extend(text.lines().map(str::to_string));
        }
        rows.sort();
        (
            rows,
            tree(&self.output.join("quarantine")),
            tree(&self.archive),
            self.archived_mails(),
            tree(&self.input),
        )
    }

    fn archived_mails(&self) -> Vec<String> {
        let mut mails = Vec::new();
        for f in tree(&self.archive) {
            let bytes = std::fs::read(self.archive.join(&f)).unwrap();
            if f.ends_with(".mbox.gz") {
                let mut plain = Vec::new();
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                mails.extend(split_messages(&plain));
            } else {
                mails.push(bytes);
            }
        }
        let mut digests: Vec<String> = mails.iter().map(|m| hash_parts([m], 8)).collect();
        digests.sort();
        digests
    }

    fn assert_no_leftovers(&self, what: &str) {
        assert!(
            tree(&self.output.join("staging")).is_empty(),
            "{what}: staging"
        );
        assert!(
            tree(&self.output.join("state/commits")).is_empty(),
            "{what}: state/commits"
        );
    }
}

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

/// The inputs that are not quarantined, as an mbox gives them back (a final newline added where
/// missing), digested and sorted: what the archive must hold, each exactly once.
fn archivable_inputs(quarantined: &[String]) -> Vec<String> {
    let mut digests: Vec<String> = INPUTS
        .iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or(f);
            !quarantined.iter().any(|q| q.ends_with(name))
        })
        .map(|f| {
            let mut bytes = std::fs::read(corpus().join(f)).unwrap();
            if !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            hash_parts([bytes], 8)
        })
        .collect();
    digests.sort();
    digests
}

#[test]
fn a_crash_at_any_failpoint_then_a_rerun_gives_the_clean_result() {
    for format in [ArchiveFormat::Mail, ArchiveFormat::Mbox] {
        let clean = Case::new(format);
        let o = clean.run(None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let expected = clean.end_state();
        assert!(expected.0.len() >= 20, "rows: {}", expected.0.len());
        assert!(!expected.1.is_empty() && !expected.2.is_empty());
        assert!(expected.4.is_empty(), "all inputs moved: {:?}", expected.4);
        if format == ArchiveFormat::Mbox {
            assert!(
                expected.2.iter().all(|f| f.ends_with(".mbox.gz")),
                "{:?}",
                expected.2
            );
            assert_eq!(
                expected.3,
                archivable_inputs(&expected.1),
                "every mail once"
            );
        }
        clean.assert_no_leftovers("clean");

        for name in FAILPOINTS
            .iter()
            .filter(|n| formats_reaching(n).contains(&format))
        {
            // The first hit, and a later one where the step repeats (several mails, files, deletes).
            for spec in [format!("{name}:abort"), format!("{name}:2:abort")] {
                let case = Case::new(format);
                let crashed = case.run(Some(&spec));
                let hit_twice = crashed.status.code() == Some(ABORT_EXIT_CODE);
                if spec.contains(":2:") && !hit_twice {
                    continue; // this failpoint is hit only once in this run
                }
                assert_eq!(
                    crashed.status.code(),
                    Some(ABORT_EXIT_CODE),
                    "{format} {spec} did not fire: {}",
                    String::from_utf8_lossy(&crashed.stderr)
                );
                let rerun = case.run(None);
                assert!(
                    rerun.status.success(),
                    "{format} {spec}: rerun failed: {}",
                    String::from_utf8_lossy(&rerun.stderr)
                );
                let got = case.end_state();
                assert_eq!(got.0, expected.0, "{format} {spec}: rows");
                assert_eq!(got.1, expected.1, "{format} {spec}: quarantine");
                if format == ArchiveFormat::Mail {
                    assert_eq!(got.2, expected.2, "{format} {spec}: archive files");
                } else {
                    // A rerun finds the unmoved inputs again and may stage them in other batches,
                    // so the bundles may be named differently; they must hold the same mails.
                    assert!(got.2.iter().all(|f| f.ends_with(".mbox.gz")), "{:?}", got.2);
                }
                assert_eq!(got.3, expected.3, "{format} {spec}: archived mails");
                assert_eq!(got.4, expected.4, "{format} {spec}: inputs left");
                case.assert_no_leftovers(&spec);
            }
        }
    }
}

#[test]
fn the_once_file_lets_a_retried_process_run_through() {
    let case = Case::new(ArchiveFormat::Mail);
    let marker = case.output.with_file_name("fired");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_dmarc-tsv"))
            .arg("local")
            .arg("--input")
            .arg(&case.input)
            .arg("--output")
            .arg(&case.output)
            .env("DMARC_FAILPOINT", "compact.after_output_put:abort")
            .env("DMARC_FAILPOINT_ONCE_FILE", &marker)
            .output()
            .expect("run dmarc-tsv")
    };
    assert_eq!(run().status.code(), Some(ABORT_EXIT_CODE));
    assert!(marker.exists());
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    case.assert_no_leftovers("once file");
}
