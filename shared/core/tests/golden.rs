//! Golden files: the compatibility contract of the rows.
//!
//! Every file listed in tests/fixtures/corpus/inventory.tsv (reports, mails, containers, broken
//! and not-a-report inputs alike) goes through `parse_mail` with its relative path as the
//! source key; its TSV rows are compared with `tests/golden/<path>.tsv` and what was not used
//! (skipped parts, report problems) with `tests/golden/<path>.skipped.txt`.
//! `UPDATE_GOLDEN=1 cargo test -p dmarc-tsv-core --test golden` rewrites them; review the diff.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use dmarc_tsv_core::writer::{RowWriter, TsvWriter};
use dmarc_tsv_core::{MailOutcome, ParseOptions, ReportSink, RowView, parse_mail};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus_dir() -> PathBuf {
    repo().join("tests/fixtures/corpus")
}

fn golden_dir() -> PathBuf {
    repo().join("tests/golden")
}

/// Relative paths of all fixture files named by the inventory.
fn inventory() -> Vec<String> {
    let text = std::fs::read_to_string(corpus_dir().join("inventory.tsv")).expect("inventory");
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("inventory header")
        .split('\t')
        .collect();
    assert_eq!(
        header.first(),
        Some(&"file"),
        "inventory.tsv starts with a file column"
    );
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split('\t').next().unwrap_or_default().to_string())
        .collect()
}

struct TsvSink(TsvWriter<Vec<u8>>);

impl ReportSink for TsvSink {
    fn row(&mut self, row: &RowView<'_>) -> io::Result<()> {
        self.0.write_row(row)
    }
}

/// What a fixture gives: TSV rows, and one line per thing not used.
fn render(relative: &str) -> (String, String) {
    let bytes = std::fs::read(corpus_dir().join(relative)).expect("fixture bytes");
    let mut sink = TsvSink(TsvWriter::new(Vec::new()));
    let outcome = parse_mail(&bytes, relative, &ParseOptions::default(), &mut sink)
        .expect("a Vec sink never fails");
    let rows = String::from_utf8(sink.0.into_inner()).expect("rows are UTF-8");
    (rows, render_skipped(&outcome))
}

fn render_skipped(outcome: &MailOutcome) -> String {
    let mut out = String::new();
    for skipped in &outcome.skipped {
        let _ = writeln!(
            out,
            "skipped\t{}\t{}\t{}",
            skipped.reason.code(),
            skipped.location,
            skipped.reason
        );
    }
    for report in &outcome.reports {
        for problem in &report.problems {
            let _ = writeln!(
                out,
                "problem\t{}\t{}\t{}",
                problem.reason.code(),
                problem.location,
                problem.reason
            );
        }
    }
    if !outcome.is_usable() && outcome.skipped.is_empty() {
        out.push_str("unusable\twithout a reason\n");
    }
    out
}

#[test]
fn every_fixture_matches_its_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = inventory();
    assert!(files.len() > 100, "inventory lists the corpus");
    let mut failures = String::new();
    let mut failed = 0;
    for relative in &files {
        let (rows, skipped) = render(relative);
        for (suffix, actual) in [("tsv", &rows), ("skipped.txt", &skipped)] {
            let path = golden_dir().join(format!("{relative}.{suffix}"));
            if update {
                write_golden(&path, actual);
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_default();
            if &expected != actual {
                failed += 1;
                if failed <= 10 {
                    let _ = writeln!(
                        failures,
                        "--- {}\n+++ actual\n{}",
                        path.display(),
                        line_diff(&expected, actual)
                    );
                }
            }
        }
    }
    let expected: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .flat_map(|f| {
            ["tsv", "skipped.txt"].map(|suffix| golden_dir().join(format!("{f}.{suffix}")))
        })
        .collect();
    for stale in files_under(&golden_dir()) {
        if !expected.contains(&stale) {
            if update {
                std::fs::remove_file(&stale).expect("remove stale golden file");
            } else {
                failed += 1;
                let _ = writeln!(
                    failures,
                    "stale golden file (not in inventory): {}",
                    stale.display()
                );
            }
        }
    }
    assert!(
        failed == 0,
        "{failed} golden file(s) differ (rerun with UPDATE_GOLDEN=1 after reviewing):\n{failures}"
    );
}

