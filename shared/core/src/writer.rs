//! Row writers. TSV is what Athena's default LazySimpleSerDe reads exactly: no header, no quoting,
//! and never a tab, CR or LF inside a field (each becomes a space). CSV is RFC 4180 with a header.

use std::borrow::Cow;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::columns::COLUMNS;
use crate::model::RowView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Tsv,
    Csv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Tsv => "tsv",
            Format::Csv => "csv",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tsv" => Ok(Format::Tsv),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format {other:?} (expected tsv or csv)")),
        }
    }
}

/// Writes rows, field by field, in [`COLUMNS`] order.
pub trait RowWriter {
    /// One row given as its field values (already in column order).
    fn write_fields<'a, I: IntoIterator<Item = &'a str>>(&mut self, fields: I) -> io::Result<()>;

    /// One row built from a parsed record.
    fn write_row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        let values: Vec<Cow<'_, str>> = COLUMNS.iter().map(|c| (c.value)(row)).collect();
        self.write_fields(values.iter().map(|v| v.as_ref()))
    }
}

/// Tab-separated rows, one per line, LF line ends, no header.
pub struct TsvWriter<W: Write> {
    out: W,
    /// The row being built: one `write_all` per row instead of two per field.
    line: Vec<u8>,
}

impl<W: Write> TsvWriter<W> {
    pub fn new(out: W) -> Self {
        TsvWriter {
            out,
            line: Vec::with_capacity(1024),
        }
    }
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Appends `field` made safe for Hive's LazySimpleSerDe: tab, CR and LF become a space, in the
/// same pass that copies it (no separate scan per field).
fn push_athena_safe(line: &mut Vec<u8>, field: &str) {
    let bytes = field.as_bytes();
    // Almost no value holds one: a branch-free scan (it vectorises), then one copy.
    let has_separator = bytes
        .iter()
        .fold(false, |seen, &b| seen | matches!(b, b'\t' | b'\r' | b'\n'));
    if !has_separator {
        line.extend_from_slice(bytes);
        return;
    }
    line.extend(bytes.iter().map(|&b| match b {
        b'\t' | b'\r' | b'\n' => b' ',
        other => other,
    }));
}

impl<W: Write> RowWriter for TsvWriter<W> {
    /// Column by column into one line buffer: no per-row collection of values.
    fn write_row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        self.line.clear();
        for (i, column) in COLUMNS.iter().enumerate() {
            if i > 0 {
                self.line.push(b'\t');
            }
            push_athena_safe(&mut self.line, &(column.value)(row));
        }
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn write_fields<'a, I: IntoIterator<Item = &'a str>>(&mut self, fields: I) -> io::Result<()> {
        self.line.clear();
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.line.push(b'\t');
            }
            push_athena_safe(&mut self.line, field);
        }
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// RFC 4180 CSV with a header row of column names.
pub struct CsvWriter<W: Write> {
    inner: csv::Writer<W>,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> io::Result<Self> {
        let mut inner = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        inner
            .write_record(COLUMNS.iter().map(|c| c.name))
            .map_err(io::Error::other)?;
        Ok(CsvWriter { inner })
    }
    pub fn into_inner(self) -> io::Result<W> {
        self.inner
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl<W: Write> RowWriter for CsvWriter<W> {
    fn write_fields<'a, I: IntoIterator<Item = &'a str>>(&mut self, fields: I) -> io::Result<()> {
        self.inner.write_record(fields).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_fields_never_hold_tab_cr_or_lf() {
        let mut w = TsvWriter::new(Vec::new());
        w.write_fields(["a\tb", "c\r\nd", "\"quoted\""]).unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "a b\tc  d\t\"quoted\"\n"
        );
    }

    #[test]
    fn tsv_rows_replace_tab_cr_and_lf_like_write_fields() {
        use crate::model::{MailInfo, OverrideReason, Record, ReportMeta};
        let mail = MailInfo {
            report_to: "dmarc@example.com".into(),
            source_key: "incoming/a\tb".into(),
        };
        let meta = ReportMeta {
            org_name: "Org\r\nName".into(),
            ..ReportMeta::default()
        };
        let record = Record {
            source_ip: "192.0.2.1".into(),
            reasons: vec![OverrideReason {
                kind: "local_policy".into(),
                comment: "line one\nline two\tend".into(),
            }],
            ..Record::default()
        };
        let row = RowView {
            mail: &mail,
            meta: &meta,
            record: &record,
            date_begin: "2024-01-01 00:00:00",
            date_end: "2024-01-02 00:00:00",
        };
        let mut direct = TsvWriter::new(Vec::new());
        direct.write_row(&row).unwrap();
        let values: Vec<Cow<'_, str>> = COLUMNS.iter().map(|c| (c.value)(&row)).collect();
        let mut by_fields = TsvWriter::new(Vec::new());
        by_fields
            .write_fields(values.iter().map(|v| v.as_ref()))
            .unwrap();
        let line = String::from_utf8(direct.into_inner()).unwrap();
        assert_eq!(line, String::from_utf8(by_fields.into_inner()).unwrap());
        assert_eq!(line.matches('\t').count(), COLUMNS.len() - 1);
        assert!(line.contains("Org  Name") && line.contains("line one line two end"));
        assert!(line.ends_with("incoming/a b\n") && !line[..line.len() - 1].contains('\n'));
    }

    #[test]
    fn csv_quotes_per_rfc4180_after_a_header() {
        let mut w = CsvWriter::new(Vec::new()).unwrap();
        let mut fields = vec![""; COLUMNS.len() - 3];
        fields.extend(["a,b", "say \"hi\"", "line\nbreak"]);
        w.write_fields(fields).unwrap();
        let s = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let mut lines = s.split("\r\n");
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("dmarc_report_to,report_id,")
        );
        assert!(
            s.ends_with("\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\"\r\n"),
            "{s}"
        );
    }
}
