//! Finding reports in a mail: MIME walk (mail-parser), byte sniffing (zip, gzip, zlib, XML after an
//! optional BOM; headers and file names are only hints), bounded decompression (flate2, zip).
//! Owned by the extraction work; [`crate::mail::parse_mail`] composes it with [`crate::report`].
//!
//! [`extract`] walks every MIME part, attached message and container member, and hands every XML
//! document it finds to a [`DocumentVisitor`] as a *stream*: decompressed bytes are never
//! buffered whole (except a zip found inside gzip/zlib, which needs random access and is inflated
//! into a buffer bounded by the limits). Everything that is not handed over becomes a [`Skipped`].
//!
//! Every decompressed byte passes through one meter that enforces
//! [`Limits::max_attachment_bytes`] (all layers of one top-level part together) and
//! [`Limits::max_mail_decompressed_bytes`] (the whole mail): a stream stops at most one byte past
//! the limit, whatever sizes the container headers declare.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::sync::OnceLock;

use mail_parser::{
    Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};

use crate::error::{SkipReason, Skipped};
use crate::limits::Limits;

mod simple_mail;

use simple_mail::{Body, Leaf, SimpleMail};

/// How many leading bytes are looked at to decide what a stream holds.
const SNIFF_BYTES: usize = 4096;
/// Read buffer of the stream handed to the visitor. Small: the XML parser reads in larger
/// blocks of its own, which `BufReader` passes straight through to the decoder.
const STREAM_BUFFER: usize = 8 * 1024;
/// Decoded documents up to this size are read whole and parsed in place (every real report
/// but the largest); longer ones are streamed, so memory stays bounded.
const WHOLE_DOCUMENT: usize = 256 * 1024;
/// Longest file or member name kept in a location string.
const MAX_NAME_CHARS: usize = 120;
/// Smallest possible zip central directory entry: used to reject archives whose declared entry
/// count cannot fit in their bytes before the zip crate sizes a table from it.
const ZIP_CENTRAL_ENTRY_MIN: u64 = 46;

/// What the leading bytes of a payload say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `PK\x03\x04` (or the empty-archive `PK\x05\x06`).
    Zip,
    /// `1f 8b`.
    Gzip,
    /// zlib header `78 xx` with a valid FCHECK and no preset dictionary.
    Zlib,
    /// XML declaration, or an element whose first bytes mention `feedback`, after an optional
    /// UTF-8 BOM and whitespace.
    Xml,
    /// Starts with `<` but looks like other markup (an HTML body): a candidate only when it came
    /// from an attachment or a container, never from a text body.
    Markup,
    /// Starts with `{` after whitespace.
    Json,
    Empty,
    Other,
}

/// Decides what `prefix` (the first bytes of a payload) holds, by bytes alone.
pub fn sniff(prefix: &[u8]) -> Kind {
    match prefix {
        [] => return Kind::Empty,
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => return Kind::Zip,
        [0x1f, 0x8b, ..] => return Kind::Gzip,
        [0x78, flg, ..] if is_zlib_header(0x78, *flg) => return Kind::Zlib,
        // UTF-16 XML (byte order mark, or `<` as a 16-bit unit): the XML parser transcodes it.
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] | [b'<', 0, ..] | [0, b'<', ..] => return Kind::Xml,
        _ => {}
    }
    let text = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = text.get(start..).unwrap_or_default();
    match text.first() {
        None => Kind::Empty,
        Some(b'<') if starts_like_dmarc_xml(text) => Kind::Xml,
        Some(b'<') => Kind::Markup,
        Some(b'{') => Kind::Json,
        Some(_) => Kind::Other,
    }
}

/// RFC 1950: CM = 8 (deflate), FCHECK makes the 16-bit header a multiple of 31, FDICT clear.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0 && flg & 0x20 == 0
}

/// An XML declaration, or a first element whose local name is `feedback` (`<feedback>`,
/// `<ns1:feedback …>`). Other markup (HTML bodies) is not taken for a report.
fn starts_like_dmarc_xml(text: &[u8]) -> bool {
    let head = text.get(..5).unwrap_or(text);
    if head.eq_ignore_ascii_case(b"<?xml") {
        return true;
    }
    let name_end = text
        .iter()
        .skip(1)
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'))
        .map_or(text.len(), |end| end + 1);
    let name = text.get(1..name_end).unwrap_or_default();
    let local = name.rsplit(|&b| b == b':').next().unwrap_or_default();
    local.eq_ignore_ascii_case(b"feedback")
}

/// Whether `haystack` holds `needle`, ASCII case ignored. Candidates are found by a vectorised
/// search for each spelling of the needle's first two bytes (two spellings for every needle
/// here, which start with punctuation), so a 4 KiB XML prefix costs two passes and a few
/// comparisons instead of one stop per `<`.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    let [a, b, rest @ ..] = needle else {
        return needle.is_empty()
            || haystack
                .iter()
                .any(|byte| byte.eq_ignore_ascii_case(&needle[0]));
    };
    let (la, ua) = (a.to_ascii_lowercase(), a.to_ascii_uppercase());
    let (lb, ub) = (b.to_ascii_lowercase(), b.to_ascii_uppercase());
    let mut spellings = [[la, lb], [la, ub], [ua, lb], [ua, ub]];
    spellings.sort_unstable();
    spellings.iter().enumerate().any(|(i, start)| {
        let seen = i > 0 && spellings[i - 1] == *start;
        !seen
            && memchr::memmem::find_iter(haystack, start).any(|at| {
                haystack
                    .get(at + 2..at + needle.len())
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(rest))
            })
    })
}

