//! A report parse's whole answer as text, for tests that compare parses (window sizes, streamed
//! or in place): the records it delivered, one per line, then its result with meta and problems.
#![allow(dead_code)] // each test binary uses a different subset

use std::io;

use dmarc_tsv_core::model::{Record, ReportMeta};
use dmarc_tsv_core::report::{ReportError, ReportParse};

/// The record callback every parse entry takes.
pub type OnRecord<'a> = dyn FnMut(&ReportMeta, &Record) -> io::Result<()> + 'a;

/// Every record as `{meta:?} {record:?}`, then the result.
pub fn trace(parse: impl FnOnce(&mut OnRecord<'_>) -> Result<ReportParse, ReportError>) -> String {
    trace_records(|meta, record| format!("{meta:?} {record:?}"), parse)
}

/// Every record as `line` describes it, then the result.
pub fn trace_records(
    line: impl Fn(&ReportMeta, &Record) -> String,
    parse: impl FnOnce(&mut OnRecord<'_>) -> Result<ReportParse, ReportError>,
) -> String {
    let mut lines = Vec::new();
    let result = parse(&mut |meta, record| {
        lines.push(line(meta, record));
        Ok(())
    });
    lines.push(format!("{result:?}"));
    lines.join("\n")
}
