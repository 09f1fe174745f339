//! Streaming DMARC aggregate report parser (RFC 7489 and RFC 9990) on quick-xml.
//!
//! CONTRACT (owned by the XML work; see doc/architecture.md):
//! - [`parse_report`] reads one XML document from a `BufRead`, never holding more than one record
//!   (plus bounded buffering) in memory, and calls `on_record(&meta, &record)` for each readable
//!   `<record>`, with `meta` complete (report_metadata + policy_published seen). Records met before
//!   the metadata are buffered (bounded by `limits.max_records_per_report`) until it is complete.
//! - Elements are matched on local names, whatever the namespace or prefix; unknown elements,
//!   `<extension>` blocks and junk (an embedded `<xs:schema>`) are skipped.
//! - Entities: only the predefined and numeric character references are expanded; DTDs are
//!   ignored; nothing external is ever read.
//! - Encoding: a UTF-8 BOM is skipped; declared encodings (windows-1252, ISO-8859-1, …) are
//!   converted with encoding_rs; invalid UTF-8 is replaced; XML-forbidden control characters are
//!   removed instead of failing.
//! - Enum-like values are trimmed and lower-cased; all `<dkim>` / `<spf>` results are kept.
//! - A record that cannot be read is reported in [`ReportParse::problems`]; others still yield.

use std::io::BufRead;

use crate::error::SkipReason;
use crate::limits::Limits;
use crate::model::{Record, ReportMeta};

/// What one document gave, besides the records passed to the callback.
#[derive(Debug, Clone, Default)]
pub struct ReportParse {
    pub meta: ReportMeta,
    pub records: u64,
    /// Unreadable records or a truncated tail (records before it were still delivered).
    pub problems: Vec<crate::Skipped>,
}

/// Parses one XML document. `Err` means no report could be read at all (not DMARC XML, a limit hit
/// before any record, …); the reason says which.
pub fn parse_report<R: BufRead>(
    reader: R,
    limits: &Limits,
    on_record: &mut dyn FnMut(&ReportMeta, &Record) -> std::io::Result<()>,
) -> Result<ReportParse, SkipReason> {
    let _ = (reader, limits, on_record);
    Err(SkipReason::NotDmarcXml {
        detail: "parser not built yet".into(),
    })
}
