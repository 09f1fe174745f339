//! End to end through `parse_mail`: containers + MIME + the XML parser + the sink contract
//! (begin/row/end order, report_to, exclude_disposition_none, sink errors), over the whole corpus
//! and crafted mails.

mod mail_support;

use std::io;

use dmarc_tsv_core::columns::COLUMNS;
use dmarc_tsv_core::mail::{MailError, parse_mail_with_stats};
use dmarc_tsv_core::{
    MailOutcome, ParseOptions, ReportMeta, ReportSink, ReportSummary, RowView, parse_mail,
};
use mail_support::*;

/// Records the sink calls in order, with a few column values of each row.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    rows: Vec<Vec<String>>,
    fail_after: Option<usize>,
}

impl ReportSink for Recorder {
    fn begin_report(&mut self, location: &str, meta: &ReportMeta) {
        self.events
            .push(format!("begin {location} {}", meta.report_id));
    }
    fn row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        if self.fail_after == Some(self.rows.len()) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        self.events.push("row".into());
        self.rows.push(
            COLUMNS
                .iter()
                .map(|c| (c.value)(row).into_owned())
                .collect(),
        );
        Ok(())
    }
    fn end_report(&mut self, summary: &ReportSummary) {
        self.events.push(format!(
            "end {} rows={}",
            summary.identity.report_id, summary.rows
        ));
    }
}

fn column(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("column {name}"))
}

fn run(bytes: &[u8], opts: &ParseOptions) -> (MailOutcome, Recorder) {
    let mut sink = Recorder::default();
    let outcome = parse_mail(bytes, "incoming/key", opts, &mut sink).expect("sink never fails");
    (outcome, sink)
}

struct InventoryRow {
    file: String,
    kind: String,
    org_name: String,
    records: u64,
}

fn inventory() -> Vec<InventoryRow> {
    let text = String::from_utf8(corpus("inventory.tsv")).expect("utf-8 inventory");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Some(InventoryRow {
                file: cols.first()?.to_string(),
                kind: cols.get(2)?.to_string(),
                org_name: cols.get(4)?.to_string(),
                records: cols.get(5)?.parse().unwrap_or(0),
            })
        })
        .collect()
}

#[test]
fn every_aggregate_fixture_yields_its_records_as_rows() {
    let mut checked = 0;
    for fixture in inventory()
        .iter()
        .filter(|f| f.kind.starts_with("aggregate"))
    {
        let (outcome, sink) = run(&corpus(&fixture.file), &ParseOptions::default());
        assert!(
            outcome.is_usable(),
            "{}: {:?}",
            fixture.file,
            outcome.skipped
        );
        let first = &outcome.reports[0];
        assert_eq!(
            first.records, fixture.records,
            "{}: first report's records",
            fixture.file
        );
        assert_eq!(
            first.identity.org_name.trim_matches('"'),
            fixture.org_name.trim_matches('"'),
            "{}",
            fixture.file
        );
        assert_eq!(sink.rows.len() as u64, outcome.rows(), "{}", fixture.file);
        checked += 1;
    }
    assert!(checked >= 80, "only {checked} aggregate fixtures");
}

#[test]
fn non_aggregate_fixtures_are_not_usable_and_say_why() {
    for fixture in inventory()
        .iter()
        .filter(|f| !f.kind.starts_with("aggregate"))
    {
        let (outcome, sink) = run(&corpus(&fixture.file), &ParseOptions::default());
        if fixture.kind == "broken-xml" {
            // The parser keeps the records before a break (and reads nothing after
            // `</feedback>`): usable, or skipped with a reason, never silently empty.
            assert!(
                outcome.is_usable() || !outcome.skipped.is_empty(),
                "{}: broken XML without a reason",
                fixture.file
            );
            continue;
        }
        assert!(!outcome.is_usable(), "{}", fixture.file);
        assert!(sink.rows.is_empty());
        assert!(!outcome.skipped.is_empty(), "{}: silent drop", fixture.file);
        let codes: Vec<&str> = outcome.skipped.iter().map(|s| s.reason.code()).collect();
        let expected: &[&str] = match fixture.kind.as_str() {
            "smtp-tls" | "forensic" | "forensic-non-dmarc-arf" => &["unsupported_report"],
            "broken-attachment" => &["corrupt_gzip", "corrupt_zip", "not_a_report"],
            _ => &[],
        };
        if !expected.is_empty() && !fixture.file.contains("_history") {
            assert!(
                codes.iter().all(|c| expected.contains(c)),
                "{}: {codes:?}",
                fixture.file
            );
        }
    }
}

