//! Mails of the two simple shapes (a single-part body, or one multipart level of leaves) are read
//! without mail-parser's body pass (`extract::simple_mail`). These tests hold that reading to
//! mail-parser's: on every fixture, on crafted shapes and on mutated mails, both ways give the
//! same rows, the same reports, the same skipped parts with the same locations, and the same
//! counters; and the shapes that should take the direct way do take it.

mod mail_support;

use std::io;

use dmarc_tsv_core::extract::{ExtractStats, MimeReading, reads_as_simple_mail};
use dmarc_tsv_core::mail::parse_mail_reading;
use dmarc_tsv_core::writer::{RowWriter, TsvWriter};
use dmarc_tsv_core::{Limits, MailOutcome, ParseOptions, ReportSink, RowView};
use mail_support::*;
use proptest::prelude::*;

struct TsvLines(TsvWriter<Vec<u8>>);

impl ReportSink for TsvLines {
    fn row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        self.0.write_row(row)
    }
}

fn read(
    bytes: &[u8],
    opts: &ParseOptions,
    reading: MimeReading,
) -> (MailOutcome, ExtractStats, String) {
    let mut sink = TsvLines(TsvWriter::new(Vec::new()));
    let (outcome, stats) = parse_mail_reading(bytes, "key", opts, &mut sink, reading)
        .expect("an in-memory sink does not fail");
    let rows = String::from_utf8(sink.0.into_inner()).expect("TSV is UTF-8");
    (outcome, stats, rows)
}

/// Both readings agree on everything `bytes` gives; returns whether the direct one applied.
fn assert_same_either_way(bytes: &[u8], what: &str) -> bool {
    assert_same_either_way_with(bytes, what, &ParseOptions::default())
}

fn assert_same_either_way_with(bytes: &[u8], what: &str, opts: &ParseOptions) -> bool {
    let direct = read(bytes, opts, MimeReading::SimpleShapesFirst);
    let general = read(bytes, opts, MimeReading::MailParserOnly);
    assert_eq!(direct.2, general.2, "rows differ for {what}");
    assert_eq!(direct.0, general.0, "outcome differs for {what}");
    assert_eq!(direct.1, general.1, "counters differ for {what}");
    reads_as_simple_mail(bytes)
}

#[test]
fn every_fixture_reads_the_same_either_way() {
    let root = fixtures_dir();
    let mut direct = Vec::new();
    for file in &fixture_files() {
        let bytes = std::fs::read(file).expect("fixture");
        let name = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if assert_same_either_way(&bytes, &name) {
            direct.push(name.clone());
        }
        // LF and CRLF line ends alike.
        if !bytes.contains(&b'\r') && bytes.is_ascii() {
            let crlf_bytes = crlf(&String::from_utf8_lossy(&bytes));
            assert_same_either_way(&crlf_bytes, &format!("{name} with CRLF"));
        }
    }
    // Real reporters' mails of both shapes take the direct way (the comparison above is not
    // vacuous), and the shapes it declines still reach mail-parser.
    for expected in [
        "corpus/mox/testdata/dmarc-reports/google.eml",
        "crafted/base64-60.eml",
        "crafted/line-ends-crlf.eml",
        "crafted/x-zip-compressed.eml",
    ] {
        assert!(
            direct.iter().any(|d| d == expected),
            "{expected} not read directly: {direct:?}"
        );
    }
    assert!(!direct.iter().any(|d| d == "crafted/rfc822-wrapped.eml"));
    assert!(
        direct.len() >= 20,
        "only {} fixtures read directly",
        direct.len()
    );
}

fn report_attachment(content_type: &str, name: &str, payload: &[u8]) -> Part {
    Part::attachment(content_type, name, payload)
}

