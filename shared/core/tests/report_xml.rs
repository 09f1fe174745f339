//! parse_report against the XML quirks real reporters produce (see the "XML" and "Identity and
//! time" lists of how reports break parsers): one named test per quirk, on corpus files or small
//! crafted documents.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dmarc_tsv_core::model::{Record, ReportMeta, Schema};
use dmarc_tsv_core::report::{ReportError, ReportParse, parse_report};
use dmarc_tsv_core::{Limits, SkipReason};

struct Parsed {
    result: Result<ReportParse, ReportError>,
    rows: Vec<(ReportMeta, Record)>,
}

impl Parsed {
    fn ok(&self) -> &ReportParse {
        match &self.result {
            Ok(parse) => parse,
            Err(err) => panic!("expected a report, got {err}"),
        }
    }
    fn skip(&self) -> &SkipReason {
        match &self.result {
            Err(ReportError::Skip(reason)) => reason,
            Err(other) => panic!("expected a skip reason, got {other}"),
            Ok(parse) => panic!("expected no report, got {} records", parse.records),
        }
    }
    fn records(&self) -> Vec<&Record> {
        self.rows.iter().map(|(_, r)| r).collect()
    }
    fn meta(&self) -> &ReportMeta {
        &self.rows.first().expect("at least one record").0
    }
}

fn parse_with(bytes: &[u8], limits: &Limits) -> Parsed {
    let mut rows = Vec::new();
    let result = parse_report(bytes, limits, &mut |meta, record| {
        rows.push((meta.clone(), record.clone()));
        Ok(())
    });
    Parsed { result, rows }
}

fn parse(bytes: impl AsRef<[u8]>) -> Parsed {
    parse_with(bytes.as_ref(), &Limits::default())
}

