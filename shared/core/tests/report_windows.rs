//! The XML parser reads a document in windows and resumes quick-xml at the event a window cut
//! short (see `Window` in report.rs). Whatever the window size, a document must give exactly the
//! same records, problems and errors: every fixture and a set of broken documents are parsed
//! with block sizes from one byte up, and compared with the default.

mod mail_support;
mod report_support;

use std::io::{self, BufReader, Read};

use dmarc_tsv_core::Limits;
use dmarc_tsv_core::report::{parse_report, parse_report_bytes, parse_report_in_blocks};
use mail_support::fixture_files;
use report_support::{trace, trace_records};

fn parse_default(bytes: &[u8], limits: &Limits) -> String {
    trace(|on_record| parse_report(bytes, limits, on_record))
}

fn parse_blocks(bytes: &[u8], limits: &Limits, block: usize) -> String {
    trace(|on_record| parse_report_in_blocks(bytes, limits, block, on_record))
}

/// The in-memory entry (parsed in place when it can be).
fn parse_in_place(bytes: &[u8], limits: &Limits) -> String {
    trace(|on_record| parse_report_bytes(bytes, limits, on_record))
}

fn assert_same_for_every_block(name: &str, bytes: &[u8], limits: &Limits) {
    let expected = parse_default(bytes, limits);
    let in_place = parse_in_place(bytes, limits);
    assert!(
        in_place == expected,
        "{name}: parsed in place, the result changed\n--- streamed\n{expected}\n--- in place\n{in_place}"
    );
    for block in [1, 2, 3, 5, 8, 13, 64, 100, 511, 4096] {
        let got = parse_blocks(bytes, limits, block);
        assert!(
            got == expected,
            "{name}: block size {block} changed the result\n--- default\n{expected}\n--- block {block}\n{got}"
        );
    }
}

#[test]
fn every_xml_fixture_parses_the_same_whatever_the_window() {
    let files: Vec<_> = fixture_files()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .collect();
    assert!(files.len() >= 40, "only {} XML fixtures found", files.len());
    let mut with_records = 0;
    for path in &files {
        let bytes = std::fs::read(path).expect("fixture");
        let default = parse_default(&bytes, &Limits::default());
        if default.lines().count() > 1 {
            with_records += 1;
        }
        assert_same_for_every_block(&path.display().to_string(), &bytes, &Limits::default());
    }
    assert!(
        with_records >= 30,
        "only {with_records} fixtures gave records"
    );
}

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n  <report_metadata>\
    <org_name>AT&amp;T &#x263A; Mail</org_name><email>d@example.org</email>\
    <report_id>r-1</report_id><date_range><begin>1700000000</begin><end>1700086399</end>\
    </date_range></report_metadata>\n  <policy_published><domain>example.com</domain>\
    <p>Reject</p><pct>100</pct></policy_published>\n";

fn record(ip: &str) -> String {
    format!(
        "  <record>\n    <row><source_ip>{ip}</source_ip><count>2</count><policy_evaluated>\
         <disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>\
         \n    <identifiers><header_from>example.com</header_from></identifiers>\
         <auth_results><dkim><domain>example.com</domain><result>Pass</result></dkim>\
         <spf><domain>a &lt;b&gt; c</domain><result>fail</result></spf></auth_results>\n  </record>\n"
    )
}