#[test]
fn ses_style_shapes_read_directly_and_the_same() {
    let xml = report_xml("ses", 4);
    let xml = xml.as_bytes();
    let zip_bytes = zip(&[("r.xml", xml)]);
    let gz = gzip(xml);
    let text = Part::text("text/plain; charset=UTF-8", "This is an aggregate report.");
    let shapes: Vec<(&str, String)> = vec![
        (
            "text + zip",
            multipart(&[
                text.clone(),
                report_attachment("application/zip", "r.zip", &zip_bytes),
            ]),
        ),
        (
            "text + gzip",
            multipart(&[
                text.clone(),
                report_attachment("application/gzip", "r.xml.gz", &gz),
            ]),
        ),
        (
            "text + xml",
            multipart(&[text.clone(), report_attachment("text/xml", "r.xml", xml)]),
        ),
        (
            "gzip only",
            multipart(&[report_attachment("application/octet-stream", "r.gz", &gz)]),
        ),
        (
            "single zip",
            single_part(&report_attachment("application/zip", "r.zip", &zip_bytes)),
        ),
        (
            "single xml",
            single_part(&Part::text("text/xml", &String::from_utf8_lossy(xml))),
        ),
        (
            "two reports",
            multipart(&[
                report_attachment("application/zip", "a.zip", &zip_bytes),
                report_attachment(
                    "application/gzip",
                    "b.xml.gz",
                    &gzip(report_xml("other", 2).as_bytes()),
                ),
            ]),
        ),
        ("text only", multipart(std::slice::from_ref(&text))),
        // Over 8 KiB of base64: decoded in several steps.
        (
            "text + large xml",
            multipart(&[
                text.clone(),
                report_attachment("text/xml", "big.xml", report_xml("big", 300).as_bytes()),
            ]),
        ),
    ];
    for (what, mail) in &shapes {
        for bytes in [mail.clone().into_bytes(), crlf(mail)] {
            assert!(
                assert_same_either_way(&bytes, what),
                "{what} was not read directly"
            );
        }
    }
    let (outcome, _, rows) = read(
        shapes[6].1.as_bytes(),
        &ParseOptions::default(),
        MimeReading::SimpleShapesFirst,
    );
    assert_eq!(outcome.reports.len(), 2);
    assert_eq!(rows.lines().count(), 6);
}

