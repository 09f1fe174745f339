//! Streaming DMARC aggregate report parser (RFC 7489 and RFC 9990) on quick-xml.
//!
//! CONTRACT (for callers such as `mail.rs`):
//! - [`parse_report`] reads one XML document from a `BufRead` ([`parse_report_bytes`]: one already
//!   in memory, same result) and calls `on_record(&meta, &record)` for each readable `<record>`,
//!   with `meta` complete (report_metadata + policy_published seen, identity validated).
//!   Memory does not grow with the record count: one record at a time, plus records met before
//!   the metadata, which are buffered (at most [`MAX_BUFFERED_RECORDS`] records,
//!   `limits.max_records_per_report`, and [`MAX_BUFFERED_BYTES`] of text) until the metadata is
//!   complete; over that, `LimitExceeded` (`max_buffered_records`/`_bytes`). Input is read in
//!   windows and parsed in place; one XML event may take at most 16 × `max_field_bytes` (at least
//!   1 MiB), a longer one is `LimitExceeded` (`max_field_bytes`).
//! - Result: `Ok(ReportParse)` = a report was read (`records` = records passed to the callback;
//!   `problems` = unreadable records, truncated values, a malformed/truncated tail after at least
//!   one record). `Err(ReportError::Skip(reason))` = no report at all: `NotAReport` (empty, JSON,
//!   binary: no XML element), `NotDmarcXml` (elements but no `<feedback>`), `MalformedXml`
//!   (broken before any record was delivered), `ReportUnusable` (no usable date range),
//!   `LimitExceeded` (depth, buffering, one event larger than the budget before any record).
//!   `Err(ReportError::Sink(e))` = `on_record` failed: parsing stopped at once, pass it up.
//!   `Err(ReportError::Input(e))` = reading the input failed (e.g. corrupt gzip underneath)
//!   before any record was delivered; map it to your container's reason. After records were
//!   delivered, an input error becomes a `MalformedXml` problem (`reading input failed: …`).
//! - `Skipped::location` of problems is relative to the document (`record 3 row/count`,
//!   `report_metadata/org_name`); prefix it with where the document was found.
//! - Root: the first element whose local name is `feedback`, at any depth; elements before it
//!   (an `<xs:schema>` wrapper, ikea.com) are skipped, and nothing after `</feedback>` is read.
//! - Elements are matched on local names, whatever the namespace or prefix; unknown elements,
//!   `<extension>` blocks and namespaced extras are skipped; attributes (`lang`) are ignored.
//! - Schema: [`Schema::Rfc9990`] when `<feedback>` declares the namespace
//!   `urn:ietf:params:xml:ns:dmarc-2.0` (default or prefixed) or `<version>` starts with `2`;
//!   otherwise [`Schema::Rfc7489`].
//! - Identity rule: a report is usable when `<date_range>` has integer `<begin>` and `<end>`
//!   (the partition and the identity need them). `report_id`, `org_name` and the policy domain
//!   may be empty: the identity (org, id, domain, begin, end) still separates reports.
//! - Entities: only the five predefined ones and numeric character references are expanded. A DTD
//!   is ignored; any other reference (`&lol9;`, `&xxe;`) is kept literally as written. Nothing
//!   external is ever read, so billion-laughs and XXE documents are harmless.
//! - Encoding: UTF-8 (BOM skipped), UTF-16 (BOM or `<\0` sniffing) and any encoding declared in
//!   `<?xml … encoding='…'?>` (windows-1252, ISO-8859-1, …) are transcoded to UTF-8 while
//!   streaming; invalid UTF-8 becomes U+FFFD; XML-forbidden C0 control characters are removed.
//! - Values are trimmed; enum-like values (results, dispositions, policies, alignment, scope,
//!   reason type) are also lower-cased. Values longer than `limits.max_field_bytes` are
//!   truncated (on a char boundary) and reported as a `LimitExceeded` problem.
//! - All `<dkim>`, `<spf>`, `<reason>` and `<error>` are kept in order (at most
//!   [`MAX_REPEATED`] each per record/report; more are reported and dropped).
//! - A `<record>` without `<row>` is unreadable (`RecordUnreadable`, 1-based index); others still
//!   yield. A non-numeric `<count>` is kept as text.

use std::borrow::Cow;
use std::io::{self, BufRead, Read};

use encoding_rs::{Decoder, Encoding, UTF_8, UTF_16BE, UTF_16LE};
use quick_xml::Reader;
use quick_xml::errors::IllFormedError;
use quick_xml::events::{BytesRef, BytesStart, Event};

use crate::error::{SkipReason, Skipped};
use crate::limits::Limits;
use crate::model::{DkimResult, OverrideReason, Record, ReportMeta, Schema, SpfResult};

/// RFC 9990's namespace.
const DMARC2_NAMESPACE: &[u8] = b"urn:ietf:params:xml:ns:dmarc-2.0";
/// Bytes read ahead to find a BOM or the encoding in the XML declaration.
const SNIFF_BYTES: u64 = 1024;
/// Bytes read into the parse window at a time (see [`Window`]); the window stays below glibc's
/// 64 KiB free-consolidation threshold for ordinary reports, as one is allocated per document.
const INPUT_BLOCK: usize = 32 * 1024;
/// Records held while waiting for the metadata (reports that put `<record>` first).
pub const MAX_BUFFERED_RECORDS: u64 = 65_536;
/// Text bytes of records held while waiting for the metadata.
pub const MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;
/// `<dkim>`, `<spf>`, `<reason>` per record and `<error>` per report kept.
pub const MAX_REPEATED: usize = 64;
/// Longest element name accepted (DMARC names are short; this bounds quick-xml's name stack).
const MAX_NAME_BYTES: usize = 1024;
/// Problems listed per report; more are counted in one final entry.
const MAX_PROBLEMS: usize = 100;

/// What one document gave, besides the records passed to the callback.
#[derive(Debug, Clone, Default)]
pub struct ReportParse {
    pub meta: ReportMeta,
    /// Records passed to the callback.
    pub records: u64,
    /// Unreadable records, truncated values or a broken tail (records before it were delivered).
    pub problems: Vec<Skipped>,
}

/// Why [`parse_report`] gave no report, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The document is not a usable report (permanent: the same bytes give the same answer).
    #[error("{0}")]
    Skip(SkipReason),
    /// `on_record` failed; parsing stopped.
    #[error("writing rows failed: {0}")]
    Sink(io::Error),
    /// Reading the input failed before any record was delivered.
    #[error("reading the report failed: {0}")]
    Input(io::Error),
}

/// Parses one XML document, calling `on_record` for each readable record (see the module doc).
pub fn parse_report<R: BufRead>(
    reader: R,
    limits: &Limits,
    on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
) -> Result<ReportParse, ReportError> {
    parse_report_in_blocks(reader, limits, INPUT_BLOCK, on_record)
}

/// [`parse_report`], reading the input `block` bytes at a time. Public for the tests that
/// check a report gives the same result whatever the block size (every event then straddles
/// a window boundary for some size); callers use [`parse_report`].
#[doc(hidden)]
pub fn parse_report_in_blocks<R: BufRead>(
    reader: R,
    limits: &Limits,
    block: usize,
    on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
) -> Result<ReportParse, ReportError> {
    let budget = event_budget(limits);
    let input = Input::open(reader, budget).map_err(ReportError::Input)?;
    let mut window = Window::new(input, budget, block.max(1));
    let mut parser = Parser::new(limits);
    loop {
        let step = match window.refill() {
            Ok(()) => window.parse_events(&mut parser, on_record),
            Err(halt) => Err(halt),
        };
        match step {
            // The window ran out in the middle of an event: read more, resume at that event.
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => return parser.finish(on_record),
            Err(halt) => return parser.fail(halt, on_record),
        }
    }
}