/// What a visitor did with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visit {
    /// The document was used (the visitor recorded it, e.g. as a report).
    Used,
    /// The document was not used, for this reason.
    Skipped(SkipReason),
}

/// One XML candidate.
pub struct Document<'a> {
    /// Where it was found, e.g. `part 2 "report.zip" > member "a.xml"`.
    pub location: &'a str,
    /// The document's bytes (decompressed as they are read).
    pub reader: &'a mut dyn BufRead,
    /// The whole document, when it is in memory (most are): the same bytes `reader` gives,
    /// for a visitor that parses in place.
    pub bytes: Option<&'a [u8]>,
    meter: &'a Meter,
}

impl Document<'_> {
    /// Why the stream stopped early, if it did: a limit ([`SkipReason::LimitExceeded`]) or a
    /// corrupt container ([`SkipReason::CorruptGzip`], …). The XML parser only sees an I/O error;
    /// this names the real cause. Call it after reading.
    pub fn fault(&self) -> Option<SkipReason> {
        self.meter.fault.borrow().clone()
    }
}

/// Receives every XML document found in a mail.
pub trait DocumentVisitor {
    /// The mail's first To address (`unknown` when it has none), known once its headers are
    /// parsed and before any of its documents is visited. Not called for a bare report file.
    fn report_to(&mut self, _address: &str) {}
    /// Reads the document. `Err` aborts the whole extraction (a sink failure); bad input is
    /// [`Visit::Skipped`], never `Err`.
    fn document(&mut self, doc: Document<'_>) -> io::Result<Visit>;
}

/// Counters of one extraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Bytes produced by decompression (all layers, all parts), as counted against the limits.
    pub decompressed_bytes: u64,
    /// Documents handed to the visitor.
    pub documents: u32,
}

/// Result of [`extract`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extraction {
    /// `true` when the bytes were a bare report file rather than a mail.
    pub bare_file: bool,
    /// The mail's first To address; `unknown` when it has none; empty for a bare file.
    pub report_to: String,
    pub skipped: Vec<Skipped>,
    pub stats: ExtractStats,
}

/// A bare report file starts with container magic or XML/JSON; a mail starts with a header.
pub fn is_bare_report(bytes: &[u8]) -> bool {
    let prefix = bytes.get(..SNIFF_BYTES).unwrap_or(bytes);
    matches!(
        sniff(prefix),
        Kind::Zip | Kind::Gzip | Kind::Zlib | Kind::Xml | Kind::Markup | Kind::Json
    )
}

/// Finds every report document in `bytes` (a mail, or a bare report file) and streams each to
/// `visitor`. Only the visitor can fail the call.
pub fn extract(
    bytes: &[u8],
    limits: &Limits,
    visitor: &mut dyn DocumentVisitor,
) -> io::Result<Extraction> {
    extract_with(bytes, limits, visitor, MimeReading::SimpleShapesFirst)
}

/// How a mail's MIME structure is read. Both ways find the same parts in a mail of a simple
/// shape (see `simple_mail`): the choice exists so that tests can compare them.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MimeReading {
    /// A single-part mail or one multipart level of leaves is read directly; every other mail
    /// by mail-parser.
    SimpleShapesFirst,
    /// Every mail by mail-parser.
    MailParserOnly,
}

/// [`extract`], reading MIME structure as `reading` says.
#[doc(hidden)]
pub fn extract_with(
    bytes: &[u8],
    limits: &Limits,
    visitor: &mut dyn DocumentVisitor,
    reading: MimeReading,
) -> io::Result<Extraction> {
    let bare_file = is_bare_report(bytes);
    let meter = Meter::new(limits);
    let mut walker = Walker {
        limits,
        visitor,
        meter: &meter,
        reading,
        skipped: Vec::new(),
        candidates: 0,
        documents: 0,
    };
    let size = bytes.len() as u64;
    let report_to = if bytes.iter().all(u8::is_ascii_whitespace) {
        // Say "empty", not "no header found": a zero-byte upload is a common operator mistake.
        walker.record_skipped(
            "",
            SkipReason::NotAReport {
                detail: "empty input".into(),
            },
        );
        String::new()
    } else if size > limits.max_mail_bytes {
        let reason = limit_exceeded("max_mail_bytes", size, limits.max_mail_bytes);
        walker.record_skipped("", reason);
        if bare_file {
            String::new()
        } else {
            "unknown".to_string()
        }
    } else if bare_file {
        walker.payload(bytes, "file", &Hints::default(), 0)?;
        String::new()
    } else {
        walker.mail(bytes)?
    };
    Ok(Extraction {
        bare_file,
        report_to,
        stats: ExtractStats {
            decompressed_bytes: meter.mail_used.get(),
            documents: walker.documents,
        },
        skipped: walker.skipped,
    })
}

/// Only what extraction reads is parsed: the MIME headers and `To`. Every other header (a dozen
/// `Received:`, DKIM signatures, SES verdicts) is skipped without even keeping its raw text,
/// which is most of mail-parser's cost on a small report mail.
///
/// Built once per process: a parser is a table of header handlers, and building it for every
/// mail (and nested message) was a visible share of parsing a small report mail.
fn parser() -> &'static MessageParser {
    static PARSER: OnceLock<MessageParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .with_mime_headers()
            .header_address(HeaderName::To)
            .default_header_ignore()
    })
}

