//! Why an input (or a piece of one) yielded no rows. Nothing is dropped silently: every part of a
//! mail that is not used, and every record that cannot be read, becomes a [`Skipped`] with a reason.

use serde::{Deserialize, Serialize};

/// Transient errors may succeed on retry (throttling, timeouts, 5xx); permanent ones never will
/// (bad input, a limit hit). The pipeline retries the first and quarantines the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Transient,
    Permanent,
}

/// The reason a mail, a MIME part, a container member, a report or a record was not used.
/// `code()` is a stable, metric- and file-name-safe identifier; `Display` is the operator text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SkipReason {
    /// The mail has no part that could hold a report (e.g. a plain text or HTML only mail).
    #[error("no attachment or body part that could hold a report")]
    NoAttachment,
    /// The mail could not be parsed as RFC 5322 at all.
    #[error("not a parseable mail: {detail}")]
    NotAMail { detail: String },
    /// Bytes that are neither zip, gzip, zlib nor XML (e.g. a PDF, a logo, the word `unused`).
    #[error("not a report ({detail})")]
    NotAReport { detail: String },
    /// Another kind of report we recognise but do not turn into rows (SMTP TLS JSON, forensic ARF).
    #[error("unsupported report kind: {kind}")]
    UnsupportedReport { kind: String },
    #[error("corrupt zip: {detail}")]
    CorruptZip { detail: String },
    #[error("corrupt gzip: {detail}")]
    CorruptGzip { detail: String },
    #[error("corrupt zlib: {detail}")]
    CorruptZlib { detail: String },
    /// A configured bound was hit; `limit` is the [`crate::Limits`] field name.
    #[error("limit exceeded: {limit} ({value} > {max})")]
    LimitExceeded { limit: String, value: u64, max: u64 },
    /// The XML document is not a DMARC aggregate report (wrong root, no `<feedback>`).
    #[error("XML is not a DMARC aggregate report: {detail}")]
    NotDmarcXml { detail: String },
    /// The XML could not be read; `records_read` rows before the error were still kept.
    #[error("malformed XML after {records_read} records: {detail}")]
    MalformedXml { detail: String, records_read: u64 },
    /// One `<record>` could not be read; the rest of its report still yields rows.
    #[error("record {index} unreadable: {detail}")]
    RecordUnreadable { index: u64, detail: String },
    /// The report lacks what identifies it (report_id, date range, policy domain).
    #[error("report unusable: {detail}")]
    ReportUnusable { detail: String },
    /// The same report (org, report_id, policy domain, begin, end) was already used.
    #[error("duplicate of report {identity}")]
    Duplicate { identity: String },
}

impl SkipReason {
    /// Stable identifier, used in metrics, quarantine sidecars and summaries.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NoAttachment => "no_attachment",
            SkipReason::NotAMail { .. } => "not_a_mail",
            SkipReason::NotAReport { .. } => "not_a_report",
            SkipReason::UnsupportedReport { .. } => "unsupported_report",
            SkipReason::CorruptZip { .. } => "corrupt_zip",
            SkipReason::CorruptGzip { .. } => "corrupt_gzip",
            SkipReason::CorruptZlib { .. } => "corrupt_zlib",
            SkipReason::LimitExceeded { .. } => "limit_exceeded",
            SkipReason::NotDmarcXml { .. } => "not_dmarc_xml",
            SkipReason::MalformedXml { .. } => "malformed_xml",
            SkipReason::RecordUnreadable { .. } => "record_unreadable",
            SkipReason::ReportUnusable { .. } => "report_unusable",
            SkipReason::Duplicate { .. } => "duplicate",
        }
    }

    /// Everything about input bytes is permanent: retrying the same bytes gives the same answer.
    pub fn severity(&self) -> Severity {
        Severity::Permanent
    }
}

/// One thing not used, with where it was (`part 2 "report.zip" > member "a.xml"`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub location: String,
    pub reason: SkipReason,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.location, self.reason)
        }
    }
}