/// The whitespace (as XML defines it: space, tab, CR, LF) `bytes` starts with.
fn leading_whitespace(bytes: &[u8]) -> &[u8] {
    let len = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    &bytes[..len]
}

/// [`parse_report`] on a document already in memory. The rule, UTF-8 without a DOCTYPE, is
/// parsed in place (no copy at all); anything else goes the general way. Same result as
/// [`parse_report`] on the same bytes.
pub fn parse_report_bytes(
    bytes: &[u8],
    limits: &Limits,
    on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
) -> Result<ReportParse, ReportError> {
    let sniffed = &bytes[..bytes.len().min(SNIFF_BYTES as usize)];
    let (encoding, skip) = sniff_encoding(sniffed);
    let body = &bytes[skip..];
    // What `Input` looks at for a DOCTYPE: the first `SNIFF_BYTES` after the BOM.
    let head = &body[..body.len().min(SNIFF_BYTES as usize)];
    if encoding.is_some() || doctype_start(head).is_some() {
        return parse_report(bytes, limits, on_record);
    }
    let mut parser = Parser::new(limits);
    match parse_slice(body, true, event_budget(limits), &mut parser, on_record) {
        Ok(_) => parser.finish(on_record),
        Err(halt) => parser.fail(halt, on_record),
    }
}

/// quick-xml's settings for every reader of a document (one per window).
fn configure(xml: &mut Reader<&[u8]>) {
    let config = xml.config_mut();
    // Whitespace-only text between tags (half the events of a pretty-printed report) is
    // skipped inside quick-xml; what a value needs of it is handed back (`parse_slice`).
    config.trim_text_start = true;
    config.trim_text_end = false;
    // A reader resumes at an event in the middle of the document, without the names of the
    // elements open before it: the parser checks end tags itself (see `Parser::check_end`).
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.expand_empty_elements = false;
    // A stray `&` (`AT&T`) in a value is kept as written instead of failing the report.
    config.allow_dangling_amp = true;
}

/// Largest single XML event (tag, text run, comment, DTD) read into memory.
fn event_budget(limits: &Limits) -> usize {
    (limits.max_field_bytes.saturating_mul(16)).max(1024 * 1024)
}

/// One event (tag, text run, comment) larger than the budget: refused before it is all read.
fn over_budget(budget: usize) -> Halt {
    Halt::Limit {
        limit: "max_field_bytes",
        value: budget as u64 + 1,
        max: budget as u64,
    }
}

fn halt_from_xml_error(err: quick_xml::Error) -> Halt {
    match err {
        quick_xml::Error::Io(io_err) => {
            Halt::Input(io::Error::new(io_err.kind(), io_err.to_string()))
        }
        other => Halt::Malformed(other.to_string()),
    }
}

/// Why parsing stopped before the end of `<feedback>`.
enum Halt {
    Sink(io::Error),
    Input(io::Error),
    Malformed(String),
    Limit {
        limit: &'static str,
        value: u64,
        max: u64,
    },
    /// Returned as is: nothing was or will be delivered.
    Reject(SkipReason),
}

enum Flow {
    Continue,
    Stop,
}

/// Where an element sits in a DMARC report; everything else is `Skip` (inside `<feedback>`) or
/// `Junk` (before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Junk,
    Skip,
    Feedback,
    Metadata,
    DateRange,
    Policy,
    Record,
    Row,
    PolicyEvaluated,
    Reason,
    Identifiers,
    AuthResults,
    Dkim,
    Spf,
    Field(Field),
}

/// A leaf element whose text is a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Version,
    OrgName,
    Email,
    ExtraContactInfo,
    ReportId,
    Begin,
    End,
    Error,
    Generator,
    PolicyDomain,
    Adkim,
    Aspf,
    P,
    Sp,
    Pct,
    Fo,
    Np,
    Testing,
    DiscoveryMethod,
    SourceIp,
    Count,
    Disposition,
    EvaluatedDkim,
    EvaluatedSpf,
    ReasonType,
    ReasonComment,
    HeaderFrom,
    EnvelopeFrom,
    EnvelopeTo,
    DkimDomain,
    DkimSelector,
    DkimResult,
    DkimHumanResult,
    SpfDomain,
    SpfScope,
    SpfResult,
    SpfHumanResult,
}

impl Field {
    /// Values from a closed vocabulary: compared case-insensitively, so stored lower-cased.
    fn is_enum_like(self) -> bool {
        use Field::*;
        matches!(
            self,
            Adkim
                | Aspf
                | P
                | Sp
                | Np
                | Testing
                | DiscoveryMethod
                | Disposition
                | EvaluatedDkim
                | EvaluatedSpf
                | ReasonType
                | DkimResult
                | SpfScope
                | SpfResult
        )
    }

    fn in_record(self) -> bool {
        use Field::*;
        matches!(
            self,
            SourceIp
                | Count
                | Disposition
                | EvaluatedDkim
                | EvaluatedSpf
                | ReasonType
                | ReasonComment
                | HeaderFrom
                | EnvelopeFrom
                | EnvelopeTo
                | DkimDomain
                | DkimSelector
                | DkimResult
                | DkimHumanResult
                | SpfDomain
                | SpfScope
                | SpfResult
                | SpfHumanResult
        )
    }

    /// Element path for problem locations.
    fn path(self) -> &'static str {
        use Field::*;
        match self {
            Version => "version",
            OrgName => "report_metadata/org_name",
            Email => "report_metadata/email",
            ExtraContactInfo => "report_metadata/extra_contact_info",
            ReportId => "report_metadata/report_id",
            Begin => "report_metadata/date_range/begin",
            End => "report_metadata/date_range/end",
            Error => "report_metadata/error",
            Generator => "report_metadata/generator",
            PolicyDomain => "policy_published/domain",
            Adkim => "policy_published/adkim",
            Aspf => "policy_published/aspf",
            P => "policy_published/p",
            Sp => "policy_published/sp",
            Pct => "policy_published/pct",
            Fo => "policy_published/fo",
            Np => "policy_published/np",
            Testing => "policy_published/testing",
            DiscoveryMethod => "policy_published/discovery_method",
            SourceIp => "row/source_ip",
            Count => "row/count",
            Disposition => "row/policy_evaluated/disposition",
            EvaluatedDkim => "row/policy_evaluated/dkim",
            EvaluatedSpf => "row/policy_evaluated/spf",
            ReasonType => "row/policy_evaluated/reason/type",
            ReasonComment => "row/policy_evaluated/reason/comment",
            HeaderFrom => "identifiers/header_from",
            EnvelopeFrom => "identifiers/envelope_from",
            EnvelopeTo => "identifiers/envelope_to",
            DkimDomain => "auth_results/dkim/domain",
            DkimSelector => "auth_results/dkim/selector",
            DkimResult => "auth_results/dkim/result",
            DkimHumanResult => "auth_results/dkim/human_result",
            SpfDomain => "auth_results/spf/domain",
            SpfScope => "auth_results/spf/scope",
            SpfResult => "auth_results/spf/result",
            SpfHumanResult => "auth_results/spf/human_result",
        }
    }
}

