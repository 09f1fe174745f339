//! Container and MIME quirks (doc: /work notes "Containers and MIME"), checked at the extraction
//! level with a visitor that records each document found and its bytes: independent of the XML
//! parser. Real fixtures where one exists, crafted mails otherwise.

mod mail_support;

use dmarc_tsv_core::{Limits, SkipReason, Skipped};
use mail_support::*;

fn starts_with_xml(bytes: &[u8]) -> bool {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    text.trim_ascii_start().starts_with(b"<")
}

fn only_doc(found: &[Found]) -> &Found {
    assert_eq!(found.len(), 1, "documents: {found:?}");
    &found[0]
}

// ---- real fixtures ---------------------------------------------------------------------------

#[test]
fn ses_octet_stream_with_rfc2231_split_name() {
    let (ex, found) = collect(&corpus("mail-auth/resources/dmarc-feedback/104.eml"));
    let doc = only_doc(&found);
    assert_eq!(
        doc.location,
        "part 2 \"amazonses.com!stalw.art!1663545600!1663632000.xml.gz\""
    );
    assert!(starts_with_xml(&doc.bytes));
    assert!(ex.skipped.is_empty(), "{:?}", ex.skipped);
    assert_eq!(ex.report_to, "domains@stalw.art");
    assert!(!ex.bare_file);
}

#[test]
fn mimecast_gzip_with_trailing_crlf() {
    let (ex, found) = collect(&corpus(
        "parsedmarc/samples/aggregate/mimecast-weird-gzip.eml",
    ));
    let doc = only_doc(&found);
    assert!(
        doc.bytes.ends_with(b"</feedback>") || doc.bytes.trim_ascii_end().ends_with(b"</feedback>")
    );
    assert!(ex.skipped.is_empty(), "{:?}", ex.skipped);
}

#[test]
fn double_gzip_bare_file() {
    let outer = corpus("dmarc-report-converter/pkg/dmarc/testdata/test.xml.gz.gz");
    let single = corpus("dmarc-report-converter/pkg/dmarc/testdata/test.xml.gz");
    let (ex, found) = collect(&outer);
    assert!(ex.bare_file);
    assert_eq!(ex.report_to, "");
    assert_eq!(only_doc(&found).bytes, inflate_gzip(&single));
    assert_eq!(only_doc(&found).location, "file");
}

#[test]
fn raw_zlib_stream() {
    let (ex, found) = collect(&corpus(
        "dmarcgo/testdata/fixtures/aol.com!georgestarcher.com!1342497600!1342584000.zlib",
    ));
    assert!(ex.skipped.is_empty(), "{:?}", ex.skipped);
    let zip =
        corpus("dmarcgo/testdata/fixtures/aol.com!georgestarcher.com!1342497600!1342584000.zip");
    let (_, from_zip) = collect(&zip);
    assert_eq!(only_doc(&found).bytes, only_doc(&from_zip).bytes);
}

#[test]
fn zip_directory_entries_and_member_in_subfolder() {
    let (ex, found) = collect(&corpus("go-dmarc-report/testdata/test_report.zip"));
    assert_eq!(
        only_doc(&found).location,
        "file > member \"subfolder.xml/test_report.xml\""
    );
    assert!(
        ex.skipped.is_empty(),
        "directory entries are not reported: {:?}",
        ex.skipped
    );
}

#[test]
fn zip_with_three_members() {
    let (ex, found) = collect(&corpus(
        "dmarc_report_reader/tests/fixtures/multi-report.zip",
    ));
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|f| f.location.starts_with("file > member \""))
    );
    assert!(found.iter().all(|f| starts_with_xml(&f.bytes)));
    assert!(ex.skipped.is_empty());
}

#[test]
fn broken_gzip_is_corrupt_gzip() {
    let (ex, found) = collect(&corpus(
        "dmarc-report-ses-tsv/test-data/mail-with-bad-gzip.txt",
    ));
    assert!(found.is_empty());
    assert_eq!(codes(&ex), ["corrupt_gzip"]);
    assert!(ex.skipped[0].location.contains(".gz\""));
}

#[test]
fn broken_zip_is_corrupt_zip() {
    let (ex, found) = collect(&corpus(
        "dmarc-report-ses-tsv/test-data/mail-with-bad-zip.txt",
    ));
    assert!(found.is_empty());
    assert_eq!(codes(&ex), ["corrupt_zip"]);
}

