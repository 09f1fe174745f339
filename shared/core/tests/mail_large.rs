//! A 100,000-record report (~64 MB of XML), gzipped inside a mail, parses as a stream: the peak
//! resident memory of this test process stays well under the size of the XML. Alone in its own
//! test binary so that no other test's allocations count in the process peak.

mod mail_support;

use std::io::{self, Write};

use dmarc_tsv_core::{ParseOptions, ReportSink, RowView, parse_mail};
use flate2::Compression;
use flate2::write::GzEncoder;
use mail_support::{Part, multipart};

const RECORDS: usize = 100_000;
const MIB: u64 = 1024 * 1024;

/// Peak resident set size of this process so far (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM line")
}

/// Gzipped XML written record by record: the XML itself never exists whole in memory.
fn big_report_gzip() -> (Vec<u8>, u64) {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    let mut xml_len = 0u64;
    let mut put = |gz: &mut GzEncoder<Vec<u8>>, s: &str| {
        xml_len += s.len() as u64;
        gz.write_all(s.as_bytes()).expect("mem");
    };
    put(
        &mut gz,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback><report_metadata>\
         <org_name>big.example</org_name><email>noreply@big.example</email>\
         <report_id>big-1</report_id><date_range><begin>1704067200</begin><end>1704153599</end>\
         </date_range></report_metadata><policy_published><domain>example.com</domain>\
         <adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct>\
         </policy_published>\n",
    );
    for i in 0..RECORDS {
        let record = format!(
            "  <record>\n    <row>\n      <source_ip>10.{}.{}.{}</source_ip>\n      \
             <count>{}</count>\n      <policy_evaluated>\n        <disposition>none</disposition>\n        \
             <dkim>pass</dkim>\n        <spf>pass</spf>\n      </policy_evaluated>\n    </row>\n    \
             <identifiers>\n      <header_from>example.com</header_from>\n      \
             <envelope_from>bounce{i}.example.com</envelope_from>\n    </identifiers>\n    \
             <auth_results>\n      <dkim>\n        <domain>example.com</domain>\n        \
             <selector>s{}</selector>\n        <result>pass</result>\n      </dkim>\n      \
             <spf>\n        <domain>bounce{i}.example.com</domain>\n        <result>pass</result>\n      \
             </spf>\n    </auth_results>\n  </record>\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            i % 97 + 1,
            i % 7
        );
        put(&mut gz, &record);
    }
    put(&mut gz, "</feedback>\n");
    (gz.finish().expect("mem"), xml_len)
}

struct Count(u64);

impl ReportSink for Count {
    fn row(&mut self, _row: &RowView<'_>) -> io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

#[test]
fn hundred_thousand_record_report_streams_in_bounded_memory() {
    let (gz, xml_len) = big_report_gzip();
    assert!(xml_len > 60 * MIB, "XML is {xml_len} bytes");
    let mail = multipart(&[
        Part::text("text/plain", "A large report."),
        Part::attachment("application/gzip", "big.xml.gz", &gz),
    ]);
    drop(gz);
    let before = peak_rss();
    let started = std::time::Instant::now();
    let mut sink = Count(0);
    let outcome = parse_mail(mail.as_bytes(), "big", &ParseOptions::default(), &mut sink)
        .expect("sink never fails");
    let elapsed = started.elapsed();
    let after = peak_rss();
    assert_eq!(outcome.rows(), RECORDS as u64, "{:?}", outcome.skipped);
    assert_eq!(sink.0, RECORDS as u64);
    println!(
        "xml {xml_len} bytes, mail {} bytes, parsed in {elapsed:?}, \
         peak RSS before parse {} MiB, after {} MiB",
        mail.len(),
        before / MIB,
        after / MIB
    );
    // The whole process (test harness, mail bytes, decoded attachment) stays well under the
    // 64 MiB budget; measured: 17 MiB.
    assert!(after < 40 * MIB, "peak RSS {after} bytes");
}