/// mail-parser is lenient and documented never to panic; a panic there would still be a bug in
/// a dependency that hostile input must not turn into a crashed batch, so it becomes "not a mail".
fn parse_message(bytes: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| parser().parse(bytes))
        .ok()
        .flatten()
}

/// `bytes` as a mail of one of the simple shapes, or `None` for mail-parser (a panic in the
/// header parsing it calls is treated as mail-parser's own panic would be: not this shape).
fn read_simple_mail(bytes: &[u8]) -> Option<SimpleMail<'_>> {
    std::panic::catch_unwind(|| simple_mail::read(bytes, parser()))
        .ok()
        .flatten()
}

/// Whether `bytes` is read as a mail of a simple shape, without mail-parser's body pass (for
/// tests that must know both ways were compared).
#[doc(hidden)]
pub fn reads_as_simple_mail(bytes: &[u8]) -> bool {
    !is_bare_report(bytes) && read_simple_mail(bytes).is_some()
}

fn first_to_address(message: &Message<'_>) -> String {
    message
        .to()
        .and_then(|to| to.iter().find_map(|addr| addr.address()))
        .map(|addr| addr.trim().to_string())
        .filter(|addr| !addr.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn limit_exceeded(limit: &str, value: u64, max: u64) -> SkipReason {
    SkipReason::LimitExceeded {
        limit: limit.to_string(),
        value,
        max,
    }
}

/// Content-Type and file name of a part: hints for messages, never for deciding the format.
#[derive(Debug, Default, Clone)]
struct Hints {
    content_type: String,
    name: String,
}

impl Hints {
    fn of(part: &MessagePart<'_>) -> Self {
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = part.attachment_name().map(clean_name).unwrap_or_default();
        Hints { content_type, name }
    }

    fn says_tlsrpt(&self) -> bool {
        self.content_type.contains("tlsrpt") || self.name.to_ascii_lowercase().contains("tlsrpt")
    }
}

/// A name safe to embed in a quoted location: no quotes or control characters, bounded length.
fn clean_name(name: &str) -> String {
    let is_clean = |c: char| !c.is_control() && c != '"';
    if name.len() <= MAX_NAME_CHARS && name.chars().all(is_clean) {
        return name.to_string();
    }
    name.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .take(MAX_NAME_CHARS)
        .collect()
}

fn join(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_string()
    } else {
        format!("{prefix} > {segment}")
    }
}

/// Shared by every reader of one mail: counts decompressed bytes against the limits and keeps
/// the first reason a stream failed (readers only return an `io::Error` to their caller).
struct Meter {
    mail_used: Cell<u64>,
    attachment_used: Cell<u64>,
    max_attachment: u64,
    max_mail: u64,
    fault: RefCell<Option<SkipReason>>,
}

/// Marker inside the `io::Error` a meter returns when a limit is hit.
#[derive(Debug)]
struct LimitHit;

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompression limit reached")
    }
}

impl std::error::Error for LimitHit {}

impl Meter {
    fn new(limits: &Limits) -> Self {
        Meter {
            mail_used: Cell::new(0),
            attachment_used: Cell::new(0),
            max_attachment: limits.max_attachment_bytes,
            max_mail: limits.max_mail_decompressed_bytes,
            fault: RefCell::new(None),
        }
    }

    fn start_attachment(&self) {
        self.attachment_used.set(0);
        self.clear_fault();
    }

    fn clear_fault(&self) {
        self.fault.replace(None);
    }

    fn take_fault(&self) -> Option<SkipReason> {
        self.fault.borrow_mut().take()
    }

    /// Bytes that may still be produced before a limit is passed.
    fn room(&self) -> u64 {
        let attachment = self
            .max_attachment
            .saturating_sub(self.attachment_used.get());
        let mail = self.max_mail.saturating_sub(self.mail_used.get());
        attachment.min(mail)
    }

    /// The mail budget was already passed by an earlier stream.
    fn mail_exhausted(&self) -> Option<SkipReason> {
        let used = self.mail_used.get();
        (used > self.max_mail)
            .then(|| limit_exceeded("max_mail_decompressed_bytes", used, self.max_mail))
    }

    /// Counts `n` produced bytes; the limit passed, if one was.
    fn add(&self, n: u64) -> Option<SkipReason> {
        let attachment = self.attachment_used.get().saturating_add(n);
        let mail = self.mail_used.get().saturating_add(n);
        self.attachment_used.set(attachment);
        self.mail_used.set(mail);
        if attachment > self.max_attachment {
            Some(limit_exceeded(
                "max_attachment_bytes",
                attachment,
                self.max_attachment,
            ))
        } else if mail > self.max_mail {
            Some(limit_exceeded(
                "max_mail_decompressed_bytes",
                mail,
                self.max_mail,
            ))
        } else {
            None
        }
    }

    fn record(&self, reason: SkipReason) {
        let mut fault = self.fault.borrow_mut();
        if fault.is_none() {
            *fault = Some(reason);
        }
    }
}

/// Which decoder a metered stream wraps: names the corruption when it fails.
#[derive(Debug, Clone, Copy)]
enum Layer {
    Gzip,
    Zlib,
    ZipMember,
}

