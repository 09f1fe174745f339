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

/// A field made safe for Hive's LazySimpleSerDe: tab, CR and LF become a space.
pub fn athena_safe(field: &str) -> Cow<'_, str> {
    if field.bytes().any(|b| matches!(b, b'\t' | b'\r' | b'\n')) {
        Cow::Owned(field.replace(['\t', '\r', '\n'], " "))
    } else {
        Cow::Borrowed(field)
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
}

impl<W: Write> TsvWriter<W> {
    pub fn new(out: W) -> Self {
        TsvWriter { out }
    }
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> RowWriter for TsvWriter<W> {
    fn write_fields<'a, I: IntoIterator<Item = &'a str>>(&mut self, fields: I) -> io::Result<()> {
        for (i, f) in fields.into_iter().enumerate() {
            if i > 0 {
                self.out.write_all(b"\t")?;
            }
            self.out.write_all(athena_safe(f).as_bytes())?;
        }
        self.out.write_all(b"\n")
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
