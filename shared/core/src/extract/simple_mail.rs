//! The two shapes nearly every report mail has, read without mail-parser's body pass.
//!
//! mail-parser decodes every part as it parses a mail: base64 one byte at a time, and a UTF-8
//! copy of every text part. On a small report mail that pass was the largest single cost of
//! extraction (about an eighth of the time of a 3 KB SES mail), and an XML attachment labelled
//! `text/xml` was even base64-decoded twice (once by mail-parser, once from its raw bytes).
//!
//! Reporters overwhelmingly send either a single-part mail whose body is the report, or one
//! `multipart/*` level of leaf parts (a short text and the attachment). For those two shapes this
//! module only finds the header blocks and the delimiter lines, and decodes base64 with
//! base64-simd; every header field extraction reads is still parsed by mail-parser (handed those
//! fields alone), so `To`, content types, RFC 2231 file names and encodings mean exactly what they
//! mean on the general path.
//!
//! It declines (and the whole mail goes through mail-parser) whenever it is not certain to find
//! what mail-parser finds: a header line that is not `name: value` or a folded continuation, a
//! bare CR in a header, nested multiparts, attached messages, `multipart/digest`,
//! quoted-printable, a delimiter that is not alone at the start of a line, a part without headers
//! or with empty content, no close delimiter, or base64 that is not canonical (any character
//! outside the alphabet, padding in the middle, a partial group). The extraction tests
//! (`tests/extract_simple_shapes.rs`) and the `simple_shapes` fuzz target compare both readings
//! on every fixture mail and on mutated mails.

use std::borrow::Cow;

use base64_simd::STANDARD;
use mail_parser::{GetHeader, HeaderName, HeaderValue, MessageParser, MessagePart, MimeHeaders};

use super::{Hints, first_to_address};

/// The only header fields extraction reads. mail-parser is handed these alone: on a received
/// mail the dozen `Received:`, DKIM and SES verdict fields it would otherwise scan and look up
/// were most of its header time. Each field is parsed on its own, so leaving the others out
/// does not change what these mean.
const READ_FIELDS: [&[u8]; 4] = [
    b"to",
    b"content-type",
    b"content-transfer-encoding",
    b"content-disposition",
];

/// A mail of one of the two simple shapes, its parts located and decoded.
pub(super) struct SimpleMail<'a> {
    /// The first `To` address, as [`first_to_address`] reads it.
    pub report_to: String,
    /// Hints of the mail's root part (its own content type and name).
    pub root: Hints,
    pub body: Body<'a>,
}

pub(super) enum Body<'a> {
    /// The whole body is one leaf; its headers are the mail's.
    Single(Leaf<'a>),
    /// One multipart level; every part is a leaf with headers (and hints) of its own.
    Multipart(Vec<(Hints, Leaf<'a>)>),
}

/// A part that holds content, not other parts.
pub(super) struct Leaf<'a> {
    /// What mail-parser would have made of it: text (`text/*`, or no content type) or binary.
    pub is_text: bool,
    /// The content after transfer decoding (borrowed unless it was base64).
    pub content: Cow<'a, [u8]>,
}

/// What a header block says, read by mail-parser from the fields in [`READ_FIELDS`].
struct Fields {
    hints: Hints,
    shape: Shape,
    transfer: Transfer,
    /// The first `To` address: read for the mail's own header block only.
    report_to: Option<String>,
}

enum Shape {
    Text,
    Binary,
    /// `multipart/*` other than digest, with a non-empty boundary.
    Multipart {
        boundary: Vec<u8>,
    },
    /// Anything mail-parser reads as more than a leaf, or reads in a way not mirrored here.
    Declined,
}

enum Transfer {
    Identity,
    Base64,
    Declined,
}

/// Reads `mail` when it has one of the two simple shapes; `None` sends it to mail-parser whole.
pub(super) fn read<'a>(mail: &'a [u8], parser: &MessageParser) -> Option<SimpleMail<'a>> {
    let mut kept = Vec::with_capacity(256);
    let (root, body) = header_block(mail, parser, &mut kept, true)?;
    let body = match root.shape {
        Shape::Multipart { boundary } => {
            let mut leaves = Vec::new();
            for part in split_parts(body, &boundary)? {
                let (fields, content) = header_block(part, parser, &mut kept, false)?;
                let leaf = leaf(&fields, content)?;
                leaves.push((fields.hints, leaf));
            }
            Body::Multipart(leaves)
        }
        _ => Body::Single(leaf(&root, body)?),
    };
    Some(SimpleMail {
        report_to: root.report_to.unwrap_or_default(),
        root: root.hints,
        body,
    })
}

