//! Hostile input: decompression bombs, deep nesting, lying zip headers, oversized mails, and a
//! property test that mutated real mails never panic and never pass the limits.
//!
//! Time is never asserted: each test checks the reason names the limit and that the meter counted
//! at most one byte past it (`ExtractStats::decompressed_bytes`).

mod mail_support;

use std::io::{self, Write};

use dmarc_tsv_core::extract::ExtractStats;
use dmarc_tsv_core::mail::parse_mail_with_stats;
use dmarc_tsv_core::{Limits, MailOutcome, ParseOptions, ReportSink, RowView, SkipReason, Skipped};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use mail_support::*;
use proptest::prelude::*;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Raw deflate of `prefix` followed by `total` bytes of `pattern` repeated, built without ever
/// holding the inflated data: one 1 MiB block of the pattern is compressed once (ending on a
/// byte boundary with a sync flush) and its compressed bytes are repeated. The history before
/// every copy is the same pattern, so back-references stay valid. 1 GiB becomes about 1 MB.
fn deflate_bomb(prefix: &[u8], pattern: &[u8], total: u64) -> Vec<u8> {
    const BLOCK: usize = 1 << 20;
    assert_eq!(BLOCK % pattern.len(), 0);
    let block: Vec<u8> = pattern.iter().copied().cycle().take(BLOCK).collect();
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(prefix).expect("mem");
    // 64 KiB of pattern after the prefix: the window before the first repeated block is pattern.
    enc.write_all(&block[..64 * 1024]).expect("mem");
    enc.flush().expect("mem");
    let head = std::mem::take(enc.get_mut());
    enc.write_all(&block).expect("mem");
    enc.flush().expect("mem");
    let repeated = std::mem::take(enc.get_mut());
    let mut out = head;
    for _ in 0..total / BLOCK as u64 {
        out.extend_from_slice(&repeated);
    }
    // Final, empty fixed-Huffman block: BFINAL=1, BTYPE=01, end-of-block code.
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

fn gzip_wrap(deflate: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(deflate);
    // CRC and size are never reached: the limit stops the stream first.
    out.extend_from_slice(&[0; 8]);
    out
}

/// A one-member zip around an already deflated member, declaring `declared_size` inflated bytes.
fn zip_wrap(name: &str, deflate: &[u8], declared_size: u32) -> Vec<u8> {
    let compressed = u32::try_from(deflate.len()).expect("small bomb");
    let mut out = Vec::new();
    let header = |out: &mut Vec<u8>| {
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&8u16.to_le_bytes()); // deflate
        out.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
        out.extend_from_slice(&0u32.to_le_bytes()); // crc (never reached)
        out.extend_from_slice(&compressed.to_le_bytes());
        out.extend_from_slice(&declared_size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // extra
    };
    out.extend_from_slice(b"PK\x03\x04");
    header(&mut out);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(deflate);
    let central = out.len() as u32;
    out.extend_from_slice(b"PK\x01\x02");
    out.extend_from_slice(&20u16.to_le_bytes()); // version made by
    header(&mut out);
    out.extend_from_slice(&[0; 10]); // comment len, disk, internal and external attrs
    out.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    out.extend_from_slice(name.as_bytes());
    let central_len = out.len() as u32 - central;
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// 1 GiB of small unknown elements inside `<feedback>`: the XML parser keeps reading (nothing
/// it could stop on by itself), so only the decompression meter can end it.
fn xml_bomb_deflate() -> Vec<u8> {
    deflate_bomb(b"<?xml version=\"1.0\"?><feedback>", b"<x/>", GIB)
}

struct CountingSink(u64);

impl ReportSink for CountingSink {
    fn row(&mut self, _row: &RowView<'_>) -> io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

fn parse_with(bytes: &[u8], limits: Limits) -> (MailOutcome, ExtractStats) {
    let opts = ParseOptions {
        limits,
        exclude_disposition_none: false,
    };
    parse_mail_with_stats(bytes, "hostile", &opts, &mut CountingSink(0)).expect("sink never fails")
}

fn limit_name(skipped: &[Skipped]) -> Vec<String> {
    skipped
        .iter()
        .filter_map(|s| match &s.reason {
            SkipReason::LimitExceeded { limit, .. } => Some(limit.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn zip_bomb_of_one_gib_stops_at_the_attachment_limit() {
    let bomb = zip_wrap("report.xml", &xml_bomb_deflate(), 0x7fff_ffff);
    assert!(
        bomb.len() < 4 * MIB as usize,
        "bomb is {} bytes",
        bomb.len()
    );
    let limits = Limits {
        max_attachment_bytes: 4 * MIB,
        ..Limits::default()
    };
    let (outcome, stats) = parse_with(&bomb, limits.clone());
    assert!(!outcome.is_usable());
    assert_eq!(limit_name(&outcome.skipped), ["max_attachment_bytes"]);
    assert_eq!(outcome.skipped[0].location, "file > member \"report.xml\"");
    assert!(stats.decompressed_bytes <= limits.max_attachment_bytes + 1);
    assert!(stats.decompressed_bytes >= limits.max_attachment_bytes);
}

#[test]
fn zip_bomb_declaring_a_small_size_is_still_bounded() {
    // The header claims 1000 bytes: whatever the zip reader does with that claim, the meter
    // bounds what is inflated.
    let bomb = zip_wrap("report.xml", &xml_bomb_deflate(), 1000);
    let limits = Limits {
        max_attachment_bytes: 2 * MIB,
        ..Limits::default()
    };
    let (outcome, stats) = parse_with(&bomb, limits);
    assert!(!outcome.is_usable());
    assert!(!outcome.skipped.is_empty());
    assert!(stats.decompressed_bytes <= 2 * MIB + 1);
}

#[test]
fn gzip_bomb_in_a_mail_stops_at_the_attachment_limit() {
    let bomb = gzip_wrap(&xml_bomb_deflate());
    let mail = multipart(&[
        Part::text("text/plain", "Report."),
        Part::attachment("application/gzip", "r.xml.gz", &bomb),
    ]);
    let limits = Limits {
        max_attachment_bytes: 3 * MIB,
        ..Limits::default()
    };
    let (outcome, stats) = parse_with(mail.as_bytes(), limits);
    assert_eq!(limit_name(&outcome.skipped), ["max_attachment_bytes"]);
    assert_eq!(outcome.skipped[0].location, "part 2 \"r.xml.gz\"");
    assert!(stats.decompressed_bytes <= 3 * MIB + 1);
}

#[test]
fn bomb_with_default_limits_is_rejected_by_the_extraction_meter() {
    // Default limits, extraction level (no XML parsing): 1 GiB stops at 256 MiB + 1 byte.
    let bomb = gzip_wrap(&deflate_bomb(
        b"<?xml version=\"1.0\"?><feedback>",
        b"<x/>",
        GIB,
    ));
    let (ex, found) = collect(&bomb);
    assert!(found.is_empty());
    assert_eq!(limit_name(&ex.skipped), ["max_attachment_bytes"]);
    let max = Limits::default().max_attachment_bytes;
    assert!(ex.stats.decompressed_bytes <= max + 1);
}

#[test]
fn zip_inside_a_gzip_bomb_is_buffered_only_up_to_the_limit() {
    // A gzip whose content starts like a zip and then goes on for 1 GiB: the zip needs a buffer,
    // and that buffer is bounded by the meter.
    let bomb = gzip_wrap(&deflate_bomb(b"PK\x03\x04", &[0u8; 4], GIB));
    let limits = Limits {
        max_attachment_bytes: 8 * MIB,
        ..Limits::default()
    };
    let (ex, _) = collect_with(&bomb, &limits);
    assert_eq!(limit_name(&ex.skipped), ["max_attachment_bytes"]);
    assert!(ex.stats.decompressed_bytes <= 8 * MIB + 1);
}

#[test]
fn many_attachments_stop_at_the_mail_limit() {
    let xml = report_xml("big", 1500);
    let one = gzip(xml.as_bytes());
    let parts: Vec<Part> = (0..6)
        .map(|i| Part::attachment("application/gzip", &format!("r{i}.xml.gz"), &one))
        .collect();
    let mail = multipart(&parts);
    let size = xml.len() as u64;
    let limits = Limits {
        max_attachment_bytes: size + 10,
        max_mail_decompressed_bytes: size * 5 / 2,
        ..Limits::default()
    };
    let (outcome, stats) = parse_with(mail.as_bytes(), limits.clone());
    // Two whole reports fit; the third one is cut, the rest are refused at once.
    assert_eq!(outcome.reports.len(), 3, "{:?}", outcome.skipped);
    assert_eq!(outcome.reports[0].rows + outcome.reports[1].rows, 3000);
    assert!(outcome.reports[2].problems.iter().any(|p| matches!(
        &p.reason,
        SkipReason::LimitExceeded { limit, .. } if limit == "max_mail_decompressed_bytes"
    )));
    assert_eq!(
        limit_name(&outcome.skipped),
        ["max_mail_decompressed_bytes"; 3]
    );
    assert!(stats.decompressed_bytes <= limits.max_mail_decompressed_bytes + 1);
}

#[test]
fn deeply_nested_gzip_stops_at_the_nesting_limit() {
    let mut bytes = report_xml("deep", 1).into_bytes();
    for _ in 0..40 {
        bytes = gzip(&bytes);
    }
    let (outcome, stats) = parse_with(&bytes, Limits::default());
    assert!(!outcome.is_usable());
    assert_eq!(limit_name(&outcome.skipped), ["max_nesting_depth"]);
    assert!(matches!(
        outcome.skipped[0].reason,
        SkipReason::LimitExceeded {
            value: 9,
            max: 8,
            ..
        }
    ));
    assert!(stats.decompressed_bytes < 64 * 1024);
    // Within the limit, nesting works.
    let mut ok = report_xml("deep", 1).into_bytes();
    for _ in 0..7 {
        ok = gzip(&ok);
    }
    assert!(parse_with(&ok, Limits::default()).0.is_usable());
}

#[test]
fn deeply_nested_multiparts_stop_at_the_nesting_limit() {
    let mut mail = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(report_xml("m", 1).as_bytes()),
    )]);
    for depth in 0..200 {
        let boundary = format!("nest{depth}");
        mail = format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n--{boundary}\n{mail}\n--{boundary}--\n"
        );
    }
    let mail = format!("{}{mail}", headers("dmarc@example.com"));
    let (outcome, _) = parse_with(mail.as_bytes(), Limits::default());
    assert!(!outcome.is_usable());
    assert_eq!(limit_name(&outcome.skipped), ["max_nesting_depth"]);
}

#[test]
fn zip_with_too_many_members_reads_only_the_limit() {
    let xml = report_xml("z", 1).into_bytes();
    let names: Vec<String> = (0..100).map(|i| format!("r{i:03}.xml")).collect();
    let members: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &xml[..])).collect();
    let (ex, found) = collect(&zip(&members));
    assert_eq!(found.len(), 64);
    assert_eq!(
        ex.skipped
            .iter()
            .map(|s| s.reason.clone())
            .collect::<Vec<_>>(),
        [SkipReason::LimitExceeded {
            limit: "max_zip_members".into(),
            value: 100,
            max: 64
        }]
    );
}

#[test]
fn zip_declaring_impossible_entry_counts_is_corrupt() {
    let mut eocd = b"PK\x05\x06\0\0\0\0".to_vec();
    eocd.extend_from_slice(&[0xfe, 0xff, 0xfe, 0xff]); // 65534 entries
    eocd.extend_from_slice(&[0; 10]);
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(&[0; 100]);
    bytes.extend_from_slice(&eocd);
    let (ex, _) = collect(&bytes);
    assert_eq!(codes(&ex), ["corrupt_zip"]);
    assert!(ex.skipped[0].reason.to_string().contains("65534 entries"));

    // zip64: 2^40 entries declared in the zip64 end record.
    let mut z64 = b"PK\x03\x04".to_vec();
    z64.extend_from_slice(&[0; 60]);
    let record = z64.len() as u64;
    z64.extend_from_slice(b"PK\x06\x06");
    z64.extend_from_slice(&[0; 28]);
    z64.extend_from_slice(&(1u64 << 40).to_le_bytes());
    z64.extend_from_slice(&[0; 20]);
    z64.extend_from_slice(b"PK\x06\x07\0\0\0\0");
    z64.extend_from_slice(&record.to_le_bytes());
    z64.extend_from_slice(&[1, 0, 0, 0]);
    z64.extend_from_slice(b"PK\x05\x06\0\0\0\0\xff\xff\xff\xff");
    z64.extend_from_slice(&[0xff; 8]);
    z64.extend_from_slice(&[0, 0]);
    let (ex, _) = collect(&z64);
    assert_eq!(codes(&ex), ["corrupt_zip"]);
}

#[test]
fn oversized_mail_is_refused_before_parsing() {
    let mail = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(report_xml("big", 50).as_bytes()),
    )]);
    let limits = Limits {
        max_mail_bytes: 1000,
        ..Limits::default()
    };
    let (outcome, stats) = parse_with(mail.as_bytes(), limits);
    assert_eq!(
        outcome.skipped,
        [Skipped {
            location: String::new(),
            reason: SkipReason::LimitExceeded {
                limit: "max_mail_bytes".into(),
                value: mail.len() as u64,
                max: 1000
            }
        }]
    );
    assert_eq!(stats.decompressed_bytes, 0);
}