#[test]
fn zip_without_a_report_names_the_member() {
    let (ex, found) = collect(&corpus(
        "dmarc-report-ses-tsv/test-data/mail-with-non-dmarc-zip.txt",
    ));
    assert!(found.is_empty());
    assert_eq!(codes(&ex), ["not_a_report"]);
    assert!(ex.skipped[0].location.ends_with("> member \"file.xml\""));
}

#[test]
fn mail_without_attachments_is_no_attachment() {
    let (ex, found) = collect(&corpus(
        "dmarc-report-ses-tsv/test-data/mail-without-attachments.txt",
    ));
    assert!(found.is_empty());
    assert_eq!(codes(&ex), ["no_attachment"]);
    assert_eq!(ex.report_to, "dmarc@example.com");
}

#[test]
fn smtp_tls_reports_are_recognised_not_dropped() {
    for path in [
        "mail-auth/resources/tlsrpt/rpt01.eml",
        "mail-auth/resources/tlsrpt/rpt02.eml",
        "mox/testdata/tlsreports/microsoft.eml",
        "parsedmarc/samples/smtp_tls/google.com_smtp_tls_report.eml",
        "parsedmarc/samples/smtp_tls/rfc8460.json",
    ] {
        let (ex, found) = collect(&corpus(path));
        assert!(found.is_empty(), "{path}");
        assert_eq!(
            ex.skipped
                .iter()
                .map(|s| s.reason.clone())
                .collect::<Vec<_>>(),
            [SkipReason::UnsupportedReport {
                kind: "smtp-tls".into()
            }],
            "{path}"
        );
    }
}

#[test]
fn forensic_reports_are_recognised_not_dropped() {
    for path in [
        "mail-auth/resources/arf/003.eml",
        "parsedmarc/samples/failure/dmarc_ruf_report_linkedin.crlf.eml",
        "parsedmarc/samples/failure/[Netease DMARC Failure Report] Rent Reminder.eml",
        "sisimai-set-of-emails/maildir/bsd/arf-19.eml",
    ] {
        let (ex, found) = collect(&corpus(path));
        assert!(found.is_empty(), "{path}");
        assert_eq!(
            ex.skipped
                .iter()
                .map(|s| s.reason.clone())
                .collect::<Vec<_>>(),
            [SkipReason::UnsupportedReport {
                kind: "dmarc-failure (forensic)".into()
            }],
            "{path}"
        );
    }
}

#[test]
fn outlook_nested_multipart_and_78_char_base64_lines() {
    // multipart/mixed > related > alternative (text + html) and a gzip: only the gzip is a report,
    // the HTML body is not mistaken for XML.
    let (ex, found) = collect(&corpus("mail-auth/resources/dmarc-feedback/103.eml"));
    let doc = only_doc(&found);
    assert!(
        doc.location.starts_with("part 2 \"protection.outlook.com!"),
        "{}",
        doc.location
    );
    assert!(ex.skipped.is_empty());
}

#[test]
fn yahoo_60_char_base64_lines_crlf() {
    let (_, found) = collect(&corpus("mox/testdata/dmarc-reports/yahoo.eml"));
    assert!(starts_with_xml(&only_doc(&found).bytes));
}

#[test]
fn google_single_part_zip_body() {
    let (ex, found) = collect(&corpus("mox/testdata/dmarc-reports/google.eml"));
    let doc = only_doc(&found);
    assert!(
        doc.location.starts_with("body \"google.com!ueber.net"),
        "{}",
        doc.location
    );
    assert!(doc.location.contains(" > member \""));
    assert!(ex.skipped.is_empty());
}

#[test]
fn bare_report_files_of_every_container() {
    for path in [
        "avvertix-dmarc-report-parser/tests/fixtures/dmarc.xml",
        "avvertix-dmarc-report-parser/tests/fixtures/dmarc.xml.gz",
        "avvertix-dmarc-report-parser/tests/fixtures/dmarc.zip",
        "avvertix-dmarc-report-parser/tests/fixtures/dmarc-as-txt.txt",
    ] {
        let (ex, found) = collect(&corpus(path));
        assert!(ex.bare_file, "{path}");
        assert_eq!(ex.report_to, "");
        assert!(starts_with_xml(&only_doc(&found).bytes), "{path}");
    }
}

// ---- crafted mails -----------------------------------------------------------------------------

fn xml() -> Vec<u8> {
    report_xml("crafted-1", 2).into_bytes()
}