/// Splits `bytes` after its header block, whose fields extraction reads are parsed by
/// mail-parser (`kept` is scratch space for them); `of_mail` for the mail's own block.
fn header_block<'a>(
    bytes: &'a [u8],
    parser: &MessageParser,
    kept: &mut Vec<u8>,
    of_mail: bool,
) -> Option<(Fields, &'a [u8])> {
    kept.clear();
    let end = header_block_end(bytes, kept)?;
    // A block without any field read here still has to parse as headers on the general path.
    if kept.len() <= 2 {
        return None;
    }
    let headers = parser.parse_headers(kept.as_slice())?;
    let part = headers.parts.first()?;
    let fields = Fields {
        hints: Hints::of(part),
        shape: shape(part),
        transfer: transfer(part),
        report_to: of_mail.then(|| first_to_address(&headers)),
    };
    Some((fields, bytes.get(end..)?))
}

/// What mail-parser makes of a part with these headers (`mime_type` in its message parser).
fn shape(part: &MessagePart<'_>) -> Shape {
    match part.content_type() {
        // mail-parser's default for a part without a content type (outside a digest).
        None => Shape::Text,
        Some(ct) => match ct.ctype() {
            "text" => Shape::Text,
            // Parts of a digest default to message/rfc822: attached messages, not leaves.
            "multipart" if ct.subtype() == Some("digest") => Shape::Declined,
            "multipart" => match ct.attribute("boundary") {
                Some(boundary) if !boundary.is_empty() => Shape::Multipart {
                    boundary: boundary.as_bytes().to_vec(),
                },
                _ => Shape::Declined,
            },
            "message" => Shape::Declined,
            _ => Shape::Binary,
        },
    }
}

fn transfer(part: &MessagePart<'_>) -> Transfer {
    match part
        .headers
        .header_value(&HeaderName::ContentTransferEncoding)
    {
        Some(HeaderValue::Text(encoding)) if encoding.eq_ignore_ascii_case("base64") => {
            Transfer::Base64
        }
        Some(HeaderValue::Text(encoding)) if encoding.eq_ignore_ascii_case("quoted-printable") => {
            Transfer::Declined
        }
        _ => Transfer::Identity,
    }
}

/// Where the body starts: just past the empty line that ends the header block; the fields in
/// [`READ_FIELDS`] (and the empty line) are copied to `kept`. `None` unless every line before it
/// is a well-formed field (`name:` with a printable name) or a folded continuation with
/// something on it, and no line holds a bare CR.
fn header_block_end(bytes: &[u8], kept: &mut Vec<u8>) -> Option<usize> {
    let mut line_start = 0;
    let mut keeping = false;
    for newline in memchr::memchr_iter(b'\n', bytes) {
        let raw_line = &bytes[line_start..=newline];
        let line = &raw_line[..raw_line.len() - 1];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let first = line_start == 0;
        if line.is_empty() {
            if first || has_bare_cr(&bytes[..line_start]) {
                return None;
            }
            kept.extend_from_slice(raw_line);
            return Some(newline + 1);
        }
        match line[0] {
            b' ' | b'\t' if !first && line.iter().any(|b| !matches!(b, b' ' | b'\t')) => {}
            b' ' | b'\t' => return None,
            _ => keeping = is_read_field(field_name(line)?),
        }
        if keeping {
            kept.extend_from_slice(raw_line);
        }
        line_start = newline + 1;
    }
    None
}