impl Layer {
    fn corrupt(self, err: &io::Error) -> SkipReason {
        let detail = err.to_string();
        match self {
            Layer::Gzip => SkipReason::CorruptGzip { detail },
            Layer::Zlib => SkipReason::CorruptZlib { detail },
            Layer::ZipMember => SkipReason::CorruptZip { detail },
        }
    }
}

/// A decoder's output, counted: stops one byte past the limit, records why a read failed.
struct Metered<'m, R> {
    inner: R,
    layer: Layer,
    meter: &'m Meter,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(reason) = self.meter.mail_exhausted() {
            // An earlier attachment used the whole mail budget: refuse without reading.
            self.meter.record(reason);
            return Err(io::Error::other(LimitHit));
        }
        // Ask for at most one byte more than allowed: enough to know the limit is passed,
        // whatever size the container claims.
        let allowed = self.meter.room().saturating_add(1);
        let len = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let window = buf.get_mut(..len).unwrap_or_default();
        match self.inner.read(window) {
            Ok(n) => match self.meter.add(n as u64) {
                None => Ok(n),
                Some(reason) => {
                    self.meter.record(reason);
                    Err(io::Error::other(LimitHit))
                }
            },
            Err(err) => {
                let ours = err.get_ref().is_some_and(|e| e.is::<LimitHit>());
                if !ours && err.kind() != io::ErrorKind::Interrupted {
                    self.meter.record(self.layer.corrupt(&err));
                }
                Err(err)
            }
        }
    }
}

/// Reads up to `SNIFF_BYTES` from `reader` (several reads if the decoder returns little).
fn read_prefix(reader: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(SNIFF_BYTES);
    reader
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut prefix)
        .map(|_| prefix)
}

/// A short description of bytes that are not a report, for operators.
fn describe(prefix: &[u8], kind: Kind) -> String {
    match kind {
        Kind::Empty => "empty".to_string(),
        Kind::Markup => "markup that is not XML (HTML?)".to_string(),
        Kind::Json => "JSON that is not an SMTP TLS report".to_string(),
        _ => {
            let head = prefix.get(..32).unwrap_or(prefix);
            let printable = head
                .iter()
                .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
            if printable {
                let text = String::from_utf8_lossy(head);
                format!("text \"{}\"", clean_name(text.trim()))
            } else {
                let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("unknown bytes {}", hex.join(" "))
            }
        }
    }
}

/// JSON is an SMTP TLS report (RFC 8460) when labelled so or when it has the report's keys.
fn is_tls_report(prefix: &[u8], hints: &Hints) -> bool {
    hints.says_tlsrpt()
        || contains_ignore_case(prefix, b"\"policies\"")
        || contains_ignore_case(prefix, b"\"organization-name\"")
}

fn smtp_tls() -> SkipReason {
    SkipReason::UnsupportedReport {
        kind: "smtp-tls".into(),
    }
}

fn undecodable() -> SkipReason {
    SkipReason::NotAReport {
        detail: "transfer encoding could not be decoded".into(),
    }
}

fn forensic() -> SkipReason {
    SkipReason::UnsupportedReport {
        kind: "dmarc-failure (forensic)".into(),
    }
}

struct Walker<'a> {
    limits: &'a Limits,
    visitor: &'a mut dyn DocumentVisitor,
    /// Outside the walker so that readers can borrow it while the walker is borrowed mutably.
    meter: &'a Meter,
    reading: MimeReading,
    skipped: Vec<Skipped>,
    /// Parts that could hold a report (attachments, XML bodies, recognised other reports).
    candidates: u32,
    documents: u32,
}

