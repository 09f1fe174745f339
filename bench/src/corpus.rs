//! The real aggregate reports of `tests/fixtures/corpus`, as XML templates for volume.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::xml_edit::element_text;

/// Templates stand for typical daily reports (a few to a few hundred records). The corpus' one
/// ~1 MB report would dominate set (a); large reports are what set (b) measures.
const MAX_TEMPLATE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no header line with the columns file, kind, container, parsedmarc")]
    BadInventory(PathBuf),
    #[error("{0}: no usable aggregate report template")]
    Empty(PathBuf),
}

/// One real aggregate report, decompressed, with the fields the generator rewrites present.
#[derive(Debug, Clone)]
pub struct Template {
    /// Path inside the corpus, for messages.
    pub name: String,
    pub xml: Vec<u8>,
    pub org_name: String,
    pub policy_domain: String,
    pub report_id: String,
}

/// The corpus shipped in the repository.
pub fn default_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/corpus")
}

/// Every distinct aggregate report that parsedmarc also accepts (so both tools get the same
/// work), stored as plain XML or gzip, with a report id and a date range to rewrite.
pub fn load_templates(corpus_dir: &Path) -> Result<Vec<Template>, CorpusError> {
    let inventory_path = corpus_dir.join("inventory.tsv");
    let inventory = read_file(&inventory_path)?;
    let inventory = String::from_utf8_lossy(&inventory);
    let mut lines = inventory.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(file), Some(kind), Some(container), Some(parsedmarc)) = (
        column("file"),
        column("kind"),
        column("container"),
        column("parsedmarc"),
    ) else {
        return Err(CorpusError::BadInventory(inventory_path));
    };

    let mut seen = HashSet::new();
    let mut templates = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let usable = field(kind).starts_with("aggregate")
            && field(parsedmarc).starts_with("ok:aggregate")
            && matches!(field(container), "xml" | "gzip+xml");
        if !usable {
            continue;
        }
        let path = corpus_dir.join(field(file));
        let raw = read_file(&path)?;
        let Some(xml) = decompress_if_gzip(&raw).filter(|x| x.len() as u64 <= MAX_TEMPLATE_BYTES)
        else {
            continue;
        };
        if let Some(template) = template_from(field(file), xml)
            && seen.insert(template.xml.clone())
        {
            templates.push(template);
        }
    }
    if templates.is_empty() {
        return Err(CorpusError::Empty(corpus_dir.to_path_buf()));
    }
    Ok(templates)
}

fn template_from(name: &str, xml: Vec<u8>) -> Option<Template> {
    let report_id = element_text(&xml, "report_id").filter(|id| !id.is_empty())?;
    element_text(&xml, "begin")?;
    element_text(&xml, "end")?;
    Some(Template {
        name: name.to_string(),
        org_name: element_text(&xml, "org_name").unwrap_or_default(),
        policy_domain: element_text(&xml, "domain").unwrap_or_default(),
        report_id,
        xml,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, CorpusError> {
    std::fs::read(path).map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Plain bytes as they are; gzip decompressed (bounded). `None` for a broken gzip.
fn decompress_if_gzip(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Some(raw.to_vec());
    }
    let mut out = Vec::new();
    GzDecoder::new(raw)
        .take(MAX_TEMPLATE_BYTES + 1)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_many_distinct_real_reports() {
        let templates = load_templates(&default_corpus_dir()).unwrap();
        assert!(templates.len() >= 30, "only {} templates", templates.len());
        let ids: HashSet<&str> = templates.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(ids.len(), templates.len());
        assert!(templates.iter().any(|t| t.name.ends_with(".gz")));
        assert!(templates.iter().all(|t| !t.report_id.is_empty()));
    }

    #[test]
    fn missing_corpus_is_an_error() {
        let err = load_templates(Path::new("/nonexistent/corpus")).unwrap_err();
        assert!(matches!(err, CorpusError::Io { .. }), "{err}");
    }
}