/// A CR that does not end a line (mail-parser's header reading and ours could part ways).
fn has_bare_cr(block: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', block).any(|at| block.get(at + 1) != Some(&b'\n'))
}

/// The name of a field line `name: value`, when the name is printable ASCII without spaces
/// (RFC 5322 `ftext`).
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let end = line
        .iter()
        .position(|&b| b == b':' || !(33..=126).contains(&b))?;
    (end > 0 && line[end] == b':').then_some(&line[..end])
}

fn is_read_field(name: &[u8]) -> bool {
    READ_FIELDS
        .iter()
        .any(|read| read.eq_ignore_ascii_case(name))
}

/// The parts of a multipart body between its delimiter lines (RFC 2046 §5.1.1), each without
/// the line break that belongs to the next delimiter. `None` unless every occurrence of
/// `--boundary` up to the close delimiter starts a line and is followed by a line break (or
/// by `--`), there is at least one part, and the close delimiter is there.
fn split_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Vec<&'a [u8]>> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    for at in memchr::memmem::find_iter(body, &delimiter) {
        if at > 0 && body[at - 1] != b'\n' {
            return None;
        }
        let after = body.get(at + delimiter.len()..)?;
        let is_close = after.starts_with(b"--");
        let line_break = if is_close {
            0
        } else if after.starts_with(b"\r\n") {
            2
        } else if after.starts_with(b"\n") {
            1
        } else {
            return None;
        };
        if let Some(start) = part_start {
            let end = at - line_break_before(body, at);
            if end <= start {
                return None;
            }
            parts.push(body.get(start..end)?);
        }
        if is_close {
            return (!parts.is_empty()).then_some(parts);
        }
        part_start = Some(at + delimiter.len() + line_break);
    }
    None
}

/// Length of the line break just before `at` (0 at the start of the body).
fn line_break_before(body: &[u8], at: usize) -> usize {
    if at >= 2 && &body[at - 2..at] == b"\r\n" {
        2
    } else if at >= 1 && body[at - 1] == b'\n' {
        1
    } else {
        0
    }
}

/// A leaf part's kind and decoded content; `None` for what mail-parser reads as more than a
/// leaf (multiparts, attached messages) and for content it decodes leniently.
fn leaf<'a>(fields: &Fields, raw: &'a [u8]) -> Option<Leaf<'a>> {
    let is_text = match fields.shape {
        Shape::Text => true,
        Shape::Binary => false,
        Shape::Multipart { .. } | Shape::Declined => return None,
    };
    let content = match fields.transfer {
        Transfer::Identity => Cow::Borrowed(raw),
        Transfer::Base64 => Cow::Owned(decode_base64(raw)?),
        Transfer::Declined => return None,
    };
    Some(Leaf { is_text, content })
}