fn corpus(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/corpus")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

const METADATA: &str = "<report_metadata><org_name>Example Org</org_name>\
    <email>dmarc@example.org</email><report_id>r-1</report_id>\
    <date_range><begin>1700000000</begin><end>1700086399</end></date_range></report_metadata>\
    <policy_published><domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>none</p>\
    <sp>none</sp><pct>100</pct></policy_published>";

const RECORD: &str = "<record><row><source_ip>192.0.2.1</source_ip><count>3</count>\
    <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>\
    </policy_evaluated></row><identifiers><header_from>example.com</header_from></identifiers>\
    <auth_results><dkim><domain>example.com</domain><selector>s1</selector><result>pass</result>\
    </dkim><spf><domain>example.com</domain><result>fail</result></spf></auth_results></record>";

fn report(records: &str) -> String {
    format!("<?xml version=\"1.0\"?><feedback>{METADATA}{records}</feedback>")
}

// ---- namespaces and schema ------------------------------------------------------------------

#[test]
fn plain_rfc7489_report_without_namespace() {
    let p = parse(report(RECORD));
    assert_eq!(p.ok().records, 1);
    let meta = p.meta();
    assert_eq!(meta.schema, Schema::Rfc7489);
    assert_eq!(meta.org_name, "Example Org");
    assert_eq!((meta.begin, meta.end), (1_700_000_000, 1_700_086_399));
    assert_eq!(meta.policy.pct.as_deref(), Some("100"));
    let r = p.records()[0];
    assert_eq!((r.source_ip.as_str(), r.count.as_str()), ("192.0.2.1", "3"));
    assert_eq!(r.dkim[0].selector, "s1");
    assert_eq!(r.spf[0].result, "fail");
}

#[test]
fn dmarc2_default_namespace_means_rfc9990_even_with_version_1() {
    // GMX: xmlns="urn:ietf:params:xml:ns:dmarc-2.0" with <version>1.0</version>.
    let p = parse(corpus(
        "dmarc-report-viewer/testdata/dmarc-reports/gmxnet.xml",
    ));
    assert!(p.ok().records >= 1);
    assert_eq!(p.meta().schema, Schema::Rfc9990);
    let p = parse(corpus(
        "dmarc-report-viewer/testdata/dmarc-reports/webde.xml",
    ));
    assert_eq!(p.meta().schema, Schema::Rfc9990);
}

#[test]
fn version_2_without_namespace_means_rfc9990() {
    let p = parse(corpus("mail-auth/resources/dmarc-feedback/001.xml"));
    assert_eq!(p.meta().schema, Schema::Rfc9990);
    let xml = report(RECORD).replace("<feedback>", "<feedback><version> 2.0 </version>");
    assert_eq!(parse(xml).meta().schema, Schema::Rfc9990);
}

#[test]
fn prefixed_elements_match_on_local_names() {
    // AOL-style ns1: prefixes, and a prefixed dmarc-2.0 namespace.
    let xml = "<ns1:feedback xmlns:ns1='urn:ietf:params:xml:ns:dmarc-2.0'>\
        <ns1:report_metadata><ns1:org_name>AOL</ns1:org_name><ns1:report_id>x</ns1:report_id>\
        <ns1:date_range><ns1:begin>1</ns1:begin><ns1:end>2</ns1:end></ns1:date_range>\
        </ns1:report_metadata><ns1:policy_published><ns1:domain>a.example</ns1:domain>\
        </ns1:policy_published><ns1:record><ns1:row><ns1:source_ip>192.0.2.9</ns1:source_ip>\
        <ns1:count>1</ns1:count></ns1:row></ns1:record></ns1:feedback>";
    let p = parse(xml);
    assert_eq!(p.ok().records, 1);
    assert_eq!(p.meta().org_name, "AOL");
    assert_eq!(p.meta().schema, Schema::Rfc9990);
    assert_eq!(p.records()[0].source_ip, "192.0.2.9");
}

#[test]
fn xsi_and_xsd_prefixed_attributes_are_ignored() {
    let p = parse(corpus(
        "dmarc-report-viewer/testdata/dmarc-reports/outlook.xml",
    ));
    assert_eq!(p.ok().records, 2);
    assert_eq!(p.meta().schema, Schema::Rfc7489);
}

#[test]
fn rfc9990_fields_extensions_and_lang_attributes() {
    let xml = r#"<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0" xmlns:x="urn:example:ext">
      <version>1.0</version>
      <report_metadata><org_name lang="en">Rep</org_name><report_id>id</report_id>
        <date_range><begin>302832000</begin><end>302918399</end></date_range>
        <generator>Gen 1.2</generator></report_metadata>
      <policy_published><domain>example.com</domain><p>Quarantine</p><sp>none</sp><np>REJECT</np>
        <testing>N</testing><discovery_method>TreeWalk</discovery_method></policy_published>
      <extension><x:thing><record><row><source_ip>6.6.6.6</source_ip></row></record></x:thing></extension>
      <record><row><source_ip>192.0.2.123</source_ip><count>123</count>
        <policy_evaluated><disposition>pass</disposition><dkim>pass</dkim><spf>fail</spf>
        <reason><type>policy_test_mode</type><comment lang="en">test</comment></reason>
        </policy_evaluated></row>
        <identifiers><envelope_from>example.com</envelope_from><header_from>example.com</header_from></identifiers>
        <auth_results><spf><domain>example.com</domain><scope>MFROM</scope><result>fail</result>
          <human_result lang="en">SPF said no</human_result></spf></auth_results>
        <x:extra><x:deep>ignored</x:deep></x:extra>
      </record></feedback>"#;
    let p = parse(xml);
    assert_eq!(
        p.ok().records,
        1,
        "the <record> inside <extension> is not a record"
    );
    let meta = p.meta();
    assert_eq!(meta.schema, Schema::Rfc9990);
    assert_eq!(meta.generator, "Gen 1.2");
    assert_eq!(
        meta.policy.pct, None,
        "RFC 9990 has no pct: the column stays empty"
    );
    assert_eq!(meta.policy.p, "quarantine");
    assert_eq!(meta.policy.np, "reject");
    assert_eq!(meta.policy.testing, "n");
    assert_eq!(meta.policy.discovery_method, "treewalk");
    let r = p.records()[0];
    assert_eq!(r.disposition, "pass");
    assert_eq!(r.reasons[0].kind, "policy_test_mode");
    assert_eq!(r.reasons[0].comment, "test");
    assert_eq!(r.spf[0].scope, "mfrom");
    assert_eq!(r.spf[0].human_result, "SPF said no");
    assert!(r.dkim.is_empty());
}

#[test]
fn google_np_in_unnamespaced_report() {
    let p = parse(corpus(
        "dmarc-report-viewer/testdata/dmarc-reports/google.xml",
    ));
    assert_eq!(p.meta().schema, Schema::Rfc7489);
    assert!(!p.meta().policy.np.is_empty());
}

// ---- encodings and bytes --------------------------------------------------------------------

#[test]
fn utf8_bom_is_skipped() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(report(RECORD).as_bytes());
    assert_eq!(parse(bytes).ok().records, 1);
}