/// Every bare aggregate-report XML fixture gives the same rows with LF and with CRLF line ends.
#[test]
fn lf_and_crlf_give_identical_rows() {
    let text = std::fs::read_to_string(corpus_dir().join("inventory.tsv")).expect("inventory");
    let mut checked = 0;
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 4 || !cols[2].starts_with("aggregate") || cols[3] != "xml" {
            continue;
        }
        let bytes = std::fs::read(corpus_dir().join(cols[0])).expect("fixture");
        let lf = replace_all(&bytes, b"\r\n", b"\n");
        let crlf = replace_all(&lf, b"\n", b"\r\n");
        let rows_of = |input: &[u8]| {
            let mut sink = TsvSink(TsvWriter::new(Vec::new()));
            let outcome = parse_mail(input, cols[0], &ParseOptions::default(), &mut sink)
                .expect("a Vec sink never fails");
            (sink.0.into_inner(), outcome.rows())
        };
        let (a, b) = (rows_of(&lf), rows_of(&crlf));
        assert_eq!(a, b, "{}: LF and CRLF differ", cols[0]);
        assert!(a.1 > 0, "{}: no rows", cols[0]);
        checked += 1;
    }
    assert!(checked > 50, "only {checked} XML fixtures checked");
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len() + haystack.len() / 16);
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn write_golden(path: &Path, content: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("golden dir");
    }
    std::fs::write(path, content).expect("write golden file");
}

/// A small unified-style line diff: common prefix and suffix trimmed, the middle aligned by a
/// longest common subsequence (plain -/+ when the middle is too large), 2 lines of context.
fn line_diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    let prefix = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_mid, new_mid) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );
    let mut out = format!(
        "@@ -{},{} +{},{} @@\n",
        prefix + 1,
        old_mid.len(),
        prefix + 1,
        new_mid.len()
    );
    for line in &old[prefix.saturating_sub(2)..prefix] {
        let _ = writeln!(out, " {line}");
    }
    for edit in align(old_mid, new_mid) {
        let _ = writeln!(out, "{edit}");
    }
    let tail_end = (old.len() - suffix + 2).min(old.len());
    for line in &old[old.len() - suffix..tail_end] {
        let _ = writeln!(out, " {line}");
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("\\ final newline differs\n");
    }
    out
}

fn align(old: &[&str], new: &[&str]) -> Vec<String> {
    const MAX_CELLS: usize = 4_000_000;
    if old.len().saturating_mul(new.len()) > MAX_CELLS {
        let mut edits: Vec<String> = old.iter().map(|l| format!("-{l}")).collect();
        edits.extend(new.iter().map(|l| format!("+{l}")));
        return edits;
    }
    // lcs[i][j] = LCS length of old[i..] and new[j..].
    let width = new.len() + 1;
    let mut lcs = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i * width + j] = if old[i] == new[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j, mut edits) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            edits.push(format!(" {}", old[i]));
            i += 1;
            j += 1;
        } else if i < old.len()
            && (j == new.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
        {
            edits.push(format!("-{}", old[i]));
            i += 1;
        } else {
            edits.push(format!("+{}", new[j]));
            j += 1;
        }
    }
    edits
}

#[test]
fn line_diff_marks_changed_lines() {
    let diff = line_diff("a\nb\nc\nd\n", "a\nB\nc\nd\ne\n");
    assert!(diff.contains("-b\n+B\n"), "{diff}");
    assert!(diff.contains("+e\n"), "{diff}");
    assert!(diff.starts_with("@@ -2,"), "{diff}");
}