#[test]
fn shapes_it_is_not_sure_of_go_to_mail_parser_and_still_read_the_same() {
    let xml = report_xml("odd", 2);
    let zip_bytes = zip(&[("r.xml", xml.as_bytes())]);
    let attachment = report_attachment("application/zip", "r.zip", &zip_bytes);
    let nested = multipart(&[Part {
        content_type: "multipart/alternative; boundary=\"inner\"".into(),
        disposition: None,
        body: format!(
            "--inner\nContent-Type: text/plain\n\nhello\n--inner\nContent-Type: application/zip\n\
             Content-Transfer-Encoding: base64\n\n{}\n--inner--",
            base64(&zip_bytes, 76, "\n")
        ),
        transfer_encoding: None,
    }]);
    let quoted_printable = multipart(&[Part {
        content_type: "text/xml".into(),
        disposition: None,
        body: xml.replace("<feedback>", "<feedback>=\n"),
        transfer_encoding: Some("quoted-printable"),
    }]);
    // A length that is not a multiple of 3 needs padding (gzip ignores the trailing bytes).
    let mut gz = gzip(xml.as_bytes());
    while gz.len().is_multiple_of(3) {
        gz.push(0);
    }
    let unpadded = multipart(&[Part {
        body: base64(&gz, 76, "\n").trim_end_matches('=').to_string(),
        ..report_attachment("application/gzip", "r.gz", &gz)
    }]);
    let spaced = multipart(&[Part {
        body: base64(&zip_bytes, 60, " \n"),
        ..attachment.clone()
    }]);
    let unclosed = {
        let mail = multipart(std::slice::from_ref(&attachment));
        let cut = mail.rfind("--=_crafted").expect("close delimiter");
        mail[..cut].to_string()
    };
    let wrapped = multipart(&[attached_message(&multipart(std::slice::from_ref(
        &attachment,
    )))]);
    let mbox_line = format!(
        "From reporter@crafted.example Mon Jan  1 00:00:00 2024\n{}",
        multipart(std::slice::from_ref(&attachment))
    );
    for (what, mail) in [
        ("nested multipart", nested),
        ("quoted-printable", quoted_printable),
        ("unpadded base64", unpadded),
        ("base64 with trailing spaces", spaced),
        ("no close delimiter", unclosed),
        ("attached message", wrapped),
        ("mbox From line", mbox_line),
    ] {
        for bytes in [mail.clone().into_bytes(), crlf(&mail)] {
            assert!(
                !assert_same_either_way(&bytes, what),
                "{what} was read directly"
            );
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let xml = report_xml("prop", 3);
    let zip_bytes = zip(&[("r.xml", xml.as_bytes())]);
    let text = Part::text("text/plain", "Report attached.");
    vec![
        crlf(&multipart(&[
            text.clone(),
            report_attachment("application/zip", "r.zip", &zip_bytes),
        ])),
        multipart(&[
            text,
            report_attachment("application/gzip", "r.gz", &gzip(xml.as_bytes())),
        ])
        .into_bytes(),
        crlf(&single_part(&Part::text("text/xml", &xml))),
        corpus("mox/testdata/dmarc-reports/google.eml"),
        corpus("mail-auth/resources/dmarc-feedback/104.eml"),
    ]
}

/// Mutations aimed at what the direct reading decides on: header lines, delimiters, base64.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    const INSERTS: [&[u8]; 8] = [b"\n", b"\r", b"--", b" ", b"=", b":", b"\n\n", b"-"];
    for &(at, kind, value) in edits {
        let at = at % bytes.len().max(1);
        match kind % 4 {
            0 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= value.max(1);
                }
            }
            1 => {
                let insert = INSERTS[usize::from(value) % INSERTS.len()];
                bytes.splice(at..at, insert.iter().copied());
            }
            2 => {
                if at < bytes.len() {
                    bytes.remove(at);
                }
            }
            _ => bytes.truncate(at.max(bytes.len() / 2)),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_mails_read_the_same_either_way(
        seed in 0usize..5,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
        depth in 0u32..4,
        attachment_kib in prop_oneof![Just(1u64), Just(4), Just(256 * 1024)],
        exclude_disposition_none in any::<bool>(),
    ) {
        let seeds = seeds();
        let bytes = mutate(seeds[seed].clone(), &edits);
        // Tight limits too: both readings must meet them at the same parts.
        let opts = ParseOptions {
            limits: Limits {
                max_nesting_depth: depth,
                max_attachment_bytes: attachment_kib * 1024,
                ..Limits::default()
            },
            exclude_disposition_none,
        };
        assert_same_either_way_with(&bytes, "a mutated mail", &opts);
    }
}

/// The property above would prove little if mutations always made the direct reading decline:
/// over a fixed sequence of mutations, both readings are taken often, and agree.
#[test]
fn mutations_exercise_both_readings() {
    let seeds = seeds();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 16
    };
    let (mut direct, mut declined) = (0, 0);
    for case in 0..600 {
        let edits: Vec<(usize, u8, u8)> = (0..1 + next() % 2)
            .map(|_| (next() as usize, next() as u8, next() as u8))
            .collect();
        let bytes = mutate(seeds[case % seeds.len()].clone(), &edits);
        if assert_same_either_way(&bytes, &format!("mutation case {case}")) {
            direct += 1;
        } else {
            declined += 1;
        }
    }
    eprintln!("{direct} of 600 mutated mails read directly, {declined} declined");
    assert!(
        direct >= 150,
        "only {direct} of 600 mutated mails read directly"
    );
    assert!(
        declined >= 60,
        "only {declined} of 600 mutated mails declined"
    );
}