#[test]
fn zip_labelled_gzip() {
    let mail = multipart(&[
        Part::text("text/plain", "A report."),
        Part::attachment("application/gzip", "r.xml.gz", &zip(&[("r.xml", &xml())])),
    ]);
    let (_, found) = collect(mail.as_bytes());
    assert_eq!(only_doc(&found).bytes, xml());
    assert_eq!(
        only_doc(&found).location,
        "part 2 \"r.xml.gz\" > member \"r.xml\""
    );
}

#[test]
fn gzip_labelled_zip() {
    let mail = multipart(&[Part::attachment("application/zip", "r.zip", &gzip(&xml()))]);
    let (_, found) = collect(mail.as_bytes());
    assert_eq!(only_doc(&found).bytes, xml());
}

#[test]
fn yahoo_x_zip_compressed_and_other_labels() {
    for label in [
        "application/x-zip-compressed",
        "application/octet-stream",
        "application/x-gzip",
        "application/xml",
        "text/xml",
    ] {
        let payload = if label.contains("zip") {
            zip(&[("r.xml", &xml())])
        } else if label.contains("gzip") || label.contains("octet") {
            gzip(&xml())
        } else {
            xml()
        };
        let mail = multipart(&[Part::attachment(label, "report", &payload)]);
        let (_, found) = collect(mail.as_bytes());
        assert_eq!(only_doc(&found).bytes, xml(), "{label}");
    }
}

#[test]
fn inline_disposition() {
    let mut part = Part::attachment("application/gzip", "r.xml.gz", &gzip(&xml()));
    part.disposition = Some("inline; filename=\"r.xml.gz\"".into());
    let mail = multipart(&[Part::text("text/plain", "Report attached."), part]);
    let (_, found) = collect(mail.as_bytes());
    assert_eq!(only_doc(&found).bytes, xml());
}

#[test]
fn report_inside_attached_message() {
    let inner = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(&xml()),
    )]);
    let outer = multipart(&[
        Part::text("text/plain", "Forwarded report."),
        attached_message(&inner),
    ]);
    let (ex, found) = collect(outer.as_bytes());
    let doc = only_doc(&found);
    assert_eq!(doc.bytes, xml());
    assert_eq!(
        doc.location,
        "part 2 \"forwarded.eml\" > part 1 \"r.xml.gz\""
    );
    assert_eq!(ex.report_to, "dmarc@example.com");
}

/// A `message/rfc822` part whose body is base64: mail-parser recurses into at most three such
/// levels and hands deeper ones over as bytes, which the walker parses itself.
fn encoded_message(mail: &str) -> Part {
    Part {
        content_type: "message/rfc822".into(),
        disposition: Some("attachment; filename=\"fwd.eml\"".into()),
        body: base64(mail.as_bytes(), 76, "\n"),
        transfer_encoding: Some("base64"),
    }
}

#[test]
fn report_inside_messages_nested_deeper_than_mail_parser_recurses() {
    let mut mail = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(&xml()),
    )]);
    for _ in 0..5 {
        mail = multipart(&[encoded_message(&mail)]);
    }
    let limits = Limits {
        max_nesting_depth: 16,
        ..Limits::default()
    };
    let (ex, found) = collect_with(mail.as_bytes(), &limits);
    assert_eq!(only_doc(&found).bytes, xml(), "{:?}", ex.skipped);
    assert_eq!(found[0].location.matches("\"fwd.eml\"").count(), 5);

    // Each wrapping adds a MIME level and a message level: the default limit stops it, by name.
    let (ex, found) = collect(mail.as_bytes());
    assert!(found.is_empty());
    assert!(
        matches!(&ex.skipped[..], [Skipped { reason: SkipReason::LimitExceeded { limit, .. }, .. }] if limit == "max_nesting_depth")
    );
}

#[test]
fn several_reports_in_one_mail() {
    let one = report_xml("a", 1).into_bytes();
    let two = report_xml("b", 2).into_bytes();
    let three = report_xml("c", 3).into_bytes();
    let mail = multipart(&[
        Part::attachment("application/gzip", "a.xml.gz", &gzip(&one)),
        Part::attachment(
            "application/zip",
            "b.zip",
            &zip(&[("b.xml", &two), ("c.XML", &three)]),
        ),
    ]);
    let (ex, found) = collect(mail.as_bytes());
    let bytes: Vec<&[u8]> = found.iter().map(|f| f.bytes.as_slice()).collect();
    assert_eq!(bytes, [&one[..], &two[..], &three[..]]);
    assert_eq!(found[2].location, "part 2 \"b.zip\" > member \"c.XML\"");
    assert!(ex.skipped.is_empty());
}