/// Canonical base64 in lines (LF or CRLF); anything else is left to mail-parser's lenient
/// decoder. Decoded a few KiB of symbols at a time, so that a large attachment costs its
/// decoded size and no second copy of its encoded text.
fn decode_base64(encoded: &[u8]) -> Option<Vec<u8>> {
    /// Symbols per decoding step: a multiple of 4, so that steps end on whole groups.
    const STEP: usize = 8 * 1024;
    let mut decoded = Vec::with_capacity(encoded.len() / 4 * 3 + 3);
    let mut symbols = Vec::with_capacity(STEP + 128);
    let mut line_start = 0;
    let lines = memchr::memchr_iter(b'\n', encoded).chain(std::iter::once(encoded.len()));
    for line_end in lines {
        // A full step with more lines to come is decoded now; padding ends the data, so in
        // such a step it is not canonical.
        if symbols.len() >= STEP {
            let whole = symbols.len() - symbols.len() % 4;
            if memchr::memchr(b'=', &symbols[..whole]).is_some() {
                return None;
            }
            STANDARD
                .decode_append(&symbols[..whole], &mut decoded)
                .ok()?;
            symbols.drain(..whole);
        }
        let line = encoded.get(line_start..line_end)?;
        symbols.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        line_start = line_end + 1;
    }
    STANDARD.decode_append(&symbols, &mut decoded).ok()?;
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_end_at_the_first_empty_line_of_well_formed_fields() {
        let mut kept = Vec::new();
        let block = b"Received: x\r\n y\r\nTo: a@b\r\n c\r\nCONTENT-TYPE: t/s\r\n\r\nbody";
        assert_eq!(header_block_end(block, &mut kept), Some(block.len() - 4));
        assert_eq!(kept, b"To: a@b\r\n c\r\nCONTENT-TYPE: t/s\r\n\r\n");
        kept.clear();
        assert_eq!(
            header_block_end(b"A: 1\n folded\n\nbody", &mut kept),
            Some(14)
        );
        assert_eq!(kept, b"\n");
        // What mail-parser might read differently is declined.
        for odd in [
            &b"\r\nbody"[..],
            b" A: 1\r\n\r\n",
            b"A: 1\r\n \r\n\r\n",
            b"A 1\r\n\r\n",
            b"A : 1\r\n\r\n",
            b"A: 1\rB: 2\r\n\r\n",
            b"From someone Mon Jan 1\r\nA: 1\r\n\r\n",
            b"A: 1\r\nB: 2\r\n",
        ] {
            let found = header_block_end(odd, &mut Vec::new());
            assert_eq!(found, None, "{}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn parts_lie_between_delimiter_lines() {
        let body =
            b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\nA: 2\n\ntwo\n--b--\r\nepilogue --b x";
        let parts = split_parts(body, b"b").unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\none"[..], b"A: 2\n\ntwo"]);
    }

    #[test]
    fn doubtful_delimiters_are_declined() {
        for odd in [
            &b"--b\r\nA: 1\r\n\r\none\r\n"[..],         // no close delimiter
            b"--b\r\nA: 1\r\n\r\none x--b\r\n--b--",    // delimiter inside a line
            b"--b \r\nA: 1\r\n\r\none\r\n--b--",        // transport padding
            b"--b\r\nA: 1\r\n\r\none\r\n--bc\r\n--b--", // a longer boundary
            b"--b\r\n--b\r\nA: 1\r\n\r\none\r\n--b--",  // an empty part
            b"--b--\r\n",                               // no part at all
        ] {
            assert_eq!(
                split_parts(odd, b"b"),
                None,
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
    }

    #[test]
    fn only_canonical_base64_is_decoded_here() {
        assert_eq!(decode_base64(b"Zm9v\r\nYmFy\r\n").unwrap(), b"foobar");
        assert_eq!(decode_base64(b"Zm9vYg==\n").unwrap(), b"foob");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        // Long enough to be decoded in several steps, in lines of 76 and of odd lengths.
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let text = STANDARD.encode_to_string(&data);
        for line in [76, 60, 57, 1000] {
            let lines: Vec<&str> = text
                .as_bytes()
                .chunks(line)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let joined = lines.join("\r\n");
            let got = decode_base64(joined.as_bytes());
            assert_eq!(got.as_deref(), Some(&data[..]), "lines of {line}");
        }
        // Padding inside a step that is not the last is refused, as at the end of a line.
        // (A step of 8,192 symbols ending in `QQ==` would decode on its own.)
        let mut padded_early = "QUJD\r\n".repeat(2047);
        padded_early.push_str("QQ==\r\nQUJD\r\n");
        assert_eq!(decode_base64(padded_early.as_bytes()), None);
        let canonical = padded_early.replace("QQ==", "QUJD");
        assert_eq!(
            decode_base64(canonical.as_bytes()).unwrap(),
            b"ABC".repeat(2049)
        );
        for odd in [&b"Zm9 v"[..], b"Zm9vYg", b"Zg==Zm9v", b"Zm9v-", b"Zh=="] {
            assert_eq!(decode_base64(odd), None, "{}", String::from_utf8_lossy(odd));
        }
    }
}
