//! The staged object format: gzip whose first line is a JSON header (batch, partition, and per
//! report its digest, identity, mail and row count), followed by the rows of those reports in
//! order. Rows are tab-separated with `\`, tab, CR and LF escaped, so staging is lossless and the
//! output format (TSV or CSV) is chosen at compaction.
//!
//! The header and the rows are separate gzip members (a gzip file may hold several; readers
//! decode them as one stream): rows are compressed as they arrive, the header written last.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use super::error::PipelineError;
use super::events::MailRef;
use crate::columns::COLUMNS;
use crate::model::ReportIdentity;

pub const STAGED_VERSION: u32 = 1;

/// Bytes gathered before each call into the gzip encoder.
pub const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedReport {
    pub digest: String,
    pub identity: ReportIdentity,
    pub mail: MailRef,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedHeader {
    pub v: u32,
    pub batch: String,
    pub partition: String,
    pub reports: Vec<StagedReport>,
}

impl StagedHeader {
    pub fn rows(&self) -> u64 {
        self.reports.iter().map(|r| r.rows).sum()
    }
}

/// A gzip encoder with fixed header fields (no name, mtime 0), so the same rows give the same bytes.
pub fn deterministic_gzip() -> GzEncoder<Vec<u8>> {
    flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::default())
}

/// Builds the rows part of a staged object, report by report.
pub struct StagedBuilder {
    reports: Vec<StagedReport>,
    /// Buffered: the gzip encoder is slow on many small writes.
    rows: BufWriter<GzEncoder<Vec<u8>>>,
    line: String,
}

impl Default for StagedBuilder {
    fn default() -> Self {
        Self::with_level(Compression::default())
    }
}

impl StagedBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Staged objects live minutes, output files years: staging picks its own level
    /// (`-stagecompression`).
    pub fn with_level(level: Compression) -> Self {
        StagedBuilder {
            reports: Vec::new(),
            rows: BufWriter::with_capacity(
                WRITE_BUFFER,
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(Vec::new(), level),
            ),
            line: String::new(),
        }
    }

    /// Starts a report; rows pushed next belong to it.
    pub fn begin_report(&mut self, identity: ReportIdentity, mail: MailRef) {
        self.reports.push(StagedReport {
            digest: identity.digest(),
            identity,
            mail,
            rows: 0,
        });
    }

    /// Replaces the identity of the current report (the parser's final word on it).
    pub fn set_identity(&mut self, identity: ReportIdentity) {
        if let Some(r) = self.reports.last_mut()
            && r.identity != identity
        {
            r.digest = identity.digest();
            r.identity = identity;
        }
    }

    /// One row of the current report, fields in [`COLUMNS`] order.
    pub fn push_row<I>(&mut self, fields: I) -> std::io::Result<()>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let Some(report) = self.reports.last_mut() else {
            return Err(std::io::Error::other("row before any report"));
        };
        self.line.clear();
        for (i, f) in fields.into_iter().enumerate() {
            if i > 0 {
                self.line.push('\t');
            }
            escape_into(f.as_ref(), &mut self.line);
        }
        self.line.push('\n');
        self.rows.write_all(self.line.as_bytes())?;
        report.rows += 1;
        Ok(())
    }

    pub fn reports(&self) -> &[StagedReport] {
        &self.reports
    }

    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// Rows part (one or more complete gzip members) and the reports it holds.
    pub fn finish_parts(self) -> std::io::Result<(Vec<u8>, Vec<StagedReport>)> {
        let encoder = self.rows.into_inner().map_err(|e| e.into_error())?;
        Ok((encoder.finish()?, self.reports))
    }

    /// The complete staged object.
    pub fn finish(self, batch: &str, partition: &str) -> std::io::Result<Vec<u8>> {
        let (rows, reports) = self.finish_parts()?;
        assemble(batch, partition, reports, &rows)
    }
}

/// Header member + rows members (several mails' row parts may be concatenated).
pub fn assemble(
    batch: &str,
    partition: &str,
    reports: Vec<StagedReport>,
    rows_members: &[u8],
) -> std::io::Result<Vec<u8>> {
    let header = StagedHeader {
        v: STAGED_VERSION,
        batch: batch.into(),
        partition: partition.into(),
        reports,
    };
    // Serialise first, compress once: serde_json writes many tiny pieces, and every write into
    // an unbuffered GzEncoder costs a compressor call.
    let mut json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    json.push(b'\n');
    let mut gz = deterministic_gzip();
    gz.write_all(&json)?;
    let mut out = gz.finish()?;
    out.extend_from_slice(rows_members);
    Ok(out)
}