#[test]
fn base64_line_lengths_60_76_78() {
    for line in [60, 76, 78] {
        let mut part = Part::attachment("application/gzip", "r.xml.gz", &gzip(&xml()));
        part.body = base64(&gzip(&xml()), line, "\n");
        let mail = multipart(&[part]);
        let (_, found) = collect(mail.as_bytes());
        assert_eq!(only_doc(&found).bytes, xml(), "line length {line}");
    }
}

#[test]
fn crlf_and_lf_mails_give_the_same_documents() {
    let mail = multipart(&[
        Part::text("text/plain", "Report."),
        Part::attachment("application/zip", "r.zip", &zip(&[("r.xml", &xml())])),
    ]);
    let (lf_ex, lf) = collect(mail.as_bytes());
    let (crlf_ex, crlf_found) = collect(&crlf(&mail));
    assert_eq!(only_doc(&lf).bytes, xml());
    assert_eq!(only_doc(&crlf_found).bytes, xml());
    assert_eq!(lf[0].location, crlf_found[0].location);
    assert_eq!(lf_ex.skipped, crlf_ex.skipped);
}

#[test]
fn gzip_holding_the_word_unused() {
    let mail = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(b"unused"),
    )]);
    let (ex, found) = collect(mail.as_bytes());
    assert!(found.is_empty());
    assert_eq!(
        ex.skipped[0].reason,
        SkipReason::NotAReport {
            detail: "text \"unused\"".into()
        }
    );
}

#[test]
fn html_only_preview_mail_is_no_attachment() {
    let mail = multipart_of(
        "alternative",
        "dmarc@example.com",
        &[
            Part::text("text/plain", "[Preview] DMARC aggregate report"),
            Part::text(
                "text/html; charset=utf-8",
                "<html><body><p>DMARC feedback preview</p></body></html>",
            ),
        ],
    );
    let (ex, found) = collect(mail.as_bytes());
    assert!(found.is_empty());
    assert_eq!(codes(&ex), ["no_attachment"]);
    let (ex, _) = collect(&crlf(&single_part(&Part::text(
        "text/html",
        "<?xml version=\"1.0\"?><html><body>Preview</body></html>",
    ))));
    assert_eq!(codes(&ex), ["no_attachment"]);
}

#[test]
fn single_part_text_body_that_is_the_report() {
    let mail = single_part(&Part::text("text/xml", &report_xml("body", 1)));
    let (_, found) = collect(mail.as_bytes());
    assert_eq!(only_doc(&found).location, "body (text/xml)");
    assert_eq!(
        only_doc(&found).bytes.trim_ascii_end(),
        report_xml("body", 1).trim_end().as_bytes()
    );
}

#[test]
fn text_part_keeps_its_original_bytes_for_the_xml_declaration() {
    // windows-1252 XML in a text part without charset: mail-parser would turn 0xE9 into U+FFFD;
    // the parser must get the original byte and the declaration to decode it.
    let mut xml = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><feedback><report_metadata><org_name>Soci".to_vec();
    xml.push(0xE9);
    xml.extend_from_slice(b"t\xE9</org_name></report_metadata></feedback>");
    let mut mail = headers("dmarc@example.com").into_bytes();
    mail.extend_from_slice(b"Content-Type: text/xml\nContent-Transfer-Encoding: 8bit\n\n");
    mail.extend_from_slice(&xml);
    let (_, found) = collect(&mail);
    assert_eq!(only_doc(&found).bytes.trim_ascii_end(), &xml[..]);

    let quoted = single_part(&Part {
        content_type: "text/xml; charset=windows-1252".into(),
        disposition: None,
        body:
            "<?xml version=3D\"1.0\" encoding=3D\"windows-1252\"?><feedback>Soci=E9t=E9</feedback>"
                .into(),
        transfer_encoding: Some("quoted-printable"),
    });
    let (_, found) = collect(quoted.as_bytes());
    assert!(only_doc(&found).bytes.windows(6).any(|w| w == b"Soci\xE9t"));
}

#[test]
fn rfc2231_split_file_name() {
    let part = Part {
        content_type: "application/octet-stream;\n name*0=\"amazonses.com!example.com!1704067200\";\n name*1=\"!1704153600.xml.gz\"".into(),
        disposition: Some("attachment;\n filename*0=\"amazonses.com!example.com!1704067200\";\n filename*1=\"!1704153600.xml.gz\"".into()),
        body: base64(&gzip(&xml()), 76, "\n"),
        transfer_encoding: Some("base64"),
    };
    let mail = multipart(&[Part::text("text/plain", "Report."), part]);
    let (_, found) = collect(&crlf(&mail));
    assert_eq!(
        only_doc(&found).location,
        "part 2 \"amazonses.com!example.com!1704067200!1704153600.xml.gz\""
    );
}