impl Walker<'_> {
    fn record_skipped(&mut self, location: &str, reason: SkipReason) {
        self.skipped.push(Skipped {
            location: location.to_string(),
            reason,
        });
    }

    /// `true` (and a Skipped recorded) when `depth` passes the nesting limit.
    fn too_deep(&mut self, location: &str, depth: u32) -> bool {
        let max = self.limits.max_nesting_depth;
        if depth > max {
            self.record_skipped(
                location,
                limit_exceeded("max_nesting_depth", u64::from(depth), u64::from(max)),
            );
            return true;
        }
        false
    }

    /// Walks a whole mail; returns its first To address.
    fn mail(&mut self, bytes: &[u8]) -> io::Result<String> {
        if self.reading == MimeReading::SimpleShapesFirst
            && let Some(mut mail) = read_simple_mail(bytes)
        {
            let report_to = std::mem::take(&mut mail.report_to);
            self.visitor.report_to(&report_to);
            self.simple_mail(&mail)?;
            self.note_no_attachment();
            return Ok(report_to);
        }
        let Some(message) = parse_message(bytes) else {
            let detail = "no header found".to_string();
            self.record_skipped("", SkipReason::NotAMail { detail });
            return Ok("unknown".to_string());
        };
        // Rows carry the To address from their first record on: hand it over before the walk
        // (one header parse per mail, not a second one just for this).
        let report_to = first_to_address(&message);
        self.visitor.report_to(&report_to);
        self.message(&message, "", 0)?;
        self.note_no_attachment();
        Ok(report_to)
    }

    /// A mail in which nothing could hold a report, and nothing was skipped, says so.
    fn note_no_attachment(&mut self) {
        if self.candidates == 0 && self.skipped.is_empty() {
            self.record_skipped("", SkipReason::NoAttachment);
        }
    }

    /// The walk [`Walker::part`] makes over mail-parser's tree, over a simple mail's parts: the
    /// same locations, depths and handling of each leaf.
    fn simple_mail(&mut self, mail: &SimpleMail<'_>) -> io::Result<()> {
        let location = part_label("", &mail.root);
        if self.too_deep(&location, 0) {
            return Ok(());
        }
        match &mail.body {
            Body::Single(leaf) => self.simple_leaf(leaf, &location, &mail.root, 0),
            Body::Multipart(parts) => {
                for (index, (hints, leaf)) in parts.iter().enumerate() {
                    let location = part_label(&(index + 1).to_string(), hints);
                    if self.too_deep(&location, 1) {
                        continue;
                    }
                    self.simple_leaf(leaf, &location, hints, 1)?;
                }
                Ok(())
            }
        }
    }

    fn simple_leaf(
        &mut self,
        leaf: &Leaf<'_>,
        location: &str,
        hints: &Hints,
        depth: u32,
    ) -> io::Result<()> {
        if leaf.is_text {
            self.text_body(&leaf.content, location, hints, depth)
        } else {
            self.binary_part(&leaf.content, false, location, hints, depth)
        }
    }

    fn message(&mut self, message: &Message<'_>, prefix: &str, depth: u32) -> io::Result<()> {
        if message.parts.is_empty() {
            return Ok(());
        }
        self.part(message, 0, "", prefix, depth)
    }

    /// Walks part `id` of `message`; `section` is its IMAP-style number (`2.1`, empty for the
    /// message body itself).
    fn part(
        &mut self,
        message: &Message<'_>,
        id: usize,
        section: &str,
        prefix: &str,
        depth: u32,
    ) -> io::Result<()> {
        let Some(part) = message.parts.get(id) else {
            return Ok(());
        };
        let hints = Hints::of(part);
        let location = join(prefix, &part_label(section, &hints));
        if self.too_deep(&location, depth) {
            return Ok(());
        }
        match &part.body {
            PartType::Multipart(children) => {
                for (index, child) in children.iter().enumerate() {
                    let child_section = if section.is_empty() {
                        (index + 1).to_string()
                    } else {
                        format!("{section}.{}", index + 1)
                    };
                    // A part listing itself (or an ancestor) cannot come from mail-parser, but
                    // the depth limit would stop such a loop anyway.
                    self.part(message, *child as usize, &child_section, prefix, depth + 1)?;
                }
                Ok(())
            }
            PartType::Message(nested) => self.message(nested, &location, depth + 1),
            // mail-parser hands a part it could not decode (bad base64, an attached message it
            // could not parse) over as text: for a part that is not text, that is a broken
            // attachment, not a body.
            PartType::Text(_) | PartType::Html(_)
                if part.is_encoding_problem && !hints.content_type.starts_with("text/") =>
            {
                self.candidates += 1;
                self.record_skipped(&location, undecodable());
                Ok(())
            }
            PartType::Text(_) | PartType::Html(_) => {
                let bytes = original_bytes(message, part);
                self.text_body(&bytes, &location, &hints, depth)
            }
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                self.binary_part(bytes, part.is_encoding_problem, &location, &hints, depth)
            }
        }
    }

    /// Text bodies are reports only when their bytes are DMARC XML (or a labelled TLS report).
    fn text_body(
        &mut self,
        bytes: &[u8],
        location: &str,
        hints: &Hints,
        depth: u32,
    ) -> io::Result<()> {
        let prefix = bytes.get(..SNIFF_BYTES).unwrap_or(bytes);
        match sniff(prefix) {
            // An XHTML body also starts with `<?xml`: it is still an HTML body.
            Kind::Xml if !contains_ignore_case(prefix, b"<html") => {
                self.payload(bytes, location, hints, depth + 1)
            }
            Kind::Json if is_tls_report(prefix, hints) => {
                self.candidates += 1;
                self.record_skipped(location, smtp_tls());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `encoding_problem`: mail-parser could not decode the part and handed its raw bytes over.
    fn binary_part(
        &mut self,
        bytes: &[u8],
        encoding_problem: bool,
        location: &str,
        hints: &Hints,
        depth: u32,
    ) -> io::Result<()> {
        match hints.content_type.as_str() {
            "message/feedback-report" => {
                self.candidates += 1;
                self.record_skipped(location, forensic());
                Ok(())
            }
            // Headers of the original message in an ARF report: part of the forensic report.
            "text/rfc822-headers" => Ok(()),
            // Attached messages nested deeper than mail-parser itself recurses arrive as bytes.
            "message/rfc822" | "message/global" => match parse_message(bytes) {
                Some(nested) => self.message(&nested, location, depth + 1),
                None => self.payload(bytes, location, hints, depth + 1),
            },
            _ => {
                if encoding_problem
                    && sniff(bytes.get(..SNIFF_BYTES).unwrap_or(bytes)) == Kind::Other
                {
                    self.candidates += 1;
                    self.record_skipped(location, undecodable());
                    return Ok(());
                }
                self.payload(bytes, location, hints, depth + 1)
            }
        }
    }

    /// A top-level candidate: a decoded MIME part or a bare file. Starts a fresh attachment
    /// budget.
    fn payload(
        &mut self,
        bytes: &[u8],
        location: &str,
        hints: &Hints,
        depth: u32,
    ) -> io::Result<()> {
        self.candidates += 1;
        self.meter.start_attachment();
        if self.too_deep(location, depth) {
            return Ok(());
        }
        let prefix = bytes.get(..SNIFF_BYTES).unwrap_or(bytes);
        match sniff(prefix) {
            Kind::Zip => self.zip(bytes, location, depth + 1),
            // The bytes are in memory: the `bufread` decoders read them in place.
            Kind::Gzip => {
                let decoder = flate2::bufread::GzDecoder::new(bytes);
                self.stream(
                    metered(self.meter, decoder, Layer::Gzip),
                    location,
                    hints,
                    depth + 1,
                )
            }
            Kind::Zlib => {
                let decoder = flate2::bufread::ZlibDecoder::new(bytes);
                self.stream(
                    metered(self.meter, decoder, Layer::Zlib),
                    location,
                    hints,
                    depth + 1,
                )
            }
            Kind::Xml | Kind::Markup => self.visit_bytes(bytes, location),
            kind => self.not_xml(prefix, kind, location, hints),
        }
    }

    /// Output of a decoder: sniffed from its first bytes, then decoded further or streamed.
    fn stream(
        &mut self,
        mut reader: Box<dyn Read + '_>,
        location: &str,
        hints: &Hints,
        depth: u32,
    ) -> io::Result<()> {
        let prefix = match read_prefix(&mut reader) {
            Ok(prefix) => prefix,
            Err(err) => {
                let reason = self.meter.take_fault().unwrap_or(SkipReason::NotAReport {
                    detail: err.to_string(),
                });
                self.record_skipped(location, reason);
                return Ok(());
            }
        };
        if self.too_deep(location, depth) {
            return Ok(());
        }
        let kind = sniff(&prefix);
        if matches!(kind, Kind::Xml | Kind::Markup) {
            return self.xml_stream(prefix, reader, location);
        }
        let rest = Box::new(Cursor::new(prefix.clone()).chain(reader));
        match kind {
            Kind::Gzip => {
                let decoder = flate2::read::GzDecoder::new(rest);
                self.stream(
                    metered(self.meter, decoder, Layer::Gzip),
                    location,
                    hints,
                    depth + 1,
                )
            }
            Kind::Zlib => {
                let decoder = flate2::read::ZlibDecoder::new(rest);
                self.stream(
                    metered(self.meter, decoder, Layer::Zlib),
                    location,
                    hints,
                    depth + 1,
                )
            }
            Kind::Zip => self.zip_in_stream(rest, location, depth + 1),
            kind => self.not_xml(&prefix, kind, location, hints),
        }
    }

    /// Decoded XML: read whole into memory when it is not large (then parsed in place), else
    /// streamed. The bytes read before a failing read (a corrupt tail, a limit) are still
    /// parsed, then the failure is met, as when streaming.
    fn xml_stream(
        &mut self,
        mut bytes: Vec<u8>,
        mut reader: Box<dyn Read + '_>,
        location: &str,
    ) -> io::Result<()> {
        // One byte more than the room tells whether the document goes on.
        let room = (WHOLE_DOCUMENT as u64).saturating_sub(bytes.len() as u64) + 1;
        match (&mut reader).take(room).read_to_end(&mut bytes) {
            Ok(n) if (n as u64) < room => {
                drop(reader);
                self.visit_bytes(&bytes, location)
            }
            Ok(_) => {
                let stream = Box::new(Cursor::new(bytes).chain(reader));
                self.visit(stream, location, None)
            }
            Err(err) => {
                drop(reader);
                let fault = self.meter.take_fault();
                let stream = Box::new(Cursor::new(bytes).chain(FailedRead::from(err)));
                self.visit(stream, location, fault)
            }
        }
    }

    /// A zip inside a compressed stream needs random access: inflate it into a buffer, which
    /// the meter bounds (the stream's bytes are already counted).
    fn zip_in_stream(
        &mut self,
        mut reader: Box<dyn Read + '_>,
        location: &str,
        depth: u32,
    ) -> io::Result<()> {
        let mut buffer = Vec::new();
        if let Err(err) = reader.read_to_end(&mut buffer) {
            let reason = self.meter.take_fault().unwrap_or(SkipReason::CorruptZip {
                detail: err.to_string(),
            });
            self.record_skipped(location, reason);
            return Ok(());
        }
        drop(reader);
        self.zip(&buffer, location, depth)
    }

    /// Bytes that are no XML: a TLS report, or something else, is named.
    fn not_xml(
        &mut self,
        prefix: &[u8],
        kind: Kind,
        location: &str,
        hints: &Hints,
    ) -> io::Result<()> {
        match kind {
            Kind::Json if is_tls_report(prefix, hints) => {
                self.record_skipped(location, smtp_tls());
                Ok(())
            }
            kind => {
                let reason = SkipReason::NotAReport {
                    detail: describe(prefix, kind),
                };
                self.record_skipped(location, reason);
                Ok(())
            }
        }
    }

    /// A streamed document. `fault`: why reading it already failed, if it did (the parser meets
    /// the failure after the bytes before it).
    fn visit(
        &mut self,
        reader: Box<dyn Read + '_>,
        location: &str,
        fault: Option<SkipReason>,
    ) -> io::Result<()> {
        let mut buffered = BufReader::with_capacity(STREAM_BUFFER, reader);
        self.visit_document(location, &mut buffered, None, fault)
    }

    /// A document held whole in memory.
    fn visit_bytes(&mut self, bytes: &[u8], location: &str) -> io::Result<()> {
        let mut reader = bytes;
        self.visit_document(location, &mut reader, Some(bytes), None)
    }

    fn visit_document(
        &mut self,
        location: &str,
        reader: &mut dyn BufRead,
        bytes: Option<&[u8]>,
        fault: Option<SkipReason>,
    ) -> io::Result<()> {
        self.meter.clear_fault();
        if let Some(reason) = fault {
            self.meter.record(reason);
        }
        self.documents += 1;
        let doc = Document {
            location,
            reader,
            bytes,
            meter: self.meter,
        };
        let visit = self.visitor.document(doc)?;
        if let Visit::Skipped(reason) = visit {
            self.record_skipped(location, reason);
        }
        self.meter.clear_fault();
        Ok(())
    }

    /// Every member of a zip held in memory, each streamed from the archive.
    fn zip(&mut self, bytes: &[u8], location: &str, depth: u32) -> io::Result<()> {
        if let Err(detail) = check_zip_directory(bytes) {
            self.record_skipped(location, SkipReason::CorruptZip { detail });
            return Ok(());
        }
        let mut archive = match zip::ZipArchive::new(Cursor::new(bytes)) {
            Ok(archive) => archive,
            Err(err) => {
                let reason = SkipReason::CorruptZip {
                    detail: err.to_string(),
                };
                self.record_skipped(location, reason);
                return Ok(());
            }
        };
        let files = archive
            .file_names()
            .filter(|name| !name.ends_with('/') && !name.ends_with('\\'))
            .count();
        if files == 0 {
            let detail = "zip archive without files".to_string();
            self.record_skipped(location, SkipReason::NotAReport { detail });
            return Ok(());
        }
        let max_members = self.limits.max_zip_members as usize;
        for index in 0..archive.len() {
            if index >= max_members {
                let reason =
                    limit_exceeded("max_zip_members", archive.len() as u64, max_members as u64);
                self.record_skipped(location, reason);
                break;
            }
            self.zip_member(&mut archive, index, location, depth)?;
        }
        Ok(())
    }

    fn zip_member(
        &mut self,
        archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
        index: usize,
        location: &str,
        depth: u32,
    ) -> io::Result<()> {
        let declared_name = archive.name_for_index(index).map(clean_name);
        let member = match archive.by_index(index) {
            Ok(member) => member,
            Err(err) => {
                let name = declared_name;
                let label = format!("member {}", quoted_or_index(name, index));
                let reason = SkipReason::CorruptZip {
                    detail: err.to_string(),
                };
                self.record_skipped(&join(location, &label), reason);
                return Ok(());
            }
        };
        if member.is_dir() {
            return Ok(());
        }
        let name = clean_name(&String::from_utf8_lossy(member.name_raw()));
        let member_location = join(location, &format!("member \"{name}\""));
        let hints = Hints {
            content_type: String::new(),
            name,
        };
        self.meter.clear_fault();
        let reader = metered(self.meter, member, Layer::ZipMember);
        self.stream(reader, &member_location, &hints, depth)
    }
}

/// A read that already failed: gives its error (again on every call).
struct FailedRead {
    kind: io::ErrorKind,
    message: String,
}

impl From<io::Error> for FailedRead {
    fn from(err: io::Error) -> Self {
        FailedRead {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

impl Read for FailedRead {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(self.kind, self.message.clone()))
    }
}

fn metered<'r, R: Read + 'r>(meter: &'r Meter, inner: R, layer: Layer) -> Box<dyn Read + 'r> {
    Box::new(Metered {
        inner,
        layer,
        meter,
    })
}

fn quoted_or_index(name: Option<String>, index: usize) -> String {
    match name {
        Some(name) => format!("\"{name}\""),
        None => format!("#{}", index + 1),
    }
}

/// `part 2 "report.zip"`, `part 1.2 (text/xml)`, or `body` for a single-part message.
/// `body` or `part 2.1`, then the part's file name (quoted) or else its content type.
fn part_label(section: &str, hints: &Hints) -> String {
    let mut label = String::with_capacity(16 + hints.name.len().max(hints.content_type.len()));
    if section.is_empty() {
        label.push_str("body");
    } else {
        label.push_str("part ");
        label.push_str(section);
    }
    if !hints.name.is_empty() {
        label.push_str(" \"");
        label.push_str(&hints.name);
        label.push('"');
    } else if !hints.content_type.is_empty() {
        label.push_str(" (");
        label.push_str(&clean_name(&hints.content_type));
        label.push(')');
    }
    label
}

/// The body bytes of a text part before charset conversion (mail-parser converts text to UTF-8,
/// which would contradict an XML declaration such as `encoding="windows-1252"`). Falls back to
/// mail-parser's text when the raw range cannot be decoded.
fn original_bytes<'m>(
    message: &'m Message<'_>,
    part: &'m MessagePart<'_>,
) -> std::borrow::Cow<'m, [u8]> {
    let raw = message.raw_message();
    let range = part.offset_body as usize..part.offset_end as usize;
    let decoded = raw.get(range).and_then(|body| match part.encoding {
        Encoding::None => Some(std::borrow::Cow::Borrowed(body)),
        Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body).map(Into::into),
        Encoding::QuotedPrintable => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body).map(Into::into)
        }
    });
    decoded.unwrap_or_else(|| std::borrow::Cow::Borrowed(part.contents()))
}