/// The node of a child element, from its parent's node and its local name.
fn child_node(parent: Node, local: &[u8]) -> Node {
    use Field as F;
    let field = match (parent, local) {
        (Node::Feedback, b"version") => F::Version,
        (Node::Feedback, b"report_metadata") => return Node::Metadata,
        (Node::Feedback, b"policy_published") => return Node::Policy,
        (Node::Feedback, b"record") => return Node::Record,
        (Node::Metadata, b"org_name") => F::OrgName,
        (Node::Metadata, b"email") => F::Email,
        (Node::Metadata, b"extra_contact_info") => F::ExtraContactInfo,
        (Node::Metadata, b"report_id") => F::ReportId,
        (Node::Metadata, b"date_range") => return Node::DateRange,
        (Node::Metadata, b"error") => F::Error,
        (Node::Metadata, b"generator") => F::Generator,
        (Node::DateRange, b"begin") => F::Begin,
        (Node::DateRange, b"end") => F::End,
        (Node::Policy, b"domain") => F::PolicyDomain,
        (Node::Policy, b"adkim") => F::Adkim,
        (Node::Policy, b"aspf") => F::Aspf,
        (Node::Policy, b"p") => F::P,
        (Node::Policy, b"sp") => F::Sp,
        (Node::Policy, b"pct") => F::Pct,
        (Node::Policy, b"fo") => F::Fo,
        (Node::Policy, b"np") => F::Np,
        (Node::Policy, b"testing") => F::Testing,
        (Node::Policy, b"discovery_method") => F::DiscoveryMethod,
        (Node::Record, b"row") => return Node::Row,
        (Node::Record, b"identifiers") => return Node::Identifiers,
        (Node::Record, b"auth_results") => return Node::AuthResults,
        (Node::Row, b"source_ip") => F::SourceIp,
        (Node::Row, b"count") => F::Count,
        (Node::Row, b"policy_evaluated") => return Node::PolicyEvaluated,
        (Node::PolicyEvaluated, b"disposition") => F::Disposition,
        (Node::PolicyEvaluated, b"dkim") => F::EvaluatedDkim,
        (Node::PolicyEvaluated, b"spf") => F::EvaluatedSpf,
        (Node::PolicyEvaluated, b"reason") => return Node::Reason,
        (Node::Reason, b"type") => F::ReasonType,
        (Node::Reason, b"comment") => F::ReasonComment,
        (Node::Identifiers, b"header_from") => F::HeaderFrom,
        (Node::Identifiers, b"envelope_from") => F::EnvelopeFrom,
        (Node::Identifiers, b"envelope_to") => F::EnvelopeTo,
        (Node::AuthResults, b"dkim") => return Node::Dkim,
        (Node::AuthResults, b"spf") => return Node::Spf,
        (Node::Dkim, b"domain") => F::DkimDomain,
        (Node::Dkim, b"selector") => F::DkimSelector,
        (Node::Dkim, b"result") => F::DkimResult,
        (Node::Dkim, b"human_result") => F::DkimHumanResult,
        (Node::Spf, b"domain") => F::SpfDomain,
        (Node::Spf, b"scope") => F::SpfScope,
        (Node::Spf, b"result") => F::SpfResult,
        (Node::Spf, b"human_result") => F::SpfHumanResult,
        _ => return Node::Skip,
    };
    Node::Field(field)
}

struct Parser<'l> {
    limits: &'l Limits,
    stack: Vec<Node>,
    /// Names of the open elements, end to end (`open_name_starts` marks where each begins),
    /// for the end tag check quick-xml cannot make here (see [`Window`]).
    open_names: Vec<u8>,
    open_name_starts: Vec<usize>,
    meta: ReportMeta,
    version: String,
    declares_dmarc2_namespace: bool,
    begin_text: Option<String>,
    end_text: Option<String>,
    metadata_closed: bool,
    policy_closed: bool,
    /// Metadata validated: records go straight to the callback.
    meta_ready: bool,
    /// Raw bytes of the value being read (bounded), and how many the value really had.
    text: Vec<u8>,
    text_total: usize,
    value_buf: String,
    /// Entries of the previous record's repeated lists, kept to be reused (their strings keep
    /// their allocations from record to record).
    spare: SpareEntries,
    record: Record,
    record_has_row: bool,
    /// `<record>` elements opened so far (1-based index of the current one).
    records_seen: u64,
    buffered: Vec<Record>,
    /// Text held by `buffered` (values can be large: bound the bytes, not only the count).
    buffered_bytes: usize,
    delivered: u64,
    problems: Vec<Skipped>,
    problems_dropped: u64,
    first_element: Option<String>,
    saw_nonblank: bool,
    feedback_seen: bool,
    feedback_closed: bool,
    /// Stopped on purpose (a limit) with the report still usable.
    stopped_early: bool,
}

impl<'l> Parser<'l> {
    fn new(limits: &'l Limits) -> Self {
        Parser {
            limits,
            stack: Vec::with_capacity(16),
            open_names: Vec::with_capacity(256),
            open_name_starts: Vec::with_capacity(16),
            meta: ReportMeta::default(),
            version: String::new(),
            declares_dmarc2_namespace: false,
            begin_text: None,
            end_text: None,
            metadata_closed: false,
            policy_closed: false,
            meta_ready: false,
            text: Vec::with_capacity(256),
            text_total: 0,
            value_buf: String::with_capacity(256),
            spare: SpareEntries::default(),
            record: Record::default(),
            record_has_row: false,
            records_seen: 0,
            buffered: Vec::new(),
            buffered_bytes: 0,
            delivered: 0,
            problems: Vec::new(),
            problems_dropped: 0,
            first_element: None,
            saw_nonblank: false,
            feedback_seen: false,
            feedback_closed: false,
            stopped_early: false,
        }
    }

