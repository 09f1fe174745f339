//! Volume from real reports: many SES-style mails rotating over the corpus templates as zip,
//! gzip and plain XML attachments (each with a unique report id and a date in a chosen span), and
//! one very large report built by repeating real records.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use zip::write::SimpleFileOptions;

use crate::corpus::Template;
use crate::mime::{MailSpec, build_mail};
use crate::xml_edit::replace_element_text;

/// 2026-11-01 00:00:00 UTC: generated reports start on this day.
pub const DEFAULT_FIRST_DAY: i64 = 1_793_491_200;
const DAY: i64 = 86_400;
const RECIPIENT: &str = "dmarc@reports.example.com";

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("writing an attachment: {0}")]
    Io(#[from] io::Error),
    #[error("writing a zip attachment: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("template {0}: {1}")]
    Template(String, &'static str),
}

/// How a report travels in the mail (the three forms reporters use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    Zip,
    Gzip,
    Xml,
}

impl Container {
    pub const ALL: [Container; 3] = [Container::Zip, Container::Gzip, Container::Xml];

    fn content_type(self) -> &'static str {
        match self {
            Container::Zip => "application/zip",
            Container::Gzip => "application/gzip",
            Container::Xml => "text/xml",
        }
    }
    fn extension(self) -> &'static str {
        match self {
            Container::Zip => "zip",
            Container::Gzip => "xml.gz",
            Container::Xml => "xml",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct VolumeOptions {
    /// Reports are spread evenly over this many days (one output partition each).
    pub days: u32,
    pub first_day: i64,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions {
            days: 7,
            first_day: DEFAULT_FIRST_DAY,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GeneratedMail {
    /// A file name for the mail (`mail-0000042.eml`).
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub container: Container,
    /// The decompressed report size, for MB/s figures.
    pub xml_bytes: usize,
}

/// Deterministic: mail `i` is always the same bytes for the same templates and options.
pub struct Generator<'a> {
    templates: &'a [Template],
    options: VolumeOptions,
}

impl<'a> Generator<'a> {
    /// `templates` must not be empty (see [`crate::corpus::load_templates`]).
    pub fn new(templates: &'a [Template], options: VolumeOptions) -> Self {
        Generator { templates, options }
    }

    /// Mail `index`: template `index % n`; the container rotates once per pass over the
    /// templates, so every report is seen zipped, gzipped and plain.
    pub fn mail(&self, index: usize) -> Result<GeneratedMail, GenError> {
        let count = self.templates.len().max(1);
        let template = self
            .templates
            .get(index % count)
            .ok_or(GenError::Template(String::new(), "no templates"))?;
        let container = Container::ALL[(index / count) % Container::ALL.len()];
        let day = (index as i64) % i64::from(self.options.days.max(1));
        let begin = self.options.first_day + day * DAY;
        let report_id = format!("{}.bench{index:07}", template.report_id);
        let xml = rewrite_report(template, &report_id, begin, begin + DAY - 1)?;
        let org = file_name_safe(&template.org_name);
        let domain = file_name_safe(&template.policy_domain);
        let filename = format!(
            "{org}!{domain}!{begin}!{}.{}",
            begin + DAY - 1,
            container.extension()
        );
        let attachment = pack(container, &filename, &xml)?;
        let subject = format!(
            "Report Domain: {} Submitter: {} Report-ID: <{report_id}>",
            template.policy_domain, template.org_name
        );
        let sender_domain = if org.contains('.') {
            org.clone()
        } else {
            format!("{org}.example")
        };
        let from = format!("noreply-dmarc-support@{sender_domain}");
        let message_id = format!("bench{index:07}");
        let bytes = build_mail(&MailSpec {
            from: &from,
            to: RECIPIENT,
            subject: &subject,
            date: begin + DAY + 3600,
            message_id: &message_id,
            content_type: container.content_type(),
            filename: &filename,
            attachment: &attachment,
        });
        Ok(GeneratedMail {
            file_name: format!("mail-{index:07}.eml"),
            bytes,
            container,
            xml_bytes: xml.len(),
        })
    }
}

/// The template with a new report id and date range; everything else byte for byte.
fn rewrite_report(
    template: &Template,
    report_id: &str,
    begin: i64,
    end: i64,
) -> Result<Vec<u8>, GenError> {
    let missing = |what| GenError::Template(template.name.clone(), what);
    let xml = replace_element_text(&template.xml, "report_id", report_id)
        .ok_or_else(|| missing("no report_id"))?;
    let xml = replace_element_text(&xml, "begin", &begin.to_string())
        .ok_or_else(|| missing("no begin"))?;
    replace_element_text(&xml, "end", &end.to_string()).ok_or_else(|| missing("no end"))
}

/// Org names like `"backschues.NET` or `Yahoo! Inc.` made usable in a file name and an address.
fn file_name_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            ' ' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    if safe.is_empty() {
        "reporter.example".into()
    } else {
        safe
    }
}

/// Deterministic gzip (no mtime, no name) of `data`.
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

fn pack(container: Container, filename: &str, xml: &[u8]) -> Result<Vec<u8>, GenError> {
    match container {
        Container::Xml => Ok(xml.to_vec()),
        Container::Gzip => Ok(gzip(xml)?),
        Container::Zip => {
            let member = filename.trim_end_matches(".zip").to_string() + ".xml";
            let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
            let options =
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            zip.start_file(member, options)?;
            zip.write_all(xml)?;
            Ok(zip.finish()?.into_inner())
        }
    }
}

/// Byte ranges of the `<record>…</record>` blocks (unprefixed tags) of a report.
fn record_blocks(xml: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(start) = find(&xml[pos..], b"<record>").map(|i| pos + i) {
        let Some(end) = find(&xml[start..], b"</record>").map(|i| start + i + b"</record>".len())
        else {
            break;
        };
        blocks.push(start..end);
        pos = end;
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The template with the most records: the best base for a large report.
pub fn richest_template(templates: &[Template]) -> Option<&Template> {
    templates.iter().max_by_key(|t| record_blocks(&t.xml).len())
}

/// One report of `records` records: the template's metadata, then its real records repeated,
/// each with a distinct source IP from 198.18.0.0/15 (the benchmarking range, RFC 2544).
pub fn big_report_xml(template: &Template, records: usize) -> Result<Vec<u8>, GenError> {
    let blocks = record_blocks(&template.xml);
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return Err(GenError::Template(template.name.clone(), "no <record>"));
    };
    let head = &template.xml[..first.start];
    let tail = &template.xml[last.end..];
    let average = (last.end - first.start) / blocks.len();
    let mut xml = Vec::with_capacity(head.len() + tail.len() + average * records + records);
    let head = replace_element_text(head, "report_id", &format!("big-{records}"))
        .unwrap_or_else(|| head.to_vec());
    xml.extend_from_slice(&head);
    for i in 0..records {
        let block = &template.xml[blocks[i % blocks.len()].clone()];
        let record = replace_element_text(block, "source_ip", &benchmark_ip(i))
            .unwrap_or_else(|| block.to_vec());
        let count = 1 + (i as u64).wrapping_mul(2_654_435_761) % 997;
        let record = replace_element_text(&record, "count", &count.to_string()).unwrap_or(record);
        xml.extend_from_slice(&record);
        xml.extend_from_slice(b"\n  ");
    }
    xml.extend_from_slice(tail);
    Ok(xml)
}

/// A distinct address of 198.18.0.0/15 for each of the first 2^17 indexes, in scrambled order
/// (multiplying by an odd number is a bijection modulo 2^17) so the XML compresses like real
/// reports do rather than like a counter.
fn benchmark_ip(i: usize) -> String {
    let n = (i as u32).wrapping_mul(40_503) & 0x1_FFFF;
    format!("198.{}.{}.{}", 18 + (n >> 16), (n >> 8) & 255, n & 255)
}

/// The large report, gzipped, in one SES-style mail.
pub fn big_report_mail(template: &Template, records: usize) -> Result<GeneratedMail, GenError> {
    let xml = big_report_xml(template, records)?;
    let filename = format!(
        "{}!{}!big!{records}.xml.gz",
        file_name_safe(&template.org_name),
        file_name_safe(&template.policy_domain)
    );
    let attachment = gzip(&xml)?;
    let bytes = build_mail(&MailSpec {
        from: "noreply-dmarc-support@reporter.example",
        to: RECIPIENT,
        subject: &format!("Report Domain: {} big report", template.policy_domain),
        date: DEFAULT_FIRST_DAY,
        message_id: "bench-big",
        content_type: Container::Gzip.content_type(),
        filename: &filename,
        attachment: &attachment,
    });
    Ok(GeneratedMail {
        file_name: format!("big-{records}.eml"),
        bytes,
        container: Container::Gzip,
        xml_bytes: xml.len(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Read;

    use mail_parser::{MessageParser, MimeHeaders};

    use super::*;
    use crate::corpus::{default_corpus_dir, load_templates};
    use crate::xml_edit::element_text;

    fn attachment_xml(mail: &[u8]) -> Vec<u8> {
        let message = MessageParser::default().parse(mail).expect("parsable mail");
        let part = message.attachment(0).expect("one attachment");
        let name = part.attachment_name().expect("file name").to_string();
        let body = part.contents().to_vec();
        if name.ends_with(".zip") {
            let mut archive = zip::ZipArchive::new(io::Cursor::new(body)).unwrap();
            let mut out = Vec::new();
            archive.by_index(0).unwrap().read_to_end(&mut out).unwrap();
            out
        } else if name.ends_with(".gz") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            body
        }
    }

    #[test]
    fn mails_carry_real_reports_with_unique_ids_in_every_container() {
        let templates = load_templates(&default_corpus_dir()).unwrap();
        let generator = Generator::new(&templates, VolumeOptions::default());
        let mut ids = HashSet::new();
        let mut containers = HashSet::new();
        for i in 0..templates.len() * 3 {
            let mail = generator.mail(i).unwrap();
            assert!(mail.bytes.windows(2).any(|w| w == b"\r\n"));
            assert!(
                !mail
                    .bytes
                    .windows(2)
                    .any(|w| w[1] == b'\n' && w[0] != b'\r')
            );
            let xml = attachment_xml(&mail.bytes);
            assert_eq!(xml.len(), mail.xml_bytes);
            let id = element_text(&xml, "report_id").unwrap();
            assert!(id.ends_with(&format!(".bench{i:07}")), "{id}");
            assert!(ids.insert(id));
            let begin: i64 = element_text(&xml, "begin").unwrap().parse().unwrap();
            assert_eq!((begin - DEFAULT_FIRST_DAY) % DAY, 0);
            assert!((begin - DEFAULT_FIRST_DAY) / DAY < 7);
            containers.insert(mail.container);
        }
        assert_eq!(containers.len(), 3);
    }

    #[test]
    fn generation_is_deterministic() {
        let templates = load_templates(&default_corpus_dir()).unwrap();
        let generator = Generator::new(&templates, VolumeOptions::default());
        for i in [0, 1, templates.len() + 5] {
            assert_eq!(
                generator.mail(i).unwrap().bytes,
                generator.mail(i).unwrap().bytes
            );
        }
    }

    #[test]
    fn benchmark_ips_are_distinct_and_inside_198_18_0_0_slash_15() {
        let ips: HashSet<String> = (0..1 << 17).map(benchmark_ip).collect();
        assert_eq!(ips.len(), 1 << 17);
        assert!(
            ips.iter()
                .all(|ip| ip.starts_with("198.18.") || ip.starts_with("198.19."))
        );
    }

    #[test]
    fn big_report_has_the_requested_records_with_distinct_ips() {
        let templates = load_templates(&default_corpus_dir()).unwrap();
        let template = richest_template(&templates).unwrap();
        let xml = big_report_xml(template, 1000).unwrap();
        let blocks = record_blocks(&xml);
        assert_eq!(blocks.len(), 1000);
        let ips: HashSet<String> = blocks
            .iter()
            .map(|b| element_text(&xml[b.clone()], "source_ip").unwrap())
            .collect();
        assert_eq!(ips.len(), 1000);
        let mail = big_report_mail(template, 1000).unwrap();
        assert_eq!(attachment_xml(&mail.bytes), xml);
    }
}
