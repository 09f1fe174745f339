//! The crafted quirk fixtures in tests/fixtures/crafted: every file gives exactly what
//! `expected.tsv` says (reports, rows, skip codes, location).

use std::io;
use std::path::PathBuf;

use dmarc_tsv_core::{ParseOptions, ReportSink, RowView, parse_mail};

fn crafted_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/crafted")
}

struct Count(u64);

impl ReportSink for Count {
    fn row(&mut self, _row: &RowView<'_>) -> io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

#[test]
fn every_crafted_fixture_gives_what_expected_tsv_says() {
    let expected = std::fs::read_to_string(crafted_dir().join("expected.tsv")).expect("expected");
    let mut checked = 0;
    for line in expected.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, reports, rows, skipped, location] = cols[..] else {
            panic!("expected.tsv line has 5 columns: {line:?}");
        };
        let bytes = std::fs::read(crafted_dir().join(file)).expect("fixture");
        let mut sink = Count(0);
        let outcome =
            parse_mail(&bytes, file, &ParseOptions::default(), &mut sink).expect("counting sink");
        assert_eq!(
            outcome.reports.len().to_string(),
            reports,
            "{file}: {outcome:?}"
        );
        assert_eq!(outcome.rows().to_string(), rows, "{file}");
        assert_eq!(sink.0, outcome.rows(), "{file}");
        let codes: Vec<&str> = outcome.skipped.iter().map(|s| s.reason.code()).collect();
        let codes = if codes.is_empty() {
            "-".to_string()
        } else {
            codes.join(",")
        };
        assert_eq!(codes, skipped, "{file}: {:?}", outcome.skipped);
        let first = outcome
            .reports
            .first()
            .map(|r| r.location.as_str())
            .or_else(|| outcome.skipped.first().map(|s| s.location.as_str()))
            .unwrap_or_default();
        assert_eq!(first, location, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 16);
}

#[test]
fn lf_and_crlf_variants_give_the_same_rows() {
    let read = |name: &str| std::fs::read(crafted_dir().join(name)).expect("fixture");
    let lf = read("line-ends-lf.eml");
    let crlf = read("line-ends-crlf.eml");
    assert!(!lf.windows(2).any(|w| w == b"\r\n"));
    assert!(crlf.windows(2).any(|w| w == b"\r\n"));
    let rows = |bytes: &[u8]| {
        let mut out = Vec::new();
        struct Keep<'a>(&'a mut Vec<String>);
        impl ReportSink for Keep<'_> {
            fn row(&mut self, row: &RowView<'_>) -> io::Result<()> {
                self.0.push(format!("{:?}", row.record));
                Ok(())
            }
        }
        parse_mail(bytes, "k", &ParseOptions::default(), &mut Keep(&mut out)).expect("sink");
        out
    };
    assert_eq!(rows(&lf), rows(&crlf));
    assert_eq!(rows(&lf).len(), 2);
}