#[test]
fn windows_1252_declared_encoding_is_transcoded() {
    let xml = report(RECORD).replace("Example Org", "Soci\u{e9}t\u{e9} \u{20ac}");
    let xml = xml.replace(
        "<?xml version=\"1.0\"?>",
        "<?xml version=\"1.0\" encoding=\"windows-1252\"?>",
    );
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&xml);
    assert!(
        bytes.contains(&0xE9) && bytes.contains(&0x80),
        "really single-byte"
    );
    assert_eq!(parse(&bytes).meta().org_name, "Soci\u{e9}t\u{e9} \u{20ac}");
    // The AOL corpus file declares windows-1252.
    let p = parse(corpus("dmarc_aggregate_parser/sample-data/dmarc.xml"));
    assert_eq!(p.ok().records, 1);
}

#[test]
fn iso_8859_1_single_quoted_declaration() {
    let xml = report(RECORD)
        .replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version='1.0' encoding='ISO-8859-1'?>",
        )
        .replace("Example Org", "M\u{fc}ller");
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&xml);
    assert_eq!(parse(&bytes).meta().org_name, "M\u{fc}ller");
}

#[test]
fn utf16_with_bom_is_transcoded() {
    let xml = report(RECORD).replace("Example Org", "\u{65e5}\u{672c}");
    let mut bytes = vec![0xFF, 0xFE];
    for unit in xml.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    assert_eq!(parse(&bytes).meta().org_name, "\u{65e5}\u{672c}");
}

#[test]
fn invalid_utf8_bytes_become_replacement_characters() {
    let p = parse(corpus("parsedmarc/samples/aggregate/invalid_utf_8.xml"));
    assert_eq!(p.ok().records, 1);
    assert_eq!(p.records()[0].header_from, "bad_byte\u{fffd}");
}

#[test]
fn bel_and_other_forbidden_controls_are_removed() {
    let rec = RECORD.replace(
        "<policy_evaluated>",
        "<policy_evaluated><reason><type>local_policy</type><comment>ring\x07 the\x01 bell</comment></reason>",
    );
    let p = parse(report(&rec));
    assert_eq!(p.records()[0].reasons[0].comment, "ring the bell");
    // Also as a character reference.
    let rec = RECORD.replace("192.0.2.1", "192.0.2.1&#7;");
    assert_eq!(parse(report(&rec)).records()[0].source_ip, "192.0.2.1");
}

#[test]
fn everything_on_one_line_and_no_declaration() {
    let xml = report(RECORD).replace("<?xml version=\"1.0\"?>", "");
    assert!(!xml.contains('\n'));
    assert_eq!(parse(xml).ok().records, 1);
}

#[test]
fn trailing_tabs_are_trimmed_from_values() {
    // Yahoo ends every line with tabs.
    let p = parse(corpus(
        "dmarc-report-viewer/testdata/dmarc-reports/yahoo.xml",
    ));
    let meta = p.meta();
    assert_eq!(meta.org_name, meta.org_name.trim());
    assert!(!meta.org_name.is_empty());
    let xml = report(&RECORD.replace("192.0.2.1", "\t 192.0.2.1\t\t\t"));
    assert_eq!(parse(xml).records()[0].source_ip, "192.0.2.1");
}

#[test]
fn crlf_and_lf_line_endings_give_identical_records() {
    let lf = corpus("trollbyte-dmarc/backend/samples/yahoo-report.xml");
    let text = String::from_utf8(lf.clone()).unwrap().replace("\r\n", "\n");
    let crlf = text.replace('\n', "\r\n");
    let a = parse(text.as_bytes());
    let b = parse(crlf.as_bytes());
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.ok().records, 3);
}

#[test]
fn stray_quotes_in_values_are_kept() {
    let xml = report(RECORD).replace("Example Org", "\"Example\" Org's");
    assert_eq!(parse(xml).meta().org_name, "\"Example\" Org's");
}

#[test]
fn cdata_and_predefined_entities_are_text() {
    let xml = report(RECORD).replace("Example Org", "<![CDATA[A<B]]> &amp; &#x43;&#68; &lt;x&gt;");
    assert_eq!(parse(xml).meta().org_name, "A<B & CD <x>");
}

