//! Helpers shared by the extraction, mail and hostile-input tests: building mails and containers
//! in memory (so every quirk is visible in the test that uses it) and a visitor that records
//! which documents were found, with their bytes.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, Read, Write};
use std::path::PathBuf;

use dmarc_tsv_core::extract::{Document, DocumentVisitor, Extraction, Visit, extract};
use dmarc_tsv_core::{Limits, SkipReason};
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

/// Every file under `tests/fixtures` (recursively), sorted.
pub fn fixture_files() -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("fixture folder") {
            let path = entry.expect("fixture entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&fixtures_dir(), &mut files);
    files.sort();
    files
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn corpus(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/corpus")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {}: {e}", full.display()))
}

/// A small, valid DMARC aggregate report with `records` records.
pub fn report_xml(report_id: &str, records: usize) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n<report_metadata>\
         <org_name>crafted.example</org_name><email>noreply@crafted.example</email>\
         <report_id>{report_id}</report_id><date_range><begin>1704067200</begin>\
         <end>1704153599</end></date_range></report_metadata>\n<policy_published>\
         <domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp>\
         <pct>100</pct></policy_published>\n"
    );
    for i in 0..records {
        xml.push_str(&format!(
            "<record><row><source_ip>192.0.2.{}</source_ip><count>{}</count><policy_evaluated>\
             <disposition>{}</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated>\
             </row><identifiers><header_from>example.com</header_from></identifiers>\
             <auth_results><dkim><domain>example.com</domain><result>pass</result></dkim>\
             <spf><domain>example.com</domain><result>fail</result></spf></auth_results>\
             </record>\n",
            i % 250,
            i + 1,
            if i % 2 == 0 { "none" } else { "quarantine" }
        ));
    }
    xml.push_str("</feedback>\n");
    xml
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("in-memory write");
    enc.finish().expect("in-memory gzip")
}

pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("in-memory write");
    enc.finish().expect("in-memory zlib")
}

/// A zip with the given members; a name ending in `/` becomes a directory entry.
pub fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        if let Some(dir) = name.strip_suffix('/') {
            writer.add_directory(dir, options).expect("zip dir");
        } else {
            writer.start_file(*name, options).expect("zip member");
            writer.write_all(bytes).expect("zip write");
        }
    }
    writer.finish().expect("zip finish").into_inner()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 with lines of `line_len` characters (reporters use 60 to 78), joined by `eol`.
pub fn base64(bytes: &[u8], line_len: usize, eol: &str) -> String {
    let mut flat = String::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                flat.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                flat.push('=');
            }
        }
    }
    let lines: Vec<&str> = flat
        .as_bytes()
        .chunks(line_len)
        .map(|l| std::str::from_utf8(l).expect("ascii"))
        .collect();
    lines.join(eol)
}

/// One MIME part of a crafted mail.
#[derive(Clone)]
pub struct Part {
    /// Full Content-Type value, parameters included.
    pub content_type: String,
    /// Full Content-Disposition value, if any.
    pub disposition: Option<String>,
    /// Body already encoded as it appears in the mail.
    pub body: String,
    pub transfer_encoding: Option<&'static str>,
}

impl Part {
    pub fn attachment(content_type: &str, name: &str, bytes: &[u8]) -> Part {
        Part {
            content_type: format!("{content_type}; name=\"{name}\""),
            disposition: Some(format!("attachment; filename=\"{name}\"")),
            body: base64(bytes, 76, "\n"),
            transfer_encoding: Some("base64"),
        }
    }

    pub fn text(content_type: &str, text: &str) -> Part {
        Part {
            content_type: content_type.to_string(),
            disposition: None,
            body: text.to_string(),
            transfer_encoding: None,
        }
    }

    fn render(&self) -> String {
        let mut out = format!("Content-Type: {}\n", self.content_type);
        if let Some(enc) = self.transfer_encoding {
            out.push_str(&format!("Content-Transfer-Encoding: {enc}\n"));
        }
        if let Some(disp) = &self.disposition {
            out.push_str(&format!("Content-Disposition: {disp}\n"));
        }
        out.push('\n');
        out.push_str(&self.body);
        out.push('\n');
        out
    }
}

pub fn headers(to: &str) -> String {
    format!(
        "From: reporter@crafted.example\nTo: {to}\nSubject: Report Domain: example.com\n\
         Message-ID: <crafted@crafted.example>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
         MIME-Version: 1.0\n"
    )
}

/// A multipart/mixed mail with LF line ends (see [`crlf`]).
pub fn multipart(parts: &[Part]) -> String {
    multipart_of("mixed", "dmarc@example.com", parts)
}

pub fn multipart_of(subtype: &str, to: &str, parts: &[Part]) -> String {
    // Every multipart gets its own boundary: nested mails must not share one.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let boundary = format!("=_crafted_{subtype}_{serial}");
    let mut out = headers(to);
    out.push_str(&format!(
        "Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\n\nThis is a MIME message.\n"
    ));
    for part in parts {
        out.push_str(&format!("--{boundary}\n"));
        out.push_str(&part.render());
    }
    out.push_str(&format!("--{boundary}--\n"));
    out
}

/// A single-part mail whose whole body is `part` (how Google sends reports).
pub fn single_part(part: &Part) -> String {
    let mut out = headers("dmarc@example.com");
    out.push_str(&part.render());
    out
}

/// `message/rfc822` part wrapping a whole mail.
pub fn attached_message(mail: &str) -> Part {
    Part {
        content_type: "message/rfc822".into(),
        disposition: Some("attachment; filename=\"forwarded.eml\"".into()),
        body: mail.to_string(),
        transfer_encoding: None,
    }
}

pub fn crlf(mail: &str) -> Vec<u8> {
    mail.replace('\n', "\r\n").into_bytes()
}

/// One document handed to the visitor.
#[derive(Debug, Clone)]
pub struct Found {
    pub location: String,
    pub bytes: Vec<u8>,
}

/// Records every document with its full bytes (fine for small test inputs).
#[derive(Default)]
pub struct Collector {
    pub found: Vec<Found>,
}

impl DocumentVisitor for Collector {
    fn document(&mut self, doc: Document<'_>) -> io::Result<Visit> {
        let mut bytes = Vec::new();
        match doc.reader.read_to_end(&mut bytes) {
            Ok(_) => {
                self.found.push(Found {
                    location: doc.location.to_string(),
                    bytes,
                });
                Ok(Visit::Used)
            }
            Err(err) => Ok(Visit::Skipped(doc.fault().unwrap_or(
                SkipReason::NotAReport {
                    detail: err.to_string(),
                },
            ))),
        }
    }
}

/// Runs the extraction with a [`Collector`].
pub fn collect(bytes: &[u8]) -> (Extraction, Vec<Found>) {
    collect_with(bytes, &Limits::default())
}

pub fn collect_with(bytes: &[u8], limits: &Limits) -> (Extraction, Vec<Found>) {
    let mut collector = Collector::default();
    let extraction = extract(bytes, limits, &mut collector).expect("collector never fails");
    (extraction, collector.found)
}

pub fn inflate_gzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("fixture gzip");
    out
}

pub fn codes(extraction: &Extraction) -> Vec<&'static str> {
    extraction.skipped.iter().map(|s| s.reason.code()).collect()
}
