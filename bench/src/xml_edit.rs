//! Tiny, byte-level edits of report XML: find or replace the text of the first element with a
//! given local name (any namespace prefix). Enough to give generated reports unique ids and
//! dates without re-serialising (and so without normalising away the templates' quirks).

use std::ops::Range;

/// Byte range of the text of the first `<name>` (or `<prefix:name>`) element, when it has an
/// opening and a closing tag.
pub fn element_text_range(doc: &[u8], local_name: &str) -> Option<Range<usize>> {
    let mut pos = 0;
    while let Some(offset) = doc[pos..].iter().position(|&b| b == b'<') {
        let tag_start = pos + offset + 1;
        pos = tag_start;
        let &first = doc.get(tag_start)?;
        if doc[tag_start..].starts_with(b"!--") {
            // Skip the whole comment: it may contain tags.
            let end = doc[tag_start..].windows(3).position(|w| w == b"-->")?;
            pos = tag_start + end + 3;
            continue;
        }
        if matches!(first, b'/' | b'?' | b'!') {
            continue;
        }
        let name_len = doc[tag_start..]
            .iter()
            .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')?;
        let name = &doc[tag_start..tag_start + name_len];
        let local = match name.iter().rposition(|&b| b == b':') {
            Some(colon) => &name[colon + 1..],
            None => name,
        };
        if local != local_name.as_bytes() {
            continue;
        }
        let close = tag_start + doc[tag_start..].iter().position(|&b| b == b'>')?;
        if doc[close - 1] == b'/' {
            return None; // <name/>: no text to replace
        }
        let text_start = close + 1;
        let text_len = doc[text_start..].windows(2).position(|w| w == b"</")?;
        return Some(text_start..text_start + text_len);
    }
    None
}

/// The trimmed text of the first element with that local name, lossily decoded.
pub fn element_text(doc: &[u8], local_name: &str) -> Option<String> {
    element_text_range(doc, local_name).map(|r| String::from_utf8_lossy(&doc[r]).trim().to_string())
}

/// A copy of `doc` with the first such element's text replaced; `None` when there is none.
pub fn replace_element_text(doc: &[u8], local_name: &str, value: &str) -> Option<Vec<u8>> {
    let range = element_text_range(doc, local_name)?;
    let mut out = Vec::with_capacity(doc.len() + value.len());
    out.extend_from_slice(&doc[..range.start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&doc[range.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = b"<?xml version=\"1.0\"?><!-- <report_id>no</report_id> -->\
        <feedback><report_metadata><org_name> Acme </org_name>\
        <ns1:report_id a=\"1\">abc</ns1:report_id></report_metadata></feedback>";

    #[test]
    fn finds_prefixed_elements_and_skips_comments_and_declarations() {
        assert_eq!(element_text(DOC, "report_id").as_deref(), Some("abc"));
        assert_eq!(element_text(DOC, "org_name").as_deref(), Some("Acme"));
        assert_eq!(element_text(DOC, "missing"), None);
    }

    #[test]
    fn replaces_only_the_text() {
        let out = replace_element_text(DOC, "report_id", "xyz-1").unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("<ns1:report_id a=\"1\">xyz-1</ns1:report_id>"),
            "{out}"
        );
        assert!(out.contains("<!-- <report_id>no</report_id> -->"));
    }

    #[test]
    fn self_closing_and_truncated_elements_give_none() {
        assert_eq!(
            element_text_range(b"<a><report_id/></a>", "report_id"),
            None
        );
        assert_eq!(element_text_range(b"<report_id>abc", "report_id"), None);
        assert_eq!(element_text_range(b"<", "report_id"), None);
    }
}