    fn handle(
        &mut self,
        event: Event<'_>,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<Flow, Halt> {
        match event {
            Event::Start(start) => {
                let flow = self.open(&start)?;
                self.push_open_name(start.name().as_ref());
                Ok(flow)
            }
            Event::Empty(start) => match self.open(&start)? {
                Flow::Continue => self.close(on_record),
                Flow::Stop => Ok(Flow::Stop),
            },
            Event::End(end) => {
                self.check_end(end.name().as_ref())?;
                self.close(on_record)
            }
            Event::Text(text) => {
                self.note_text(&text);
                self.push_text(&text);
                Ok(Flow::Continue)
            }
            Event::CData(data) => {
                self.note_text(&data);
                self.push_text(&data);
                Ok(Flow::Continue)
            }
            Event::GeneralRef(reference) => {
                self.saw_nonblank = true;
                self.push_reference(&reference);
                Ok(Flow::Continue)
            }
            Event::Eof => Ok(Flow::Stop),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                self.saw_nonblank = true;
                Ok(Flow::Continue)
            }
        }
    }

    fn push_open_name(&mut self, name: &[u8]) {
        self.open_name_starts.push(self.open_names.len());
        self.open_names.extend_from_slice(name);
    }

    /// An end tag must close the element opened last: quick-xml's `check_end_names` check,
    /// with its error (and message).
    fn check_end(&mut self, name: &[u8]) -> Result<(), Halt> {
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).unwrap_or_default().to_string();
        let Some(start) = self.open_name_starts.pop() else {
            let error = IllFormedError::UnmatchedEndTag(text(name));
            return Err(Halt::Malformed(
                quick_xml::Error::IllFormed(error).to_string(),
            ));
        };
        let expected = &self.open_names[start..];
        if expected != name {
            let error = IllFormedError::MismatchedEndTag {
                expected: text(expected),
                found: text(name),
            };
            return Err(Halt::Malformed(
                quick_xml::Error::IllFormed(error).to_string(),
            ));
        }
        self.open_names.truncate(start);
        Ok(())
    }

    fn note_text(&mut self, bytes: &[u8]) {
        if !self.saw_nonblank && bytes.iter().any(|b| !b.is_ascii_whitespace()) {
            self.saw_nonblank = true;
        }
    }

    fn open(&mut self, start: &BytesStart<'_>) -> Result<Flow, Halt> {
        self.saw_nonblank = true;
        if self.stack.len() >= self.limits.max_xml_depth as usize {
            return Err(Halt::Limit {
                limit: "max_xml_depth",
                value: self.stack.len() as u64 + 1,
                max: u64::from(self.limits.max_xml_depth),
            });
        }
        // quick-xml keeps every open element's name to check end tags: bound them too.
        let name_len = start.name().as_ref().len();
        if name_len > MAX_NAME_BYTES {
            return Err(Halt::Limit {
                limit: "max_element_name_bytes",
                value: name_len as u64,
                max: MAX_NAME_BYTES as u64,
            });
        }
        let local = start.local_name();
        let local = local.as_ref();
        let node = match self.stack.last() {
            None | Some(Node::Junk) if !self.feedback_seen => {
                if self.first_element.is_none() {
                    self.first_element =
                        Some(String::from_utf8_lossy(start.name().as_ref()).into_owned());
                }
                if local == b"feedback" {
                    self.feedback_seen = true;
                    self.declares_dmarc2_namespace = declares_dmarc2_namespace(start);
                    Node::Feedback
                } else {
                    Node::Junk
                }
            }
            Some(parent) => child_node(*parent, local),
            None => Node::Skip,
        };
        let node = self.enter(node)?;
        self.stack.push(node);
        Ok(Flow::Continue)
    }

    /// Side effects of opening `node`; returns the node to push (`Skip` when over a bound).
    fn enter(&mut self, node: Node) -> Result<Node, Halt> {
        match node {
            Node::Record => {
                if self.records_seen >= self.limits.max_records_per_report {
                    self.problem(
                        String::new(),
                        SkipReason::LimitExceeded {
                            limit: "max_records_per_report".into(),
                            value: self.records_seen + 1,
                            max: self.limits.max_records_per_report,
                        },
                    );
                    self.stopped_early = true;
                    // Stop here: the records so far are the report's usable part.
                    return Err(Halt::Limit {
                        limit: "max_records_per_report",
                        value: self.records_seen + 1,
                        max: self.limits.max_records_per_report,
                    });
                }
                self.records_seen += 1;
                clear_record(&mut self.record, &mut self.spare);
                self.record_has_row = false;
            }
            Node::Row => self.record_has_row = true,
            Node::Dkim
                if !self.push_repeated(|r, s| (&mut r.dkim, &mut s.dkim), "auth_results/dkim") =>
            {
                return Ok(Node::Skip);
            }
            Node::Spf
                if !self.push_repeated(|r, s| (&mut r.spf, &mut s.spf), "auth_results/spf") =>
            {
                return Ok(Node::Skip);
            }
            Node::Reason
                if !self.push_repeated(
                    |r, s| (&mut r.reasons, &mut s.reasons),
                    "row/policy_evaluated/reason",
                ) =>
            {
                return Ok(Node::Skip);
            }
            Node::Field(Field::Error) if self.meta.errors.len() >= MAX_REPEATED => {
                self.too_many("report_metadata/error".into());
                return Ok(Node::Skip);
            }
            Node::Field(_) => {
                self.text.clear();
                self.text_total = 0;
            }
            _ => {}
        }
        Ok(node)
    }

    /// Appends a default entry to one of the record's repeated lists, unless it is full.
    /// Appends an empty entry (a spare one when there is) to one of the record's repeated
    /// lists, unless it is full.
    fn push_repeated<T: Reusable>(&mut self, lists: ListAndSpare<T>, path: &str) -> bool {
        let (items, spare) = lists(&mut self.record, &mut self.spare);
        if items.len() >= MAX_REPEATED {
            let location = format!("record {} {path}", self.records_seen);
            self.too_many(location);
            return false;
        }
        let entry = match spare.pop() {
            Some(mut entry) => {
                entry.reset();
                entry
            }
            None => T::default(),
        };
        items.push(entry);
        true
    }

    fn too_many(&mut self, location: String) {
        self.problem(
            location,
            SkipReason::LimitExceeded {
                limit: "max_repeated_elements".into(),
                value: MAX_REPEATED as u64 + 1,
                max: MAX_REPEATED as u64,
            },
        );
    }

    fn close(
        &mut self,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<Flow, Halt> {
        let Some(node) = self.stack.pop() else {
            return Ok(Flow::Continue);
        };
        match node {
            Node::Field(field) => self.store_field(field),
            Node::Metadata => {
                self.metadata_closed = true;
                self.ready_when_complete(on_record)?;
            }
            Node::Policy => {
                self.policy_closed = true;
                self.ready_when_complete(on_record)?;
            }
            Node::Record => self.finish_record(on_record)?,
            Node::Feedback => {
                self.feedback_closed = true;
                return Ok(Flow::Stop);
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn in_field(&self) -> bool {
        matches!(self.stack.last(), Some(Node::Field(_)))
    }

    /// Collects a value's bytes, skipping leading whitespace and keeping at most a little more
    /// than `max_field_bytes` (so a truncation can be noticed and cut on a char boundary).
    fn push_text(&mut self, bytes: &[u8]) {
        if !self.in_field() {
            return;
        }
        let bytes = if self.text.is_empty() {
            bytes.trim_ascii_start()
        } else {
            bytes
        };
        self.text_total = self.text_total.saturating_add(bytes.len());
        let room = self.text_cap().saturating_sub(self.text.len());
        self.text.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn text_cap(&self) -> usize {
        self.limits.max_field_bytes.saturating_add(4)
    }

    /// Only predefined entities and character references are expanded; anything else is kept
    /// literally as written (no DTD is ever consulted).
    fn push_reference(&mut self, reference: &BytesRef<'_>) {
        if !self.in_field() {
            return;
        }
        let mut utf8 = [0u8; 4];
        let expansion: &[u8] = if reference.is_char_ref() {
            match reference.resolve_char_ref() {
                Ok(Some(ch)) => ch.encode_utf8(&mut utf8).as_bytes(),
                _ => return,
            }
        } else {
            match &**reference {
                b"lt" => b"<",
                b"gt" => b">",
                b"amp" => b"&",
                b"apos" => b"'",
                b"quot" => b"\"",
                other => {
                    let mut literal = Vec::with_capacity(other.len() + 2);
                    literal.push(b'&');
                    literal.extend_from_slice(other);
                    literal.push(b';');
                    self.push_text(&literal);
                    return;
                }
            }
        };
        let expansion = expansion.to_vec();
        self.push_text(&expansion);
    }

    fn store_field(&mut self, field: Field) {
        let lower = field.is_enum_like();
        let capped = self.text_total > self.text_cap();
        let max = self.limits.max_field_bytes;
        // Most values are cleaned straight into the string they belong to (which keeps its
        // allocation from record to record); the others go through one scratch buffer.
        let slot = value_slot(field, &mut self.meta, &mut self.record, &mut self.version);
        let (truncated, scratch) = match slot {
            Some(dst) => {
                dst.clear();
                (clean_value(dst, &self.text, capped, max, lower), None)
            }
            None => {
                let mut value = std::mem::take(&mut self.value_buf);
                value.clear();
                (
                    clean_value(&mut value, &self.text, capped, max, lower),
                    Some(value),
                )
            }
        };
        if let Some(original) = truncated {
            let location = if field.in_record() {
                format!("record {} {}", self.records_seen, field.path())
            } else {
                field.path().to_string()
            };
            self.problem(
                location,
                SkipReason::LimitExceeded {
                    limit: "max_field_bytes".into(),
                    value: original.max(self.text_total) as u64,
                    max: self.limits.max_field_bytes as u64,
                },
            );
        }
        if let Some(value) = scratch {
            self.assign(field, &value);
            self.value_buf = value;
        }
    }

    /// Stores the fields that have no string of their own (see [`value_slot`]).
    fn assign(&mut self, field: Field, value: &str) {
        match field {
            Field::Begin => self.begin_text = Some(value.to_string()),
            Field::End => self.end_text = Some(value.to_string()),
            Field::Error => self.meta.errors.push(value.to_string()),
            Field::Pct => self.meta.policy.pct = Some(value.to_string()),
            // An entry of a repeated list over its bound is not kept (reported when opened).
            _ => {}
        }
    }

    fn finish_record(
        &mut self,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<(), Halt> {
        if !self.record_has_row {
            self.problem(
                String::new(),
                SkipReason::RecordUnreadable {
                    index: self.records_seen,
                    detail: "no <row> element".into(),
                },
            );
            return Ok(());
        }
        if self.meta_ready {
            on_record(&self.meta, &self.record).map_err(Halt::Sink)?;
            self.delivered += 1;
            return Ok(());
        }
        let cap = MAX_BUFFERED_RECORDS.min(self.limits.max_records_per_report);
        if self.buffered.len() as u64 >= cap {
            return Err(Halt::Limit {
                limit: "max_buffered_records",
                value: cap + 1,
                max: cap,
            });
        }
        let size = record_text_bytes(&self.record);
        if self.buffered_bytes.saturating_add(size) > MAX_BUFFERED_BYTES {
            return Err(Halt::Limit {
                limit: "max_buffered_bytes",
                value: (self.buffered_bytes + size) as u64,
                max: MAX_BUFFERED_BYTES as u64,
            });
        }
        self.buffered_bytes += size;
        self.buffered.push(std::mem::take(&mut self.record));
        Ok(())
    }

    /// Once both metadata and policy are read, validate the identity and flush buffered records.
    fn ready_when_complete(
        &mut self,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<(), Halt> {
        if self.metadata_closed && self.policy_closed && !self.meta_ready {
            self.make_ready(on_record)?;
        }
        Ok(())
    }

    fn make_ready(
        &mut self,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<(), Halt> {
        let (begin, end) = self
            .date_range()
            .map_err(|detail| Halt::Reject(SkipReason::ReportUnusable { detail }))?;
        self.meta.begin = begin;
        self.meta.end = end;
        self.meta.schema =
            if self.declares_dmarc2_namespace || self.version.trim_start().starts_with('2') {
                Schema::Rfc9990
            } else {
                Schema::Rfc7489
            };
        self.meta_ready = true;
        let buffered = std::mem::take(&mut self.buffered);
        for record in &buffered {
            on_record(&self.meta, record).map_err(Halt::Sink)?;
            self.delivered += 1;
        }
        Ok(())
    }

    fn date_range(&self) -> Result<(i64, i64), String> {
        let begin = epoch_seconds(self.begin_text.as_deref(), "begin")?;
        let end = epoch_seconds(self.end_text.as_deref(), "end")?;
        Ok((begin, end))
    }

    fn problem(&mut self, location: String, reason: SkipReason) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Skipped { location, reason });
        } else {
            self.problems_dropped += 1;
        }
    }

    /// End of input or of `</feedback>`.
    fn finish(
        mut self,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<ReportParse, ReportError> {
        if !self.feedback_seen {
            return Err(ReportError::Skip(self.not_a_report("")));
        }
        if !self.feedback_closed && !self.stopped_early {
            let open = self.open_element_name();
            return self.fail(
                Halt::Malformed(format!("document ends inside <{open}> (truncated)")),
                on_record,
            );
        }
        if !self.meta_ready {
            match self.make_ready(on_record) {
                Ok(()) => {}
                Err(halt) => return Err(self.error_for(halt)),
            }
        }
        Ok(self.into_parse())
    }

    /// Parsing stopped early: keep what was delivered when there is anything, else say why not.
    fn fail(
        mut self,
        halt: Halt,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<ReportParse, ReportError> {
        let halt = match halt {
            Halt::Sink(err) => return Err(ReportError::Sink(err)),
            Halt::Reject(reason) => return Err(ReportError::Skip(reason)),
            other => other,
        };
        if !self.feedback_seen {
            return Err(match halt {
                Halt::Malformed(detail) => ReportError::Skip(self.not_a_report(&detail)),
                other => self.error_for(other),
            });
        }
        // Records read before the break are complete: deliver them if the report is usable.
        if !self.meta_ready
            && self.date_range().is_ok()
            && let Err(Halt::Sink(err)) = self.make_ready(on_record)
        {
            return Err(ReportError::Sink(err));
        }
        if self.delivered == 0 {
            return Err(self.error_for(halt));
        }
        if !self.stopped_early {
            let reason = self.reason_for(halt);
            self.problem(String::new(), reason);
        }
        Ok(self.into_parse())
    }

    fn error_for(&self, halt: Halt) -> ReportError {
        match halt {
            Halt::Sink(err) => ReportError::Sink(err),
            Halt::Input(err) => ReportError::Input(err),
            other => ReportError::Skip(self.reason_for(other)),
        }
    }

    fn reason_for(&self, halt: Halt) -> SkipReason {
        match halt {
            Halt::Malformed(detail) => SkipReason::MalformedXml {
                detail,
                records_read: self.delivered,
            },
            Halt::Input(err) => SkipReason::MalformedXml {
                detail: format!("reading input failed: {err}"),
                records_read: self.delivered,
            },
            Halt::Sink(err) => SkipReason::MalformedXml {
                detail: format!("writing rows failed: {err}"),
                records_read: self.delivered,
            },
            Halt::Limit { limit, value, max } => SkipReason::LimitExceeded {
                limit: limit.into(),
                value,
                max,
            },
            Halt::Reject(reason) => reason,
        }
    }

    /// No `<feedback>`: decide between "not XML at all" and "XML, but not DMARC".
    fn not_a_report(&self, error: &str) -> SkipReason {
        let with_error = |what: &str| {
            if error.is_empty() {
                what.to_string()
            } else {
                format!("{what} ({error})")
            }
        };
        match &self.first_element {
            Some(root) => SkipReason::NotDmarcXml {
                detail: with_error(&format!("root element is <{root}>, no <feedback>")),
            },
            None if !self.saw_nonblank && error.is_empty() => SkipReason::NotAReport {
                detail: "empty document".into(),
            },
            None => SkipReason::NotAReport {
                detail: with_error("no XML element"),
            },
        }
    }

    fn open_element_name(&self) -> &'static str {
        match self.stack.last() {
            Some(Node::Field(field)) => field.path().rsplit('/').next().unwrap_or("feedback"),
            Some(Node::Record) => "record",
            Some(Node::Metadata) => "report_metadata",
            Some(Node::Policy) => "policy_published",
            _ if self.stack.contains(&Node::Record) => "record",
            _ => "feedback",
        }
    }

    fn into_parse(mut self) -> ReportParse {
        if self.problems_dropped > 0 {
            let total = self.problems.len() as u64 + self.problems_dropped;
            self.problems.push(Skipped {
                location: String::new(),
                reason: SkipReason::LimitExceeded {
                    limit: "problems_listed".into(),
                    value: total,
                    max: MAX_PROBLEMS as u64,
                },
            });
        }
        ReportParse {
            meta: self.meta,
            records: self.delivered,
            problems: self.problems,
        }
    }
}

fn declares_dmarc2_namespace(start: &BytesStart<'_>) -> bool {
    start.attributes().with_checks(false).flatten().any(|attr| {
        let key = attr.key.as_ref();
        (key == b"xmlns" || key.starts_with(b"xmlns:"))
            && attr.value.trim_ascii() == DMARC2_NAMESPACE
    })
}

/// Seconds since the epoch from `<begin>`/`<end>` text: an integer, nothing else.
fn epoch_seconds(text: Option<&str>, name: &str) -> Result<i64, String> {
    match text {
        None => Err(format!("no <date_range><{name}>")),
        Some("") => Err(format!("empty <date_range><{name}>")),
        Some(value) => value.parse::<i64>().map_err(|_| {
            let shown: String = value.chars().take(40).collect();
            format!("<date_range><{name}> is not an integer: {shown:?}")
        }),
    }
}

/// The string a field's value goes to, when it has one of its own: `None` for begin, end, pct
/// and error (see [`Parser::assign`]).
fn value_slot<'a>(
    field: Field,
    meta: &'a mut ReportMeta,
    record: &'a mut Record,
    version: &'a mut String,
) -> Option<&'a mut String> {
    use Field as F;
    let policy = &mut meta.policy;
    let slot = match field {
        F::Begin | F::End | F::Error | F::Pct => return None,
        F::Version => version,
        F::OrgName => &mut meta.org_name,
        F::Email => &mut meta.email,
        F::ExtraContactInfo => &mut meta.extra_contact_info,
        F::ReportId => &mut meta.report_id,
        F::Generator => &mut meta.generator,
        F::PolicyDomain => &mut policy.domain,
        F::Adkim => &mut policy.adkim,
        F::Aspf => &mut policy.aspf,
        F::P => &mut policy.p,
        F::Sp => &mut policy.sp,
        F::Fo => &mut policy.fo,
        F::Np => &mut policy.np,
        F::Testing => &mut policy.testing,
        F::DiscoveryMethod => &mut policy.discovery_method,
        F::SourceIp => &mut record.source_ip,
        F::Count => &mut record.count,
        F::Disposition => &mut record.disposition,
        F::EvaluatedDkim => &mut record.policy_dkim,
        F::EvaluatedSpf => &mut record.policy_spf,
        F::ReasonType => &mut record.reasons.last_mut()?.kind,
        F::ReasonComment => &mut record.reasons.last_mut()?.comment,
        F::HeaderFrom => &mut record.header_from,
        F::EnvelopeFrom => &mut record.envelope_from,
        F::EnvelopeTo => &mut record.envelope_to,
        F::DkimDomain => &mut record.dkim.last_mut()?.domain,
        F::DkimSelector => &mut record.dkim.last_mut()?.selector,
        F::DkimResult => &mut record.dkim.last_mut()?.result,
        F::DkimHumanResult => &mut record.dkim.last_mut()?.human_result,
        F::SpfDomain => &mut record.spf.last_mut()?.domain,
        F::SpfScope => &mut record.spf.last_mut()?.scope,
        F::SpfResult => &mut record.spf.last_mut()?.result,
        F::SpfHumanResult => &mut record.spf.last_mut()?.human_result,
    };
    Some(slot)
}

/// Approximate heap bytes of a record's text (plus a fixed cost per entry).
fn record_text_bytes(record: &Record) -> usize {
    const ENTRY: usize = 64;
    let strings = [
        &record.source_ip,
        &record.count,
        &record.disposition,
        &record.policy_dkim,
        &record.policy_spf,
        &record.header_from,
        &record.envelope_from,
        &record.envelope_to,
    ];
    let dkim: usize = record
        .dkim
        .iter()
        .map(|d| ENTRY + d.domain.len() + d.selector.len() + d.result.len() + d.human_result.len())
        .sum();
    let spf: usize = record
        .spf
        .iter()
        .map(|s| ENTRY + s.domain.len() + s.scope.len() + s.result.len() + s.human_result.len())
        .sum();
    let reasons: usize = record
        .reasons
        .iter()
        .map(|r| ENTRY + r.kind.len() + r.comment.len())
        .sum();
    std::mem::size_of::<Record>()
        + strings.iter().map(|s| s.len()).sum::<usize>()
        + dkim
        + spf
        + reasons
}

fn clear_record(record: &mut Record, spare: &mut SpareEntries) {
    record.source_ip.clear();
    record.count.clear();
    record.disposition.clear();
    record.policy_dkim.clear();
    record.policy_spf.clear();
    record.header_from.clear();
    record.envelope_from.clear();
    record.envelope_to.clear();
    spare.reasons.append(&mut record.reasons);
    spare.dkim.append(&mut record.dkim);
    spare.spf.append(&mut record.spf);
}

/// Picks one repeated list of a record and its spare entries.
type ListAndSpare<T> =
    for<'a> fn(&'a mut Record, &'a mut SpareEntries) -> (&'a mut Vec<T>, &'a mut Vec<T>);

/// Entries of repeated lists that a previous record used (at most `MAX_REPEATED` of each, as
/// no record holds more).
#[derive(Default)]
struct SpareEntries {
    reasons: Vec<OverrideReason>,
    dkim: Vec<DkimResult>,
    spf: Vec<SpfResult>,
}

/// An entry of a repeated list that can be emptied for reuse.
trait Reusable: Default {
    fn reset(&mut self);
}

impl Reusable for OverrideReason {
    fn reset(&mut self) {
        self.kind.clear();
        self.comment.clear();
    }
}

impl Reusable for DkimResult {
    fn reset(&mut self) {
        self.domain.clear();
        self.selector.clear();
        self.result.clear();
        self.human_result.clear();
    }
}

impl Reusable for SpfResult {
    fn reset(&mut self) {
        self.domain.clear();
        self.scope.clear();
        self.result.clear();
        self.human_result.clear();
    }
}

/// C0 controls other than tab, LF and CR are not allowed in XML 1.0; they are dropped.
fn is_forbidden_control(ch: char) -> bool {
    ch < ' ' && !matches!(ch, '\t' | '\n' | '\r')
}

/// Builds a value: invalid UTF-8 replaced, forbidden controls removed, trimmed, optionally
/// lower-cased, truncated to `max` bytes. Returns the untruncated length when it was cut.
fn clean_value(
    out: &mut String,
    raw: &[u8],
    raw_was_capped: bool,
    max: usize,
    lower: bool,
) -> Option<usize> {
    // Most values are short printable ASCII with nothing to trim or remove: copied as they are.
    if !raw_was_capped
        && raw.len() <= max
        && raw.iter().all(|b| (0x21..0x7f).contains(b) || *b == b' ')
        && raw.first() != Some(&b' ')
        && raw.last() != Some(&b' ')
    {
        let start = out.len();
        // Printable ASCII is UTF-8; the conversion cannot fail.
        out.push_str(std::str::from_utf8(raw).unwrap_or_default());
        if lower {
            out[start..].make_ascii_lowercase();
        }
        return None;
    }
    // Valid UTF-8 is the rule: check it with the fast validator before the lossy path.
    let text = match std::str::from_utf8(raw) {
        Ok(valid) => Cow::Borrowed(valid),
        Err(_) => String::from_utf8_lossy(raw),
    };
    // Forbidden controls are single bytes in UTF-8 (never inside a multi-byte sequence).
    let has_controls = raw
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'));
    let text: Cow<'_, str> = if has_controls {
        Cow::Owned(text.chars().filter(|c| !is_forbidden_control(*c)).collect())
    } else {
        text
    };
    let trimmed = text.trim();
    if lower && !trimmed.is_ascii() {
        out.push_str(&trimmed.to_lowercase());
    } else {
        out.push_str(trimmed);
        if lower {
            out.make_ascii_lowercase();
        }
    }
    if out.len() <= max && !raw_was_capped {
        return None;
    }
    let original = out.len();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    Some(original)
}

/// The document as UTF-8 bytes: encoding sniffed and transcoded, a prolog DOCTYPE cut out.
struct Input<R: BufRead> {
    /// Decoded bytes read ahead to cut out a DOCTYPE; served before `source`.
    head: Vec<u8>,
    head_pos: usize,
    source: Source<R>,
    /// A read error met after some bytes of a read: those bytes are parsed first (rows before
    /// a corrupt tail are kept), the error is returned by the next read.
    pending_error: Option<io::Error>,
    /// Largest DOCTYPE cut out here (a longer one is left to the event budget).
    budget: usize,
}

type Prefixed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

enum Source<R: BufRead> {
    /// Already UTF-8: read straight from the caller's reader (its prefix is in `head`).
    Utf8(R),
    Transcoded(Transcoder<Prefixed<R>>),
}

impl<R: BufRead> Input<R> {
    /// Reads a small prefix to find the encoding; it is served again before the rest.
    fn open(mut reader: R, budget: usize) -> io::Result<Self> {
        let mut prefix = Vec::with_capacity(SNIFF_BYTES as usize);
        (&mut reader).take(SNIFF_BYTES).read_to_end(&mut prefix)?;
        let (encoding, skip) = sniff_encoding(&prefix);
        let (head, source) = match encoding {
            None => {
                prefix.drain(..skip);
                (prefix, Source::Utf8(reader))
            }
            Some(encoding) => {
                let mut cursor = io::Cursor::new(prefix);
                cursor.set_position(skip as u64);
                let decoder = encoding.new_decoder_without_bom_handling();
                (
                    Vec::new(),
                    Source::Transcoded(Transcoder::new(cursor.chain(reader), decoder)),
                )
            }
        };
        let mut input = Input {
            head,
            head_pos: 0,
            source,
            pending_error: None,
            budget,
        };
        input.strip_doctype()?;
        Ok(input)
    }

    /// quick-xml ends a DOCTYPE at the first unbalanced `>`, so a `>` inside an entity value or
    /// a comment of the internal subset would break the document. The DTD is never used, so
    /// it is cut out here by a quote- and comment-aware scan of the prolog. A DOCTYPE longer
    /// than the event budget is left to quick-xml (and its budget).
    fn strip_doctype(&mut self) -> io::Result<()> {
        self.pull_head(SNIFF_BYTES as usize)?;
        let Some(start) = doctype_start(&self.head) else {
            return Ok(());
        };
        let mut want = self.head.len().max(8192);
        loop {
            if let Some(len) = doctype_len(&self.head[start..]) {
                self.head.drain(start..start + len);
                return Ok(());
            }
            let before = self.head.len();
            if before >= self.budget {
                return Ok(());
            }
            want = want.saturating_mul(2).min(self.budget);
            self.pull_head(want)?;
            if self.head.len() == before {
                return Ok(());
            }
        }
    }

    /// Moves decoded bytes from the source into `head` until it holds `len` bytes or the
    /// source ends.
    fn pull_head(&mut self, len: usize) -> io::Result<()> {
        while self.head.len() < len {
            let chunk = match &mut self.source {
                Source::Utf8(inner) => inner.fill_buf()?,
                Source::Transcoded(inner) => inner.fill_buf()?,
            };
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len().min(len - self.head.len());
            self.head.extend_from_slice(&chunk[..n]);
            match &mut self.source {
                Source::Utf8(inner) => inner.consume(n),
                Source::Transcoded(inner) => inner.consume(n),
            }
        }
        Ok(())
    }

    /// Appends up to `want` bytes to `dst` and returns how many; fewer than `want` only at
    /// the end of the input (or before an error, which the next call returns).
    fn read_into(&mut self, dst: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        if let Some(err) = self.pending_error.take() {
            return Err(err);
        }
        let from_head = (self.head.len() - self.head_pos).min(want);
        dst.extend_from_slice(&self.head[self.head_pos..self.head_pos + from_head]);
        self.head_pos += from_head;
        if self.head_pos == self.head.len() && self.head_pos > 0 {
            self.head = Vec::new();
            self.head_pos = 0;
        }
        let rest = (want - from_head) as u64;
        if rest == 0 {
            return Ok(from_head);
        }
        let before = dst.len();
        let read = match &mut self.source {
            Source::Utf8(inner) => inner.by_ref().take(rest).read_to_end(dst),
            Source::Transcoded(inner) => inner.by_ref().take(rest).read_to_end(dst),
        };
        let got = from_head + (dst.len() - before);
        match read {
            Err(err) if got == 0 => Err(err),
            Err(err) => {
                self.pending_error = Some(err);
                Ok(got)
            }
            Ok(_) => Ok(got),
        }
    }
}

/// The decoded document, parsed in place: quick-xml reads events straight out of this buffer
/// (borrowed, no copy per event), one reader per fill of the buffer.
///
/// An event that runs into the end of the bytes read so far may be cut short, so it is not
/// handled: the window slides to where that event starts, more input is read, and a new reader
/// resumes there. Between events quick-xml keeps only the names of open elements (for end tag
/// checks), which the parser keeps itself. One event may use at most `budget` bytes: a longer
/// one is refused before it is read whole.
struct Window<R: BufRead> {
    input: Input<R>,
    bytes: Vec<u8>,
    /// Start of the first event not handled yet.
    pos: usize,
    end_of_input: bool,
    budget: usize,
    block: usize,
}

impl<R: BufRead> Window<R> {
    fn new(input: Input<R>, budget: usize, block: usize) -> Self {
        Window {
            input,
            // Not zeroed: filled by `read_to_end`, which writes into spare capacity.
            bytes: Vec::with_capacity(block),
            pos: 0,
            end_of_input: false,
            budget,
            block,
        }
    }

    /// Drops the handled bytes and reads at least one more block (or to the end).
    fn refill(&mut self) -> Result<(), Halt> {
        if self.end_of_input {
            return Ok(());
        }
        self.bytes.drain(..self.pos);
        self.pos = 0;
        let want = self.block.max(self.bytes.capacity() - self.bytes.len());
        let got = self
            .input
            .read_into(&mut self.bytes, want)
            .map_err(Halt::Input)?;
        // Fewer bytes than asked for: the input ended, unless an error is pending (then the
        // next refill returns it).
        if got < want && self.input.pending_error.is_none() {
            self.end_of_input = true;
        }
        Ok(())
    }

    /// Handles every complete event in the window. `Continue`: the window needs more input.
    fn parse_events(
        &mut self,
        parser: &mut Parser<'_>,
        on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
    ) -> Result<Flow, Halt> {
        let bytes = &self.bytes[self.pos..];
        let (flow, resume_at) =
            parse_slice(bytes, self.end_of_input, self.budget, parser, on_record)?;
        self.pos += resume_at;
        Ok(flow)
    }
}

/// Hands every complete event of `bytes` to the parser. `Ok((Continue, at))`: the event at
/// `at` may be cut short by the end of `bytes` (only when more input may follow): read more and
/// resume there. `Ok((Stop, _))`: the document ended.
fn parse_slice(
    bytes: &[u8],
    end_of_input: bool,
    budget: usize,
    parser: &mut Parser<'_>,
    on_record: &mut dyn FnMut(&ReportMeta, &Record) -> io::Result<()>,
) -> Result<(Flow, usize), Halt> {
    let mut xml = Reader::from_reader(bytes);
    configure(&mut xml);
    loop {
        let start = xml.buffer_position() as usize;
        let event = xml.read_event();
        let end = xml.buffer_position() as usize;
        if end - start > budget {
            return Err(over_budget(budget));
        }
        // Possibly cut short by the end of the window (an error, too, may only mean "the rest
        // is not read yet"): read more and parse this event again. With more than a budget of
        // bytes after its start, an error is the document's own.
        if !end_of_input && (end >= bytes.len() || event.is_err()) && bytes.len() - start <= budget
        {
            return Ok((Flow::Continue, start));
        }
        if parser.in_field() {
            // Inside a value, whitespace quick-xml skipped before this event is text.
            let skipped = leading_whitespace(&bytes[start..end]);
            if !skipped.is_empty() {
                parser.push_text(skipped);
            }
        }
        let step = match event {
            Ok(event) => parser.handle(event, on_record),
            Err(err) => Err(halt_from_xml_error(err)),
        };
        match step {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => return Ok((Flow::Stop, end)),
            Err(halt) => return Err(halt),
        }
    }
}

/// Where a `<!DOCTYPE` starts in the prolog (before any element), if it does. Only the
/// markup starts (`<`) of the prolog are looked at: the scan ends at the first element.
fn doctype_start(head: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = head.get(from..)?.iter().position(|&b| b == b'<') {
        let at = from + offset;
        let rest = &head[at..];
        if rest
            .get(..9)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"<!DOCTYPE"))
        {
            return Some(at);
        }
        if rest
            .get(1)
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b >= 0x80)
        {
            return None; // an element: no DOCTYPE may follow
        }
        from = at + 1;
    }
    None
}