#[test]
fn rows_carry_the_first_to_address_and_the_sink_sees_begin_rows_end() {
    let bytes = corpus("mox/testdata/dmarc-reports/google.eml");
    let (outcome, sink) = run(&bytes, &ParseOptions::default());
    assert_eq!(outcome.mail.report_to, "postmaster@ueber.net");
    assert_eq!(outcome.mail.source_key, "incoming/key");
    assert_eq!(outcome.reports.len(), 1);
    let report = &outcome.reports[0];
    assert!(report.location.starts_with("body \"google.com!ueber.net"));
    assert_eq!(
        sink.events.first().map(|e| e.starts_with("begin body")),
        Some(true)
    );
    assert_eq!(
        sink.events.last().map(String::as_str),
        Some(format!("end {} rows={}", report.identity.report_id, report.rows).as_str())
    );
    let to = column("dmarc_report_to");
    assert!(sink.rows.iter().all(|r| r[to] == "postmaster@ueber.net"));
}

#[test]
fn bare_file_rows_have_an_empty_report_to() {
    let (outcome, sink) = run(
        &corpus("dmarc_report_reader/tests/fixtures/multi-report.zip"),
        &ParseOptions::default(),
    );
    assert_eq!(outcome.reports.len(), 3);
    assert_eq!(outcome.mail.report_to, "");
    let to = column("dmarc_report_to");
    assert!(!sink.rows.is_empty());
    assert!(sink.rows.iter().all(|r| r[to].is_empty()));
    let begins = sink
        .events
        .iter()
        .filter(|e| e.starts_with("begin"))
        .count();
    let ends = sink.events.iter().filter(|e| e.starts_with("end")).count();
    assert_eq!((begins, ends), (3, 3));
}

#[test]
fn several_reports_in_one_crafted_mail_give_all_rows() {
    let mail = multipart(&[
        Part::text("text/plain", "Reports."),
        Part::attachment(
            "application/gzip",
            "a.xml.gz",
            &gzip(report_xml("a", 3).as_bytes()),
        ),
        Part::attachment(
            "application/zip",
            "b.zip",
            &zip(&[("b.xml", report_xml("b", 2).as_bytes())]),
        ),
    ]);
    let (outcome, sink) = run(&crlf(&mail), &ParseOptions::default());
    let ids: Vec<&str> = outcome
        .reports
        .iter()
        .map(|r| r.identity.report_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(outcome.rows(), 5);
    assert_eq!(sink.rows.len(), 5);
    assert_eq!(
        sink.events,
        [
            "begin part 2 \"a.xml.gz\" a",
            "row",
            "row",
            "row",
            "end a rows=3",
            "begin part 3 \"b.zip\" > member \"b.xml\" b",
            "row",
            "row",
            "end b rows=2",
        ]
    );
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
}

#[test]
fn exclude_disposition_none_drops_rows_and_counts_them() {
    let mail = multipart(&[Part::attachment(
        "application/gzip",
        "a.xml.gz",
        &gzip(report_xml("a", 5).as_bytes()),
    )]);
    let opts = ParseOptions {
        exclude_disposition_none: true,
        ..ParseOptions::default()
    };
    let (outcome, sink) = run(mail.as_bytes(), &opts);
    let report = &outcome.reports[0];
    // Records 0, 2 and 4 have disposition none.
    assert_eq!((report.records, report.rows, report.excluded), (5, 2, 3));
    let disposition = column("disposition");
    assert!(sink.rows.iter().all(|r| r[disposition] == "quarantine"));
}

#[test]
fn a_report_without_records_still_begins_and_ends() {
    let mail = single_part(&Part::text("text/xml", &report_xml("empty", 0)));
    let (outcome, sink) = run(mail.as_bytes(), &ParseOptions::default());
    assert_eq!(outcome.reports.len(), 1);
    assert_eq!(outcome.reports[0].rows, 0);
    assert_eq!(
        sink.events,
        ["begin body (text/xml) empty", "end empty rows=0"]
    );
}

#[test]
fn a_sink_error_aborts_the_mail() {
    let mail = multipart(&[Part::attachment(
        "application/gzip",
        "a.xml.gz",
        &gzip(report_xml("a", 5).as_bytes()),
    )]);
    let mut sink = Recorder {
        fail_after: Some(2),
        ..Recorder::default()
    };
    let err = parse_mail(mail.as_bytes(), "k", &ParseOptions::default(), &mut sink)
        .expect_err("sink failure must surface");
    let MailError::Sink(io_err) = err;
    assert_eq!(io_err.kind(), io::ErrorKind::StorageFull);
    assert_eq!(sink.rows.len(), 2);
}

#[test]
fn a_truncated_gzip_after_some_records_keeps_them_and_names_the_cause() {
    let full = gzip(report_xml("cut", 400).as_bytes());
    let cut = &full[..full.len() * 2 / 3];
    let (outcome, sink) = run(cut, &ParseOptions::default());
    assert!(outcome.is_usable(), "{:?}", outcome.skipped);
    let report = &outcome.reports[0];
    assert!(report.rows > 0 && report.rows < 400, "rows {}", report.rows);
    assert_eq!(sink.rows.len() as u64, report.rows);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.code() == "corrupt_gzip" && p.location == "file"),
        "{:?}",
        report.problems
    );
}