#[test]
fn zip_inside_gzip_and_gzip_inside_zip() {
    let zip_in_gzip = gzip(&zip(&[("r.xml", &xml())]));
    let (_, found) = collect(&zip_in_gzip);
    assert_eq!(only_doc(&found).bytes, xml());
    assert_eq!(only_doc(&found).location, "file > member \"r.xml\"");

    let gzip_in_zip = zip(&[("r.xml.gz", &gzip(&gzip(&xml())))]);
    let (_, found) = collect(&gzip_in_zip);
    assert_eq!(only_doc(&found).bytes, xml());
}

#[test]
fn gzip_with_trailing_bytes_and_zlib_in_a_mail() {
    let mut trailing = gzip(&xml());
    trailing.extend_from_slice(b"\r\n\r\n");
    let mail = multipart(&[
        Part::attachment("application/gzip", "a.xml.gz", &trailing),
        Part::attachment("application/octet-stream", "b.zlib", &zlib(&xml())),
    ]);
    let (ex, found) = collect(mail.as_bytes());
    assert_eq!(found.len(), 2, "{:?}", ex.skipped);
    assert!(found.iter().all(|f| f.bytes == xml()));
}

#[test]
fn logo_and_pdf_attachments_are_named_not_reports() {
    let mail = multipart(&[
        Part::attachment("image/png", "logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        Part::attachment("application/pdf", "r.pdf", b"%PDF-1.4 fake"),
        Part::attachment("application/gzip", "r.xml.gz", &gzip(&xml())),
    ]);
    let (ex, found) = collect(mail.as_bytes());
    assert_eq!(found.len(), 1);
    assert_eq!(codes(&ex), ["not_a_report", "not_a_report"]);
    assert_eq!(ex.skipped[0].location, "part 1 \"logo.png\"");
    assert_eq!(
        ex.skipped[1].reason,
        SkipReason::NotAReport {
            detail: "text \"%PDF-1.4 fake\"".into()
        }
    );
}

#[test]
fn first_to_address_or_unknown() {
    let mail = multipart_of(
        "mixed",
        "\"DMARC\" <Reports@Example.com>, other@example.com",
        &[Part::attachment(
            "application/gzip",
            "r.xml.gz",
            &gzip(&xml()),
        )],
    );
    let (ex, _) = collect(mail.as_bytes());
    assert_eq!(ex.report_to, "Reports@Example.com");
    let no_to = mail.replace(
        "To: \"DMARC\" <Reports@Example.com>, other@example.com\n",
        "",
    );
    let (ex, found) = collect(no_to.as_bytes());
    assert_eq!(ex.report_to, "unknown");
    assert_eq!(found.len(), 1);
}

#[test]
fn bad_base64_is_named() {
    let mut part = Part::attachment("application/gzip", "r.xml.gz", &gzip(&xml()));
    part.body = "!!!! not base64 at all ####".into();
    let (ex, found) = collect(multipart(&[part]).as_bytes());
    assert!(found.is_empty());
    assert_eq!(codes(&ex), ["not_a_report"]);
}

#[test]
fn xml_text_body_of_an_attached_message_keeps_its_bytes() {
    let inner = single_part(&Part::text("text/xml", &report_xml("inner", 1)));
    let outer = multipart(&[Part::text("text/plain", "Fwd."), attached_message(&inner)]);
    let (_, found) = collect(&crlf(&outer));
    let doc = only_doc(&found);
    assert_eq!(doc.location, "part 2 \"forwarded.eml\" > body (text/xml)");
    let expected = report_xml("inner", 1).replace('\n', "\r\n");
    assert_eq!(
        String::from_utf8_lossy(&doc.bytes).trim_end(),
        expected.trim_end()
    );
}

#[test]
fn utf16_xml_attachment_is_a_document() {
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in report_xml("u16", 1).encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mail = multipart(&[Part::attachment(
        "application/gzip",
        "r.xml.gz",
        &gzip(&utf16),
    )]);
    let (_, found) = collect(mail.as_bytes());
    assert_eq!(only_doc(&found).bytes, utf16);
}