#[test]
fn whitespace_inside_values_is_kept_between_entities_comments_and_cdata() {
    // quick-xml skips whitespace-only text; inside a value the parser puts it back.
    let cases = [
        ("Smith &amp; Sons", "Smith & Sons"),
        ("&amp; &amp;\t&amp;", "& &\t&"),
        ("a <!--c--> <!--d--> b", "a   b"),
        ("a<!--c--> <![CDATA[b]]>", "a b"),
        ("<![CDATA[x]]> \n <![CDATA[y]]>", "x \n y"),
        ("  &#65; B  ", "A B"),
        ("x <?pi data?> y", "x  y"),
    ];
    for (raw, expected) in cases {
        let xml = report(RECORD).replace("Example Org", raw);
        assert_eq!(parse(xml).meta().org_name, expected, "{raw:?}");
    }
}

// ---- structure ------------------------------------------------------------------------------

#[test]
fn xs_schema_wrapper_before_feedback_is_skipped() {
    // ikea.com: an unclosed <xs:schema> around the report; nothing after </feedback> is read.
    let p = parse(corpus(
        "parsedmarc/samples/aggregate/ikea.com!example.de!1538690400!1538776800.xml",
    ));
    assert_eq!(p.ok().records, 1);
    assert!(p.ok().problems.is_empty(), "{:?}", p.ok().problems);
    assert_eq!(p.meta().org_name, "ikea.com");
    assert_eq!(p.records()[0].spf[0].scope, "helo");
}

#[test]
fn other_root_is_not_dmarc_xml() {
    let p = parse(corpus("dmarc_report_reader/tests/fixtures/non-dmarc.xml"));
    assert!(
        matches!(p.skip(), SkipReason::NotDmarcXml { .. }),
        "{:?}",
        p.skip()
    );
    let p = parse(corpus(
        "trollbyte-dmarc/backend/sample_reports/malformed_report.xml",
    ));
    assert!(
        matches!(p.skip(), SkipReason::NotDmarcXml { .. }),
        "{:?}",
        p.skip()
    );
}

