//! `dmarc-tsv parse`, run as a binary on corpus fixtures: stdout rows, stderr reasons, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dmarc_tsv_core::columns::COLUMNS;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/corpus")
}

/// Runs `dmarc-tsv parse ARGS` in `dir`, so relative paths are the `source_key`.
fn parse_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmarc-tsv"))
        .arg("parse")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run dmarc-tsv")
}

fn parse(args: &[&str]) -> Output {
    parse_in(&corpus(), args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

const ACME: &str = "dmarc-report-viewer/testdata/dmarc-reports/acme.xml";
const GOOGLE_MAIL: &str = "mox/testdata/dmarc-reports/google.eml";
const NESTED: &str = "parsedmarc/samples/extract_report/nice-input.xml";

#[test]
fn rows_of_a_report_file_are_its_golden_rows() {
    let out = parse(&[NESTED]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let golden = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden")
            .join(format!("{NESTED}.tsv")),
    )
    .expect("golden file");
    assert_eq!(text(&out.stdout), golden);
    assert_eq!(text(&out.stdout).lines().count(), 20);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn several_inputs_mail_and_xml_all_usable_exit_0() {
    let out = parse(&[ACME, GOOGLE_MAIL]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line.split('\t').count(), COLUMNS.len());
    }
    assert!(
        lines[0].ends_with(&format!("\t{ACME}")),
        "source_key is the path as given"
    );
    assert!(lines[2].ends_with(&format!("\t{GOOGLE_MAIL}")));
    assert!(
        lines[2].starts_with("postmaster@ueber.net\t"),
        "report_to from the mail"
    );
}

#[test]
fn csv_has_one_header_then_rows() {
    let out = parse(&["--format", "csv", ACME, GOOGLE_MAIL]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    assert_eq!(lines[0], header.join(","));
    assert!(lines[1].contains(",acme.com,"));
}

#[test]
fn unusable_inputs_are_named_with_reasons_and_exit_1() {
    let tls = "parsedmarc/samples/smtp_tls/rfc8460.json";
    let root = "dmarc_report_reader/tests/fixtures/non-dmarc.xml";
    let out = parse(&[ACME, tls, root, "does/not/exist.xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "rows of the usable input still printed"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{tls}: no report: ")) && stderr.contains("smtp-tls"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{root}: no report: ")) && stderr.contains("<root>"),
        "{stderr}"
    );
    assert!(
        stderr.contains("does/not/exist.xml: cannot read: "),
        "{stderr}"
    );
    assert!(!stderr.contains(ACME), "{stderr}");
}

#[test]
fn problems_inside_a_usable_report_are_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let xml = std::fs::read_to_string(corpus().join(ACME)).expect("fixture");
    let broken = xml.replacen("<record>", "<record></record><record>", 1);
    std::fs::write(dir.path().join("one-bad-record.xml"), broken).expect("write");
    let out = parse_in(dir.path(), &["one-bad-record.xml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("one-bad-record.xml: problem ") && stderr.contains("record 1 unreadable"),
        "{stderr}"
    );
}

#[test]
fn exclude_disposition_none_drops_those_rows() {
    let all = parse(&[NESTED]);
    let kept = parse(&["--excludedispositionnone", NESTED]);
    assert_eq!(kept.status.code(), Some(0));
    let all = text(&all.stdout);
    let kept = text(&kept.stdout);
    let disposition = COLUMNS
        .iter()
        .position(|c| c.name == "disposition")
        .expect("disposition column");
    let none_rows = all
        .lines()
        .filter(|l| l.split('\t').nth(disposition) == Some("none"))
        .count();
    assert!(none_rows > 0, "the fixture has disposition=none rows");
    assert_eq!(kept.lines().count(), all.lines().count() - none_rows);
    assert!(
        kept.lines()
            .all(|l| l.split('\t').nth(disposition) != Some("none"))
    );
}

#[test]
fn a_report_whose_rows_are_all_excluded_is_named_but_usable() {
    let out = parse(&["--excludedispositionnone", ACME]);
    assert_eq!(out.status.code(), Some(0), "the input did yield a report");
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{ACME}: no rows: 1 report(s), 1 record(s), 1 excluded"
        )),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&[][..], &["--format", "xml", ACME], &["--bogus", ACME]] {
        let out = parse(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn help_exits_0() {
    let out = parse(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--excludedispositionnone"));
}