#[test]
fn broken_documents_fail_the_same_whatever_the_window() {
    let good = format!(
        "{HEAD}{}{}</feedback>\n",
        record("192.0.2.1"),
        record("192.0.2.2")
    );
    let cases: Vec<(&str, String)> = vec![
        ("complete", good.clone()),
        ("truncated in a tag", good[..good.len() - 40].to_string()),
        (
            "truncated in text",
            format!(
                "{HEAD}{}  <record><row><source_ip>192.0",
                record("192.0.2.1")
            ),
        ),
        (
            "mismatched end tag",
            format!(
                "{HEAD}{}<record><row></rowx></record></feedback>",
                record("192.0.2.1")
            ),
        ),
        ("unmatched end tag", format!("</stray>{good}")),
        (
            "comment and CDATA",
            format!(
                "{HEAD}<!-- a > b -->{}<![CDATA[x]]></feedback>",
                record("192.0.2.9")
            ),
        ),
        (
            "unclosed comment",
            format!("{HEAD}{}<!-- never closed", record("192.0.2.1")),
        ),
        ("dangling ampersand", good.replace("Mail", "M & M")),
        (
            "doctype and entity",
            format!(
                "<!DOCTYPE x [<!ENTITY e \"> lol\">]>{}",
                good.replacen("Mail", "&e;", 1)
            ),
        ),
        (
            "text after the root",
            format!("{good}<feedback>again</feedback>"),
        ),
        (
            "not a report",
            "<html><body>hello</body></html>".to_string(),
        ),
        ("empty", String::new()),
    ];
    for (name, doc) in &cases {
        assert_same_for_every_block(name, doc.as_bytes(), &Limits::default());
    }
    // Records are read on both sides of a window boundary.
    let complete = parse_blocks(good.as_bytes(), &Limits::default(), 7);
    assert!(
        complete.contains("192.0.2.1") && complete.contains("192.0.2.2"),
        "{complete}"
    );
    assert!(complete.contains("AT&T \u{263A} Mail"), "{complete}");
    let mismatched = parse_blocks(cases[3].1.as_bytes(), &Limits::default(), 5);
    assert!(
        mismatched.contains("expected `</row>`, but `</rowx>` was found"),
        "{mismatched}"
    );
}

#[test]
fn an_event_larger_than_the_budget_is_refused_at_any_window_size() {
    // The budget is 16 x max_field_bytes, at least 1 MiB: a comment of 1.5 MiB exceeds it.
    let huge_comment = format!(
        "{HEAD}{}<!--{}-->{}</feedback>",
        record("192.0.2.1"),
        "x".repeat(1_500_000),
        record("192.0.2.2")
    );
    let limits = Limits::default();
    for block in [4096, 32 * 1024, 1 << 20] {
        let got = parse_blocks(huge_comment.as_bytes(), &limits, block);
        assert!(
            got.contains("192.0.2.1"),
            "block {block}: the record before is kept\n{got}"
        );
        assert!(
            !got.contains("192.0.2.2"),
            "block {block}: nothing after the event\n{got}"
        );
        assert!(
            got.contains("max_field_bytes"),
            "block {block}: names the limit\n{got}"
        );
    }
    assert_eq!(
        parse_default(huge_comment.as_bytes(), &limits),
        parse_blocks(huge_comment.as_bytes(), &limits, 4096)
    );
}

/// Gives `good` bytes, then fails, like a gzip stream with a corrupt tail.
struct FailsAfter<'a> {
    data: &'a [u8],
}

impl Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt deflate stream",
            ));
        }
        let n = self.data.len().min(buf.len()).min(97);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn a_read_error_keeps_the_records_before_it_at_any_window_size() {
    let doc = format!(
        "{HEAD}{}{}{}",
        record("192.0.2.1"),
        record("192.0.2.2"),
        record("192.0.2.3")
    );
    let cut = doc.find("192.0.2.3").expect("third record");
    let limits = Limits::default();
    let results: Vec<String> = [3usize, 64, 1000, 32 * 1024]
        .iter()
        .map(|&block| {
            let reader = BufReader::new(FailsAfter {
                data: &doc.as_bytes()[..cut],
            });
            trace_records(
                |_, record| record.source_ip.clone(),
                |on_record| parse_report_in_blocks(reader, &limits, block, on_record),
            )
        })
        .collect();
    for got in &results {
        assert!(got.starts_with("192.0.2.1\n192.0.2.2\n"), "{got}");
        assert!(!got.contains("192.0.2.3"), "{got}");
        assert!(
            got.contains("reading input failed") && got.contains("corrupt deflate stream"),
            "{got}"
        );
    }
    assert!(
        results.windows(2).all(|pair| pair[0] == pair[1]),
        "{results:#?}"
    );
}