/// Length of the DOCTYPE declaration at the start of `bytes` (through its closing `>`), or
/// `None` when `bytes` ends before it does. Quoted strings, comments and processing
/// instructions inside the internal subset may hold `>`, `[` and `]`.
fn doctype_len(bytes: &[u8]) -> Option<usize> {
    let mut i = b"<!DOCTYPE".len();
    let mut in_subset = false;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                let close = bytes[i + 1..].iter().position(|&b| b == quote)?;
                i += close + 2;
                continue;
            }
            b'<' if in_subset && bytes[i..].starts_with(b"<!--") => {
                i += 4 + find(&bytes[i + 4..], b"-->")? + 3;
                continue;
            }
            b'<' if in_subset && bytes[i..].starts_with(b"<?") => {
                i += 2 + find(&bytes[i + 2..], b"?>")? + 2;
                continue;
            }
            b'[' if !in_subset => in_subset = true,
            b']' if in_subset => in_subset = false,
            b'>' if !in_subset => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The encoding to transcode from (`None` = already UTF-8) and the BOM length to skip.
fn sniff_encoding(prefix: &[u8]) -> (Option<&'static Encoding>, usize) {
    if let Some((encoding, bom_len)) = Encoding::for_bom(prefix) {
        return (Some(encoding).filter(|e| *e != UTF_8), bom_len);
    }
    match prefix {
        [b'<', 0, ..] => return (Some(UTF_16LE), 0),
        [0, b'<', ..] => return (Some(UTF_16BE), 0),
        _ => {}
    }
    // A declaration readable as ASCII rules out UTF-16 whatever it claims.
    match declared_encoding(prefix).and_then(Encoding::for_label) {
        Some(encoding) if encoding != UTF_8 && encoding != UTF_16LE && encoding != UTF_16BE => {
            (Some(encoding), 0)
        }
        _ => (None, 0),
    }
}