/// Found by cargo-fuzz: this multipart makes mail-parser 0.11 hit a `debug_assert!` ("Invalid part
/// ID") when debug assertions are on (as in this test build). `parse_mail` must still return,
/// with a reason, never unwind into the caller.
#[test]
fn fuzz_regression_mail_parser_debug_assert_is_contained() {
    let input = b"Au\nContent-type: multipart/mxed;\n\tboundary=\"B_3622128044_155770608\"\n\n> ThisR\n--B_3622128044_155770608\nContent-type: message/rfc822\nt\n\n6770608\nContent-type: message/rfc822\n\n\n--B_3622128044_155770608--\n\n";
    let (outcome, _) = parse_with(input, Limits::default());
    assert!(!outcome.is_usable());
    assert!(!outcome.skipped.is_empty());
}

/// Found by cargo-fuzz: an empty zip (only an end-of-directory record) gave nothing and said
/// nothing. So does a zip holding only directories.
#[test]
fn fuzz_regression_zip_without_files_says_why() {
    let empty = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let (outcome, _) = parse_with(empty, Limits::default());
    assert_eq!(
        outcome.skipped[0].reason,
        SkipReason::NotAReport {
            detail: "zip archive without files".into()
        }
    );
    let dirs_only = zip(&[("a/", b""), ("a/b/", b"")]);
    let (outcome, _) = parse_with(&dirs_only, Limits::default());
    assert_eq!(outcome.skipped.len(), 1);
    assert_eq!(outcome.skipped[0].location, "file");
}