fn escape_into(field: &str, out: &mut String) {
    // Almost every value has nothing to escape: a branch-free scan (it vectorises) finds out.
    let special = field.bytes().fold(false, |seen, b| {
        seen | matches!(b, b'\\' | b'\t' | b'\n' | b'\r')
    });
    if !special {
        out.push_str(field);
        return;
    }
    // Clean runs are copied whole; only the special characters are escaped one by one.
    let mut rest = field;
    while let Some(at) = rest
        .bytes()
        .position(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            _ => "\\r",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// The field as written to the staging area; borrowed unless it held an escape (rare: only
/// values with a backslash, tab, CR or LF).
fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Reads a staged object: the header, then rows one at a time.
pub struct StagedReader<R: Read> {
    key: String,
    pub header: StagedHeader,
    lines: BufReader<MultiGzDecoder<R>>,
    line: String,
}

impl<'a> StagedReader<&'a [u8]> {
    pub fn open(key: &str, bytes: &'a [u8]) -> Result<Self, PipelineError> {
        let mut lines = BufReader::new(MultiGzDecoder::new(bytes));
        let mut first = String::new();
        lines
            .read_line(&mut first)
            .map_err(|e| PipelineError::corrupt(key, format!("header: {e}")))?;
        let header: StagedHeader = serde_json::from_str(first.trim_end())
            .map_err(|e| PipelineError::corrupt(key, format!("header: {e}")))?;
        if header.v != STAGED_VERSION {
            return Err(PipelineError::corrupt(
                key,
                format!("unknown version {}", header.v),
            ));
        }
        Ok(StagedReader {
            key: key.into(),
            header,
            lines,
            line: String::new(),
        })
    }
}

impl<R: Read> StagedReader<R> {
    /// The next row's fields (always [`COLUMNS`]`.len()` of them).
    /// The next row's fields, borrowed from the reader's line buffer (one allocation per row).
    pub fn next_row(&mut self) -> Result<Vec<Cow<'_, str>>, PipelineError> {
        self.read_line()?;
        let fields: Vec<Cow<'_, str>> = self.line.split('\t').map(unescape).collect();
        if fields.len() != COLUMNS.len() {
            return Err(PipelineError::corrupt(
                &self.key,
                format!(
                    "row with {} fields, expected {}",
                    fields.len(),
                    COLUMNS.len()
                ),
            ));
        }
        Ok(fields)
    }

    /// The next row appended to `out` as an output TSV line (with its `\n`), straight from the
    /// staged line: escapes are resolved to what [`crate::writer::TsvWriter`] writes for the
    /// unescaped values (tab, CR and LF become a space), without splitting into fields.
    pub fn next_row_as_tsv(&mut self, out: &mut Vec<u8>) -> Result<(), PipelineError> {
        self.read_line()?;
        let line = self.line.as_bytes();
        let fields = line.iter().filter(|&&b| b == b'\t').count() + 1;
        if fields != COLUMNS.len() {
            return Err(PipelineError::corrupt(
                &self.key,
                format!("row with {fields} fields, expected {}", COLUMNS.len()),
            ));
        }
        // Runs without an escape (almost every line is one) are copied whole.
        let mut rest = line;
        while let Some(at) = rest.iter().position(|&b| b == b'\\') {
            out.extend_from_slice(&rest[..at]);
            let (resolved, used) = match rest.get(at + 1) {
                Some(b't' | b'n' | b'r') => (b' ', 2),
                Some(&other) => (other, 2),
                None => (b'\\', 1),
            };
            out.push(resolved);
            rest = &rest[at + used..];
        }
        out.extend_from_slice(rest);
        out.push(b'\n');
        Ok(())
    }

    /// Skips one row without splitting it.
    pub fn skip_row(&mut self) -> Result<(), PipelineError> {
        self.read_line()
    }

    fn read_line(&mut self) -> Result<(), PipelineError> {
        self.line.clear();
        let n = self
            .lines
            .read_line(&mut self.line)
            .map_err(|e| PipelineError::corrupt(&self.key, e))?;
        if n == 0 || !self.line.ends_with('\n') {
            return Err(PipelineError::corrupt(
                &self.key,
                "fewer rows than the header says",
            ));
        }
        self.line.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: &str) -> ReportIdentity {
        ReportIdentity {
            org_name: "org".into(),
            report_id: id.into(),
            policy_domain: "example.com".into(),
            begin: 86_400,
            end: 172_799,
        }
    }

    fn mail() -> MailRef {
        MailRef {
            bucket: "b".into(),
            key: "incoming/m".into(),
            etag: None,
            size: None,
        }
    }

    #[test]
    fn staged_objects_round_trip_losslessly_and_deterministically() {
        let mut row: Vec<String> = (0..COLUMNS.len()).map(|i| format!("v{i}")).collect();
        row[3] = "tab\there\\n and\nnewline\r".into();
        let build = || {
            let mut b = StagedBuilder::new();
            b.begin_report(identity("a"), mail());
            b.push_row(row.iter().map(String::as_str)).unwrap();
            b.push_row(row.iter().map(String::as_str)).unwrap();
            b.begin_report(identity("b"), mail());
            b.finish("batch1", "1970-01-02").unwrap()
        };
        let bytes = build();
        assert_eq!(bytes, build());
        let mut r = StagedReader::open("k", &bytes).unwrap();
        assert_eq!(r.header.reports.len(), 2);
        assert_eq!(r.header.rows(), 2);
        assert_eq!(r.header.reports[0].digest, identity("a").digest());
        assert_eq!(r.next_row().unwrap(), row);
        r.skip_row().unwrap();
        assert!(matches!(r.next_row(), Err(PipelineError::Corrupt { .. })));
        assert!(StagedReader::open("k", b"garbage").is_err());
    }

    #[test]
    fn rows_read_as_tsv_equal_the_tsv_writer_on_the_unescaped_fields() {
        use crate::writer::{RowWriter, TsvWriter};
        let mut row: Vec<String> = (0..COLUMNS.len()).map(|i| format!("v{i}")).collect();
        row[0] = "back\\slash \\t not a tab".into();
        row[3] = "tab\there\\n and\nnewline\r".into();
        row[44] = "ends with \\".into();
        let mut b = StagedBuilder::new();
        b.begin_report(identity("a"), mail());
        b.push_row(row.iter().map(String::as_str)).unwrap();
        b.push_row(row.iter().map(String::as_str)).unwrap();
        let bytes = b.finish("batch1", "1970-01-02").unwrap();

        let mut r = StagedReader::open("k", &bytes).unwrap();
        let fields = owned(r.next_row().unwrap());
        let mut expected = TsvWriter::new(Vec::new());
        expected
            .write_fields(fields.iter().map(String::as_str))
            .unwrap();
        let mut fast = Vec::new();
        r.next_row_as_tsv(&mut fast).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(expected.into_inner()).unwrap()
        );
        assert_eq!(fields, row);
        assert!(matches!(
            r.next_row_as_tsv(&mut Vec::new()),
            Err(PipelineError::Corrupt { .. })
        ));
    }

    /// A staged row's fields, detached from the reader (which the next read borrows again).
    fn owned(fields: Vec<std::borrow::Cow<'_, str>>) -> Vec<String> {
        fields.into_iter().map(|f| f.into_owned()).collect()
    }

    #[test]
    fn any_staging_level_reads_back_the_same_rows() {
        let row: Vec<String> = (0..COLUMNS.len()).map(|i| format!("value {i}\t")).collect();
        let staged: Vec<Vec<u8>> = [
            Compression::none(),
            Compression::fast(),
            Compression::best(),
        ]
        .into_iter()
        .map(|level| {
            let mut b = StagedBuilder::with_level(level);
            b.begin_report(identity("a"), mail());
            for _ in 0..3 {
                b.push_row(row.iter().map(String::as_str)).unwrap();
            }
            b.finish("batch1", "1970-01-02").unwrap()
        })
        .collect();
        assert!(
            staged[0].len() > staged[1].len(),
            "level 0 stores, level 1 compresses"
        );
        for bytes in &staged {
            let mut r = StagedReader::open("k", bytes).unwrap();
            for _ in 0..3 {
                assert_eq!(owned(r.next_row().unwrap()), row);
            }
        }
    }
}