/// The `encoding` pseudo-attribute of a leading `<?xml …?>` declaration (single or double quotes).
fn declared_encoding(prefix: &[u8]) -> Option<&[u8]> {
    let rest = prefix.trim_ascii_start().strip_prefix(b"<?xml")?;
    let decl = &rest[..find(rest, b"?>")?];
    let after = &decl[find(decl, b"encoding")? + b"encoding".len()..];
    let value = after
        .trim_ascii_start()
        .strip_prefix(b"=")?
        .trim_ascii_start();
    let (&quote, value) = value.split_first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let close = value.iter().position(|&b| b == quote)?;
    Some(value[..close].trim_ascii())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Streaming conversion of a non-UTF-8 input to UTF-8 (malformed sequences become U+FFFD).
struct Transcoder<R: BufRead> {
    inner: R,
    decoder: Decoder,
    out: Vec<u8>,
    pos: usize,
    len: usize,
    finished: bool,
}

const TRANSCODE_CHUNK: usize = 8192;

impl<R: BufRead> Transcoder<R> {
    fn new(inner: R, decoder: Decoder) -> Self {
        let room = decoder
            .max_utf8_buffer_length(TRANSCODE_CHUNK)
            .unwrap_or(TRANSCODE_CHUNK * 4)
            .max(16);
        Transcoder {
            inner,
            decoder,
            out: vec![0; room],
            pos: 0,
            len: 0,
            finished: false,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let src = self.inner.fill_buf()?;
        let last = src.is_empty();
        let take = src.len().min(TRANSCODE_CHUNK);
        let (_, read, written, _) = self
            .decoder
            .decode_to_utf8(&src[..take], &mut self.out, last);
        self.inner.consume(read);
        self.pos = 0;
        self.len = written;
        if last {
            self.finished = true;
        } else if read == 0 && written == 0 {
            return Err(io::Error::other("transcoding made no progress"));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Transcoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Transcoder<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len && !self.finished {
            self.refill()?;
        }
        Ok(&self.out[self.pos..self.len])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_single_and_double_quoted_declared_encodings() {
        assert_eq!(
            declared_encoding(b"<?xml version='1.0' encoding='windows-1252'?><a/>"),
            Some(&b"windows-1252"[..])
        );
        assert_eq!(
            declared_encoding(b" <?xml version=\"1.0\" encoding = \"ISO-8859-1\" ?>"),
            Some(&b"ISO-8859-1"[..])
        );
        assert_eq!(declared_encoding(b"<?xml version=\"1.0\"?><a/>"), None);
        assert_eq!(declared_encoding(b"<feedback/>"), None);
    }

    #[test]
    fn utf16_declared_in_ascii_is_treated_as_utf8() {
        assert_eq!(
            sniff_encoding(b"<?xml version=\"1.0\" encoding=\"UTF-16\"?>").0,
            None
        );
        assert_eq!(sniff_encoding(b"\xEF\xBB\xBF<a/>"), (None, 3));
        assert_eq!(sniff_encoding(b"\xFF\xFE<\0").0, Some(UTF_16LE));
    }

    #[test]
    fn doctype_scan_skips_quotes_comments_and_the_subset() {
        let dtd = b"<!DOCTYPE f [<!-- > ] --><!ENTITY a \"x > ] y\"><?pi > ?>]>";
        assert_eq!(doctype_len(dtd), Some(dtd.len()));
        let mut longer = dtd.to_vec();
        longer.extend_from_slice(b"<f/>");
        assert_eq!(doctype_len(&longer), Some(dtd.len()));
        assert_eq!(doctype_len(b"<!DOCTYPE f SYSTEM 'a>b'>"), Some(25));
        assert_eq!(doctype_len(b"<!DOCTYPE f [<!ENTITY a \"x >"), None);
        assert_eq!(doctype_start(b"<?xml?>\n<!doctype f>"), Some(8));
        assert_eq!(doctype_start(b"<f><!DOCTYPE f>"), None);
    }

    #[test]
    fn cleans_values() {
        let mut out = String::new();
        assert_eq!(
            clean_value(&mut out, b"  Pass\x07\t\t", false, 100, true),
            None
        );
        assert_eq!(out, "pass");
        out.clear();
        assert_eq!(
            clean_value(&mut out, "h\u{e9}llo".as_bytes(), false, 2, false),
            Some(6)
        );
        assert_eq!(out, "h");
        out.clear();
        assert_eq!(clean_value(&mut out, b"bad\xd1", false, 100, false), None);
        assert_eq!(out, "bad\u{fffd}");
        // Plain ASCII values, taken as they are: inner spaces kept, enums lower-cased, the
        // length limit and an earlier cap still applied.
        out.clear();
        assert_eq!(
            clean_value(&mut out, b"Mail Ru Group", false, 13, false),
            None
        );
        assert_eq!(out, "Mail Ru Group");
        out.clear();
        assert_eq!(clean_value(&mut out, b"SoftFail", false, 100, true), None);
        assert_eq!(out, "softfail");
        out.clear();
        assert_eq!(clean_value(&mut out, b"abcdef", false, 4, false), Some(6));
        assert_eq!(out, "abcd");
        out.clear();
        assert_eq!(clean_value(&mut out, b"abc", true, 100, false), Some(3));
        assert_eq!(out, "abc");
        out.clear();
        assert_eq!(clean_value(&mut out, b"a\tb ", false, 100, false), None);
        assert_eq!(out, "a\tb");
    }
}