// ---- property test: mutated real mails ----------------------------------------------------------

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        "mail-auth/resources/dmarc-feedback/104.eml",
        "mail-auth/resources/dmarc-feedback/103.eml",
        "mox/testdata/dmarc-reports/google.eml",
        "parsedmarc/samples/aggregate/mimecast-weird-gzip.eml",
        "mail-auth/resources/arf/001.eml",
        "mail-auth/resources/tlsrpt/rpt01.eml",
        "dmarc-report-converter/pkg/dmarc/testdata/test.xml.gz.gz",
        "dmarc_report_reader/tests/fixtures/multi-report.zip",
        "dmarcgo/testdata/fixtures/aol.com!georgestarcher.com!1342497600!1342584000.zlib",
        "go-dmarc-report/testdata/test_report.zip",
    ]
    .iter()
    .map(|p| corpus(p))
    .collect();
    let xml = report_xml("p", 3);
    let nested = multipart(&[attached_message(&multipart(&[Part::attachment(
        "application/zip",
        "r.zip",
        &zip(&[("a.xml", xml.as_bytes())]),
    )]))]);
    seeds.push(crlf(&nested));
    seeds.push(xml.into_bytes());
    seeds
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        xor: u8,
    },
    Truncate {
        at: usize,
    },
    Splice {
        from_seed: usize,
        start: usize,
        len: usize,
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation], seeds: &[Vec<u8>]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip { at, xor } => {
                let at = at % len;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= xor;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Splice {
                from_seed,
                start,
                len: n,
                at,
            } => {
                let other = &seeds[from_seed % seeds.len()];
                let start = start % other.len().max(1);
                let end = (start + n).min(other.len());
                let at = at % len;
                let chunk = other.get(start..end).unwrap_or_default().to_vec();
                bytes.splice(at.min(bytes.len())..at.min(bytes.len()), chunk);
            }
            Mutation::Insert { at, bytes: extra } => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, extra.iter().copied());
            }
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<usize>(), any::<usize>(), 0usize..4096, any::<usize>())
            .prop_map(|(from_seed, start, len, at)| Mutation::Splice { from_seed, start, len, at }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn small_limits() -> Limits {
    Limits {
        max_mail_bytes: 4 * MIB,
        max_attachment_bytes: MIB,
        max_mail_decompressed_bytes: 2 * MIB,
        max_nesting_depth: 6,
        max_zip_members: 8,
        ..Limits::default()
    }
}

fn check_invariants(bytes: &[u8]) {
    let limits = small_limits();
    let mut sink = CountingSink(0);
    let opts = ParseOptions {
        limits: limits.clone(),
        exclude_disposition_none: false,
    };
    let (outcome, stats) =
        parse_mail_with_stats(bytes, "prop", &opts, &mut sink).expect("sink never fails");
    assert!(stats.decompressed_bytes <= limits.max_mail_decompressed_bytes + 1);
    assert_eq!(sink.0, outcome.rows());
    // Never silent: rows, or a reason.
    assert!(outcome.is_usable() || !outcome.skipped.is_empty());
    assert!(stats.documents as usize >= outcome.reports.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_mails_never_panic_and_respect_limits(
        seed in 0usize..12,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let bytes = apply(seeds[seed % seeds.len()].clone(), &mutations, &seeds);
        check_invariants(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_invariants(&bytes);
        // The same bytes after a mail header or a container magic reach deeper code paths.
        let mut mail = headers("x@example.com").into_bytes();
        mail.extend_from_slice(b"Content-Type: application/gzip\nContent-Transfer-Encoding: base64\n\n");
        mail.extend_from_slice(base64(&bytes, 76, "\n").as_bytes());
        check_invariants(&mail);
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        gz.extend_from_slice(&bytes);
        check_invariants(&gz);
    }
}