/// Rejects a zip whose end-of-central-directory record declares more entries than its bytes
/// could hold, before the zip crate reserves a table sized from that count.
fn check_zip_directory(bytes: &[u8]) -> Result<(), String> {
    let Some(eocd) = find_eocd(bytes) else {
        return Ok(()); // let the zip crate report what is wrong
    };
    let entries16 = read_u16(bytes, eocd + 10).unwrap_or(0);
    let entries = if entries16 == u16::MAX {
        zip64_entries(bytes, eocd).unwrap_or(u64::from(entries16))
    } else {
        u64::from(entries16)
    };
    let size = bytes.len() as u64;
    if entries.saturating_mul(ZIP_CENTRAL_ENTRY_MIN) > size {
        return Err(format!(
            "central directory declares {entries} entries, more than {size} bytes can hold"
        ));
    }
    Ok(())
}

fn find_eocd(bytes: &[u8]) -> Option<usize> {
    const SIG: &[u8] = b"PK\x05\x06";
    let min_start = bytes.len().saturating_sub(22 + usize::from(u16::MAX));
    let last_start = bytes.len().checked_sub(22)?;
    (min_start..=last_start)
        .rev()
        .find(|&at| bytes.get(at..at + 4) == Some(SIG))
}

fn zip64_entries(bytes: &[u8], eocd: usize) -> Option<u64> {
    let locator = eocd.checked_sub(20)?;
    if bytes.get(locator..locator + 4)? != b"PK\x06\x07" {
        return None;
    }
    let record = usize::try_from(read_u64(bytes, locator + 8)?).ok()?;
    if bytes.get(record..record.checked_add(4)?)? != b"PK\x06\x06" {
        return None;
    }
    read_u64(bytes, record.checked_add(32)?)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_needles_whatever_their_case() {
        assert!(contains_ignore_case(b"<?xml?><HTML>", b"<html"));
        assert!(contains_ignore_case(b"<<HtMl", b"<html"));
        assert!(contains_ignore_case(b"{\"Policies\": []}", b"\"policies\""));
        assert!(!contains_ignore_case(b"<?xml?><feedback><htm", b"<html"));
        assert!(!contains_ignore_case(b"", b"<html"));
        assert!(contains_ignore_case(b"abc", b""));
        assert!(contains_ignore_case(b"x<hTmL", b"<html"));
        assert!(contains_ignore_case(b"xyzAB", b"ab"));
        assert!(contains_ignore_case(b"xyzaB", b"Ab"));
        assert!(contains_ignore_case(b"xyzB", b"b"));
        assert!(!contains_ignore_case(b"xyzA", b"ab"));
    }

    #[test]
    fn sniffs_by_bytes() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Kind::Zip);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Kind::Gzip);
        assert_eq!(sniff(&[0x78, 0x9c, 0]), Kind::Zlib);
        assert_eq!(sniff(&[0x78, 0x9d, 0]), Kind::Other);
        assert_eq!(sniff(b"\xEF\xBB\xBF \r\n<?xml version='1.0'?>"), Kind::Xml);
        assert_eq!(sniff(b"<feedback>"), Kind::Xml);
        assert_eq!(sniff(b"<ns1:feedback xmlns:ns1='x'>"), Kind::Xml);
        assert_eq!(sniff(b"<html><body>Preview</body></html>"), Kind::Markup);
        assert_eq!(sniff(b"<p>DMARC feedback for you</p>"), Kind::Markup);
        assert_eq!(sniff(b"<feedback"), Kind::Xml);
        assert_eq!(sniff(b" {\"policies\": []}"), Kind::Json);
        assert_eq!(sniff(b"unused"), Kind::Other);
        assert_eq!(sniff(b" \r\n"), Kind::Empty);
        assert_eq!(sniff(b""), Kind::Empty);
        assert_eq!(sniff(b"\xFF\xFE<\0?\0x\0"), Kind::Xml);
        assert_eq!(sniff(b"<\0f\0"), Kind::Xml);
    }

    #[test]
    fn zip_directory_check_rejects_impossible_entry_counts() {
        let mut eocd = b"PK\x05\x06".to_vec();
        eocd.extend_from_slice(&[0, 0, 0, 0]);
        eocd.extend_from_slice(&1000u16.to_le_bytes());
        eocd.extend_from_slice(&1000u16.to_le_bytes());
        eocd.extend_from_slice(&[0; 10]);
        assert!(check_zip_directory(&eocd).is_err());
        let mut ok = eocd.clone();
        ok[8..12].copy_from_slice(&[0, 0, 0, 0]);
        assert!(check_zip_directory(&ok).is_ok());
    }

    #[test]
    fn meter_names_the_limit_hit_first() {
        let limits = Limits {
            max_attachment_bytes: 10,
            max_mail_decompressed_bytes: 15,
            ..Limits::default()
        };
        let meter = Meter::new(&limits);
        assert_eq!(meter.add(10), None);
        assert!(
            matches!(meter.add(1), Some(SkipReason::LimitExceeded { limit, .. }) if limit == "max_attachment_bytes")
        );
        meter.start_attachment();
        assert_eq!(meter.room(), 4);
        assert!(
            matches!(meter.add(5), Some(SkipReason::LimitExceeded { limit, .. }) if limit == "max_mail_decompressed_bytes")
        );
    }
}