#[test]
fn reports_read_whole_and_streamed_give_the_same_rows() {
    // Decoded documents up to 256 KiB are parsed in place, larger ones streamed: both ways,
    // every record becomes a row, and a truncated large one keeps what came before the cut.
    assert!(
        report_xml("size", 4_000).len() > 256 * 1024,
        "the large case must be streamed"
    );
    assert!(
        report_xml("size", 300).len() < 256 * 1024,
        "the middle case is read whole"
    );
    for records in [3, 300, 4_000] {
        let xml = report_xml("size", records);
        let (outcome, sink) = run(&gzip(xml.as_bytes()), &ParseOptions::default());
        assert_eq!(outcome.rows(), records as u64, "{} bytes of XML", xml.len());
        assert_eq!(sink.rows.len(), records);
        assert!(
            outcome.reports[0].problems.is_empty(),
            "{:?}",
            outcome.reports[0].problems
        );
    }
    let big = gzip(report_xml("cut", 4_000).as_bytes());
    let (outcome, _) = run(&big[..big.len() * 3 / 4], &ParseOptions::default());
    let report = &outcome.reports[0];
    assert!(
        report.rows > 1_000 && report.rows < 4_000,
        "rows {}",
        report.rows
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.code() == "corrupt_gzip"),
        "{:?}",
        report.problems
    );
}

#[test]
fn stats_count_decompressed_bytes() {
    let xml = report_xml("s", 10);
    let bytes = gzip(&gzip(xml.as_bytes()));
    let mut sink = Recorder::default();
    let (outcome, stats) =
        parse_mail_with_stats(&bytes, "k", &ParseOptions::default(), &mut sink).expect("ok");
    assert_eq!(outcome.rows(), 10);
    assert_eq!(stats.documents, 1);
    // Both layers count: the inner gzip as produced by the outer one, then the XML.
    assert_eq!(
        stats.decompressed_bytes,
        (gzip(xml.as_bytes()).len() + xml.len()) as u64
    );
}

#[test]
fn declared_encodings_survive_the_mime_layer() {
    // windows-1252 XML in an 8bit text part: the parser gets the original bytes and decodes them.
    let xml = report_xml("w", 1)
        .replace("UTF-8", "windows-1252")
        .replace("crafted.example</org_name>", "Soci\u{e9}t\u{e9}</org_name>");
    let (cp1252, _, _) = encoding_rs::WINDOWS_1252.encode(&xml);
    let mut mail = headers("dmarc@example.com").into_bytes();
    mail.extend_from_slice(b"Content-Type: text/xml\nContent-Transfer-Encoding: 8bit\n\n");
    mail.extend_from_slice(&cp1252);
    let (outcome, sink) = run(&mail, &ParseOptions::default());
    assert_eq!(outcome.reports[0].identity.org_name, "Soci\u{e9}t\u{e9}");
    assert_eq!(sink.rows.len(), 1);

    // UTF-16 with a byte order mark, gzipped.
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in report_xml("u16", 2).encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mail = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(&utf16),
    )]);
    let (outcome, _) = run(mail.as_bytes(), &ParseOptions::default());
    assert_eq!(outcome.rows(), 2, "{:?}", outcome.skipped);
}
