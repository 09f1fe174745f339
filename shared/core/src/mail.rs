//! One mail (or bare report file) in, rows out: the entry point everything else calls.
//!
//! CONTRACT: [`parse_mail`] walks every MIME part (see [`crate::extract`]), parses every report
//! found (see [`crate::report`]), pushes each row into the sink, and returns what it used
//! ([`MailOutcome::reports`]) and, for everything not used, a reason ([`MailOutcome::skipped`]).
//! It never panics on any input and respects [`crate::Limits`].

use std::io;

use serde::{Deserialize, Serialize};

use crate::error::{SkipReason, Skipped};
use crate::extract::{self, Document, DocumentVisitor, ExtractStats, MimeReading, Visit};
use crate::limits::Limits;
use crate::model::{
    MailInfo, Record, ReportIdentity, ReportMeta, ReportSummary, RowView, Schema, utc_datetime,
};
use crate::report::{self, ReportError};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseOptions {
    pub limits: Limits,
    /// The seed's `-excludedispositionnone`: drop records whose disposition is `none`.
    pub exclude_disposition_none: bool,
}

/// Receives a mail's rows as they are parsed (nothing is collected in memory by the core).
pub trait ReportSink {
    /// A report starts; `meta` is complete. Rows of this report follow.
    fn begin_report(&mut self, _location: &str, _meta: &ReportMeta) {}
    /// One row. An error stops parsing and is returned by [`parse_mail`] as [`MailError::Sink`].
    fn row(&mut self, row: &RowView<'_>) -> io::Result<()>;
    /// The report ended (also called for reports that yielded zero rows).
    fn end_report(&mut self, _summary: &ReportSummary) {}
}

/// What a mail gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailOutcome {
    pub mail: MailInfo,
    /// Reports read (each may still have `problems` inside).
    pub reports: Vec<ReportSummary>,
    /// Every part, member or document not used, with its reason.
    pub skipped: Vec<Skipped>,
}

impl MailOutcome {
    /// A mail is usable when at least one report was read from it.
    pub fn is_usable(&self) -> bool {
        !self.reports.is_empty()
    }
    pub fn rows(&self) -> u64 {
        self.reports.iter().map(|r| r.rows).sum()
    }
}

/// Only the sink can fail the whole call: bad input is never an error, it is a [`Skipped`].
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("writing rows failed: {0}")]
    Sink(#[from] io::Error),
}

/// Parses the raw bytes of one mail (RFC 5322, LF or CRLF) or of a bare report file.
///
/// Every report found is parsed as a stream: `sink.begin_report` is called when the first record
/// arrives (or at the end, for a report without records), each row goes to `sink.row`, and
/// `sink.end_report` closes the report. Bad input never fails the call; only the sink can.
pub fn parse_mail(
    bytes: &[u8],
    source_key: &str,
    opts: &ParseOptions,
    sink: &mut dyn ReportSink,
) -> Result<MailOutcome, MailError> {
    parse_mail_with_stats(bytes, source_key, opts, sink).map(|(outcome, _)| outcome)
}

/// [`parse_mail`], also returning the extraction counters (decompressed bytes, documents), for
/// callers that report them and for tests that check the limits hold.
pub fn parse_mail_with_stats(
    bytes: &[u8],
    source_key: &str,
    opts: &ParseOptions,
    sink: &mut dyn ReportSink,
) -> Result<(MailOutcome, ExtractStats), MailError> {
    parse_mail_reading(
        bytes,
        source_key,
        opts,
        sink,
        MimeReading::SimpleShapesFirst,
    )
}

/// [`parse_mail_with_stats`], reading MIME structure as `reading` says (for tests that compare
/// the ways).
#[doc(hidden)]
pub fn parse_mail_reading(
    bytes: &[u8],
    source_key: &str,
    opts: &ParseOptions,
    sink: &mut dyn ReportSink,
    reading: MimeReading,
) -> Result<(MailOutcome, ExtractStats), MailError> {
    // The extraction hands over the To address (see `DocumentVisitor::report_to`) before any
    // document; a bare report file has none and keeps it empty.
    let mut visitor = RowVisitor {
        opts,
        mail: MailInfo {
            report_to: String::new(),
            source_key: source_key.into(),
        },
        sink,
        reports: Vec::new(),
    };
    let extraction = extract::extract_with(bytes, &opts.limits, &mut visitor, reading)?;
    let mut mail = visitor.mail;
    mail.report_to = extraction.report_to;
    let outcome = MailOutcome {
        mail,
        reports: visitor.reports,
        skipped: extraction.skipped,
    };
    Ok((outcome, extraction.stats))
}