#[test]
fn json_empty_and_binary_are_not_reports() {
    let p = parse(corpus("parsedmarc/samples/smtp_tls/rfc8460.json"));
    assert!(
        matches!(p.skip(), SkipReason::NotAReport { .. }),
        "{:?}",
        p.skip()
    );
    let p = parse(b"");
    assert!(matches!(p.skip(), SkipReason::NotAReport { detail } if detail.contains("empty")));
    let p = parse(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR<<<\xff\xfe>");
    assert!(
        matches!(
            p.skip(),
            SkipReason::NotAReport { .. } | SkipReason::NotDmarcXml { .. }
        ),
        "{:?}",
        p.skip()
    );
    assert!(p.rows.is_empty());
}

#[test]
fn unknown_elements_are_skipped() {
    let rec = RECORD.replace(
        "<row>",
        "<row><mystery><source_ip>6.6.6.6</source_ip></mystery>",
    );
    let p = parse(report(&rec).replace("<feedback>", "<feedback><junk a='1'>x</junk>"));
    assert_eq!(p.records()[0].source_ip, "192.0.2.1");
}

#[test]
fn several_dkim_spf_and_reasons_are_all_kept_in_order() {
    let p = parse(corpus(
        "trollbyte-dmarc/backend/tests/fixtures/multiple_auth_results.xml",
    ));
    let r = p.records()[0];
    assert!(r.dkim.len() >= 2 && r.spf.len() >= 2, "{r:?}");
    let xml = report(
        &RECORD
            .replace(
                "</auth_results>",
                "<dkim><domain>second.example</domain><result>FAIL</result></dkim></auth_results>",
            )
            .replace(
                "</policy_evaluated>",
                "<reason><type>forwarded</type></reason><reason><type></type><comment>c2</comment></reason></policy_evaluated>",
            ),
    );
    let p = parse(xml);
    let r = p.records()[0];
    let domains: Vec<&str> = r.dkim.iter().map(|d| d.domain.as_str()).collect();
    assert_eq!(domains, ["example.com", "second.example"]);
    assert_eq!(r.dkim[1].result, "fail");
    assert_eq!(r.reasons.len(), 2);
    assert_eq!(
        (r.reasons[1].kind.as_str(), r.reasons[1].comment.as_str()),
        ("", "c2")
    );
}

#[test]
fn upper_case_enum_values_are_lower_cased_free_text_is_not() {
    let p = parse(corpus(
        "parsedmarc/samples/aggregate_invalid/report_with_upper_cased_pass.xml",
    ));
    let r = p.records()[0];
    assert_eq!(r.policy_dkim, r.policy_dkim.to_lowercase());
    assert_eq!(p.meta().org_name, p.meta().org_name.trim());
    let rec = RECORD
        .replace("<disposition>none", "<disposition>Quarantine")
        .replace("<result>pass</result>", "<result>HardFail</result>")
        .replace("<selector>s1</selector>", "<selector>S1</selector>");
    let p = parse(report(&rec));
    let r = p.records()[0];
    assert_eq!(r.disposition, "quarantine");
    assert_eq!(r.dkim[0].result, "hardfail", "non-standard words are kept");
    assert_eq!(r.dkim[0].selector, "S1", "selectors are free text");
}

#[test]
fn missing_pieces_give_empty_values() {
    // No source_ip (GoDaddy), no spf (AOL 2012), no dkim, no envelope_from (Fastmail),
    // empty DKIM domain and selector (Microsoft).
    let rec = "<record><row><count>1</count><policy_evaluated><disposition>none</disposition>\
        </policy_evaluated></row><identifiers><header_from>example.com</header_from></identifiers>\
        <auth_results><dkim><domain></domain><selector/><result>none</result></dkim></auth_results></record>";
    let p = parse(report(rec).replace("<org_name>Example Org</org_name>", "<org_name></org_name>"));
    let r = p.records()[0];
    assert_eq!(r.source_ip, "");
    assert_eq!(r.envelope_from, "");
    assert!(r.spf.is_empty());
    assert_eq!(
        (r.dkim[0].domain.as_str(), r.dkim[0].selector.as_str()),
        ("", "")
    );
    assert_eq!(p.meta().org_name, "");
    let p = parse(corpus(
        "parsedmarc/samples/aggregate/!example.com!1538204542!1538463818.xml",
    ));
    assert_eq!(p.meta().org_name, "");
}

#[test]
fn non_numeric_count_is_kept_as_text() {
    let p = parse(report(
        &RECORD.replace("<count>3</count>", "<count>many</count>"),
    ));
    assert_eq!(p.records()[0].count, "many");
}

#[test]
fn records_before_metadata_are_buffered_until_it_is_complete() {
    let xml = format!("<feedback>{RECORD}{RECORD}{METADATA}</feedback>");
    let p = parse(xml);
    assert_eq!(p.ok().records, 2);
    assert!(
        p.rows
            .iter()
            .all(|(m, _)| m.report_id == "r-1" && m.policy.domain == "example.com")
    );
}

#[test]
fn record_without_row_is_unreadable_others_still_yield() {
    let bad = "<record><identifiers><header_from>x</header_from></identifiers></record>";
    let p = parse(report(&format!("{RECORD}{bad}{RECORD}")));
    let parse = p.ok();
    assert_eq!(parse.records, 2);
    assert!(matches!(
        parse.problems.as_slice(),
        [s] if matches!(s.reason, SkipReason::RecordUnreadable { index: 2, .. })
    ));
}

// ---- broken documents -----------------------------------------------------------------------

#[test]
fn truncated_after_records_keeps_them_and_reports_the_tail() {
    let full = report(&format!("{RECORD}{RECORD}{RECORD}"));
    let cut = &full[..full.len() - 60];
    let p = parse(cut);
    let parse = p.ok();
    assert_eq!(parse.records, 2);
    assert!(
        matches!(&parse.problems[..], [s] if matches!(s.reason, SkipReason::MalformedXml { records_read: 2, .. })),
        "{:?}",
        parse.problems
    );
}

#[test]
fn mismatched_tag_mid_way_keeps_records_before_it() {
    let xml = report(&format!("{RECORD}{}", RECORD.replace("</row>", "</rowx>")));
    let p = parse(xml);
    assert_eq!(p.ok().records, 1);
    assert!(matches!(
        p.ok().problems[0].reason,
        SkipReason::MalformedXml {
            records_read: 1,
            ..
        }
    ));
}

#[test]
fn malformed_before_any_record_is_an_error() {
    for path in [
        "dmarc_report_reader/tests/fixtures/malformed.xml",
        "trollbyte-dmarc/backend/tests/fixtures/malformed.xml",
        "parsedmarc/samples/aggregate/invalid_xml.xml",
    ] {
        let p = parse(corpus(path));
        assert!(
            matches!(
                p.skip(),
                SkipReason::MalformedXml {
                    records_read: 0,
                    ..
                } | SkipReason::ReportUnusable { .. }
            ),
            "{path}: {:?}",
            p.skip()
        );
        assert!(p.rows.is_empty());
    }
}

// ---- entities -------------------------------------------------------------------------------

#[test]
fn billion_laughs_is_harmless() {
    let mut dtd = String::from("<!DOCTYPE feedback [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    let xml = report(RECORD)
        .replace(
            "<?xml version=\"1.0\"?>",
            &format!("<?xml version=\"1.0\"?>{dtd}"),
        )
        .replace("Example Org", "&lol9;");
    let started = Instant::now();
    let p = parse(xml);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        p.meta().org_name,
        "&lol9;",
        "undefined/custom entities are kept literally"
    );
}

#[test]
fn external_entities_are_never_read() {
    let xml = report(RECORD)
        .replace(
            "<?xml version=\"1.0\"?>",
            "<?xml version=\"1.0\"?><!DOCTYPE feedback [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>",
        )
        .replace("Example Org", "&xxe;");
    assert_eq!(parse(xml).meta().org_name, "&xxe;");
}

#[test]
fn dangling_ampersand_is_kept() {
    let xml = report(RECORD).replace("Example Org", "AT&T Mail");
    assert_eq!(parse(xml).meta().org_name, "AT&T Mail");
}

// ---- identity and time ----------------------------------------------------------------------

#[test]
fn float_or_garbage_date_range_makes_the_report_unusable() {
    for bad in ["1.5e9", "yesterday", ""] {
        let xml = report(RECORD).replace(
            "<begin>1700000000</begin>",
            &format!("<begin>{bad}</begin>"),
        );
        let p = parse(xml);
        assert!(
            matches!(p.skip(), SkipReason::ReportUnusable { detail } if detail.contains("begin")),
            "{bad}: {:?}",
            p.skip()
        );
        assert!(p.rows.is_empty());
    }
}

#[test]
fn missing_date_range_makes_the_report_unusable() {
    let xml = report(RECORD).replace(
        "<date_range><begin>1700000000</begin><end>1700086399</end></date_range>",
        "",
    );
    assert!(matches!(
        parse(xml).skip(),
        SkipReason::ReportUnusable { .. }
    ));
}

#[test]
fn missing_report_id_with_a_date_range_is_usable() {
    let xml = report(RECORD).replace("<report_id>r-1</report_id>", "");
    let p = parse(xml);
    assert_eq!(p.ok().records, 1);
    assert_eq!(p.meta().report_id, "");
}

#[test]
fn date_range_is_trimmed_and_kept_as_utc_seconds() {
    let xml = report(RECORD).replace(
        "<begin>1700000000</begin>",
        "<begin>\t 1700000000 \n</begin>",
    );
    let meta = parse(xml).meta().clone();
    assert_eq!(meta.begin, 1_700_000_000);
    assert_eq!(
        dmarc_tsv_core::model::utc_datetime(meta.end),
        "2023-11-15 22:13:19"
    );
}

// ---- limits ---------------------------------------------------------------------------------

#[test]
fn element_depth_is_bounded() {
    let deep = format!("{}{}", "<x>".repeat(100), "</x>".repeat(100));
    let p = parse(report(RECORD).replace("</feedback>", &format!("{deep}</feedback>")));
    let parse = p.ok();
    assert_eq!(parse.records, 1);
    assert!(
        matches!(&parse.problems[0].reason, SkipReason::LimitExceeded { limit, .. } if limit == "max_xml_depth")
    );
    let p = parse_with(
        format!("<feedback>{deep}</feedback>").as_bytes(),
        &Limits::default(),
    );
    assert!(matches!(p.skip(), SkipReason::LimitExceeded { .. }));
}

#[test]
fn long_values_are_truncated_and_reported() {
    let limits = Limits {
        max_field_bytes: 10,
        ..Limits::default()
    };
    let xml = report(&RECORD.replace(
        "example.com</header_from>",
        "a-very-long-header-from.example</header_from>",
    ));
    let p = parse_with(xml.as_bytes(), &limits);
    assert_eq!(p.records()[0].header_from, "a-very-lon");
    assert!(p.ok().problems.iter().any(|s| matches!(
        &s.reason,
        SkipReason::LimitExceeded { limit, max: 10, .. } if limit == "max_field_bytes"
    )));
}

#[test]
fn records_per_report_are_bounded() {
    let limits = Limits {
        max_records_per_report: 2,
        ..Limits::default()
    };
    let p = parse_with(report(&RECORD.repeat(5)).as_bytes(), &limits);
    assert_eq!(p.ok().records, 2);
    assert!(
        matches!(&p.ok().problems[0].reason, SkipReason::LimitExceeded { limit, .. } if limit == "max_records_per_report")
    );
}

#[test]
fn sink_error_stops_parsing() {
    let xml = report(&RECORD.repeat(3));
    let mut calls = 0;
    let result = parse_report(xml.as_bytes(), &Limits::default(), &mut |_, _| {
        calls += 1;
        Err(io::Error::other("disk full"))
    });
    assert!(matches!(result, Err(ReportError::Sink(_))));
    assert_eq!(calls, 1);
}

#[test]
fn dtd_with_markup_inside_entity_values_and_comments_is_skipped() {
    let dtd = "<!DOCTYPE feedback [\n<!-- a comment with > and ] -->\n\
        <!ENTITY gt2 \"a > b ]\">\n<!ENTITY % pe SYSTEM \"http://attacker.example/x.dtd\">\n%pe;\n]>";
    let xml = report(RECORD)
        .replace(
            "<?xml version=\"1.0\"?>",
            &format!("<?xml version=\"1.0\"?>{dtd}"),
        )
        .replace("Example Org", "&gt2;");
    let p = parse(xml);
    assert_eq!(p.ok().records, 1);
    assert_eq!(p.meta().org_name, "&gt2;");
}

#[test]
fn records_buffered_before_metadata_are_bounded_in_bytes() {
    // Records with large values before any metadata: buffering stops at a byte bound.
    let limits = Limits {
        max_field_bytes: 1 << 20,
        ..Limits::default()
    };
    let big = "x".repeat(1 << 20);
    let rec = RECORD.replace("<header_from>example.com", &format!("<header_from>{big}"));
    let xml = format!("<feedback>{}{METADATA}</feedback>", rec.repeat(40));
    let p = parse_with(xml.as_bytes(), &limits);
    assert!(
        matches!(p.skip(), SkipReason::LimitExceeded { limit, .. } if limit == "max_buffered_bytes"),
        "{:?}",
        p.skip()
    );
}

#[test]
fn absurdly_long_element_names_are_refused() {
    let name = "n".repeat(5000);
    let xml = format!("<feedback><{name}>x</{name}></feedback>");
    assert!(matches!(
        parse(xml).skip(),
        SkipReason::LimitExceeded { limit, .. } if limit == "max_element_name_bytes"
    ));
}

fn identity_of(xml: &str) -> dmarc_tsv_core::ReportIdentity {
    let meta = parse(xml).meta().clone();
    dmarc_tsv_core::ReportIdentity {
        org_name: meta.org_name,
        report_id: meta.report_id,
        policy_domain: meta.policy.domain,
        begin: meta.begin,
        end: meta.end,
    }
}

#[test]
fn same_report_id_on_consecutive_days_is_a_different_report() {
    // Google and Mimecast reuse one report_id for consecutive days.
    let day1 = report(RECORD);
    let day2 = day1
        .replace("<begin>1700000000</begin>", "<begin>1700086400</begin>")
        .replace("<end>1700086399</end>", "<end>1700172799</end>");
    assert_ne!(identity_of(&day1).digest(), identity_of(&day2).digest());
    assert_eq!(identity_of(&day2).partition(), "2023-11-15");
    // The same report re-sent with different case/whitespace in names is the same report.
    let resent = day1.replace("Example Org", " example org ").replace(
        "<domain>example.com</domain><adkim>",
        "<domain>EXAMPLE.COM</domain><adkim>",
    );
    assert_eq!(identity_of(&day1).digest(), identity_of(&resent).digest());
}

#[test]
fn end_at_next_midnight_is_kept_as_given() {
    let xml = report(RECORD).replace("<end>1700086399</end>", "<end>1700092800</end>");
    let meta = parse(xml).meta().clone();
    assert_eq!(
        dmarc_tsv_core::model::utc_datetime(meta.end),
        "2023-11-16 00:00:00"
    );
}