/// Turns every XML document the extraction finds into rows for the sink.
struct RowVisitor<'a> {
    opts: &'a ParseOptions,
    mail: MailInfo,
    sink: &'a mut dyn ReportSink,
    reports: Vec<ReportSummary>,
}

/// Counts of one report while its records stream by.
#[derive(Default)]
struct ReportProgress {
    /// The report's identity and schema as of its first record: `begin_report` has been called
    /// (the rows went out under this identity, so the summary keeps it).
    begun: Option<(ReportIdentity, Schema)>,
    /// The report's begin and end timestamps as row values, formatted at the first record.
    dates: (String, String),
    records: u64,
    rows: u64,
    excluded: u64,
    sink_error: Option<io::Error>,
}

impl ReportProgress {
    fn on_record(
        &mut self,
        location: &str,
        mail: &MailInfo,
        opts: &ParseOptions,
        sink: &mut dyn ReportSink,
        meta: &ReportMeta,
        record: &Record,
    ) -> io::Result<()> {
        if self.begun.is_none() {
            sink.begin_report(location, meta);
            self.begun = Some((ReportIdentity::of(meta), meta.schema));
            self.dates = (utc_datetime(meta.begin), utc_datetime(meta.end));
        }
        self.records += 1;
        if opts.exclude_disposition_none && record.disposition == "none" {
            self.excluded += 1;
            return Ok(());
        }
        let row = RowView {
            mail,
            meta,
            record,
            date_begin: &self.dates.0,
            date_end: &self.dates.1,
        };
        match sink.row(&row) {
            Ok(()) => {
                self.rows += 1;
                Ok(())
            }
            Err(err) => {
                // Keep the real error for the caller; the parser only needs to stop.
                let stop = io::Error::new(err.kind(), err.to_string());
                self.sink_error = Some(err);
                Err(stop)
            }
        }
    }
}

impl DocumentVisitor for RowVisitor<'_> {
    fn report_to(&mut self, address: &str) {
        address.clone_into(&mut self.mail.report_to);
    }

    fn document(&mut self, doc: Document<'_>) -> io::Result<Visit> {
        let location = doc.location.to_string();
        let mut progress = ReportProgress::default();
        let (opts, mail) = (self.opts, &self.mail);
        let result = {
            let sink = &mut *self.sink;
            let progress = &mut progress;
            let location = location.as_str();
            let mut on_record = |meta: &ReportMeta, record: &Record| {
                progress.on_record(location, mail, opts, sink, meta, record)
            };
            match doc.bytes {
                Some(bytes) => report::parse_report_bytes(bytes, &opts.limits, &mut on_record),
                None => report::parse_report(&mut *doc.reader, &opts.limits, &mut on_record),
            }
        };
        if let Some(err) = progress.sink_error.take() {
            return Err(err);
        }
        let result = match result {
            Ok(parse) => Ok(parse),
            Err(ReportError::Sink(err)) => return Err(err),
            Err(ReportError::Skip(reason)) => Err(reason),
            Err(ReportError::Input(err)) => Err(SkipReason::NotAReport {
                detail: format!("unreadable: {err}"),
            }),
        };
        // A stream that stopped early (limit, corrupt gzip tail) shows up in the parser as an
        // I/O error; the meter knows the real cause.
        let fault = doc.fault();
        let ((identity, schema), records, mut problems) = match result {
            Ok(parse) => {
                let mut problems = parse.problems;
                problems.extend(fault.map(|reason| Skipped {
                    location: String::new(),
                    reason,
                }));
                let begun = match progress.begun.take() {
                    Some(begun) => begun,
                    None => {
                        // A report without rows is announced now, at its end.
                        self.sink.begin_report(&location, &parse.meta);
                        (ReportIdentity::of(&parse.meta), parse.meta.schema)
                    }
                };
                (begun, parse.records.max(progress.records), problems)
            }
            Err(reason) => match progress.begun.take() {
                // Rows already went to the sink: the report counts, with the failure as a problem.
                Some(begun) => {
                    let reason = fault.unwrap_or(reason);
                    let problem = Skipped {
                        location: String::new(),
                        reason,
                    };
                    (begun, progress.records, vec![problem])
                }
                None => return Ok(Visit::Skipped(fault.unwrap_or(reason))),
            },
        };
        for problem in &mut problems {
            problem.location = if problem.location.is_empty() {
                location.clone()
            } else {
                format!("{location} > {}", problem.location)
            };
        }
        let summary = ReportSummary {
            identity,
            location,
            schema,
            records,
            rows: progress.rows,
            excluded: progress.excluded,
            problems,
        };
        self.sink.end_report(&summary);
        self.reports.push(summary);
        Ok(Visit::Used)
    }
}
