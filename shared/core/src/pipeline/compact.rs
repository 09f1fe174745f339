//! Compaction, one partition at a time: merge a bounded piece of staged objects into output files
//! of at most `maxrecords * 1024` rows, skipping reports already committed (manifests) or repeated.
//!
//! Order of writes: commit record (the exact plan) → output files → manifest → delete staged →
//! delete commit record. A crash before the commit record: nothing happened. After it: the next
//! call finishes the plan first (outputs are rebuilt byte for byte, or skipped once the manifest
//! exists, because staged objects are only deleted after the manifest).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::BufWriter;

use serde::{Deserialize, Serialize};

use super::Pipeline;
use super::error::PipelineError;
use super::events::MailRef;
use super::failpoint::hit;
use super::layout::{hash_parts, is_partition, partition_of};
use super::retry::retry;
use super::staged::{StagedHeader, StagedReader, WRITE_BUFFER, deterministic_gzip};
use super::summary::{CompactSummary, PlanSummary};
use crate::writer::{CsvWriter, Format, RowWriter};

/// Partitions returned by one plan call (Step Functions fans out over them).
pub const MAX_PARTITIONS_PER_PLAN: usize = 500;
/// Staged objects read by one compaction call, whatever their rows. High enough that pieces are
/// bounded by `compactrows` (full output files) rather than by many small staged objects; the
/// commit record lists them all (~100 bytes each).
pub const MAX_OBJECTS_PER_PIECE: usize = 20_000;
/// Compressed staged bytes held by one compaction call (keeps Lambda memory bounded).
pub const MAX_PIECE_BYTES: u64 = 256 << 20;

/// Rows of one staged report that go into one output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Index into [`CommitRecord::staged`].
    pub staged: usize,
    /// Report index inside that staged object.
    pub report: usize,
    pub first_row: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub key: String,
    pub rows: u64,
    pub segments: Vec<Segment>,
}

/// `state/commits/dt=D/<commit>.json`: the exact plan of one compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub v: u32,
    pub commit: String,
    pub partition: String,
    /// Staged keys consumed, sorted.
    pub staged: Vec<String>,
    pub files: Vec<PlannedFile>,
    /// Digests of the reports committed (first occurrences not seen before).
    pub digests: Vec<String>,
    pub duplicates: u64,
    pub duplicate_rows: u64,
    /// Mails of the committed reports.
    pub mails: Vec<MailRef>,
}

/// `state/manifests/dt=D/<commit>.json`: what a finished compaction committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u32,
    pub commit: String,
    pub partition: String,
    pub digests: Vec<String>,
    pub outputs: Vec<String>,
    pub mails: Vec<MailRef>,
}

/// Partitions with staged rows or an unfinished compaction, oldest first, at most 500.
pub fn plan_partitions(p: &Pipeline) -> Result<PlanSummary, PipelineError> {
    let mut partitions = BTreeSet::new();
    for root in [p.layout.staged_root(), p.layout.commits_root()] {
        let listed = retry(&p.retry, "list partitions", || p.data.list(&root))?;
        partitions.extend(listed.iter().filter_map(|o| partition_of(&root, &o.key)));
    }
    let more = partitions.len() > MAX_PARTITIONS_PER_PLAN;
    Ok(PlanSummary {
        partitions: partitions
            .into_iter()
            .take(MAX_PARTITIONS_PER_PLAN)
            .collect(),
        more,
    })
}

/// Compacts one bounded piece of one partition (or finishes an interrupted compaction of it).
/// Call again while `more` is true. Never run two of these on the same partition at once.
pub fn compact_partition(p: &Pipeline, partition: &str) -> Result<CompactSummary, PipelineError> {
    if !is_partition(partition) {
        return Err(PipelineError::BadInput(format!(
            "partition {partition:?} is not YYYY-MM-DD"
        )));
    }
    let commits = retry(&p.retry, "list commits", || {
        p.data.list(&p.layout.commit_prefix(partition))
    })?;
    let mut summary = CompactSummary {
        partition: partition.into(),
        ..CompactSummary::default()
    };
    if !commits.is_empty() {
        for c in &commits {
            resume(p, &c.key, &mut summary)?;
        }
        summary.resumed = true;
    } else {
        compact_piece(p, partition, &mut summary)?;
    }
    if !summary.more {
        let left = retry(&p.retry, "list staged", || {
            p.data.list(&p.layout.staged_prefix(partition))
        })?;
        summary.more = !left.is_empty();
    }
    p.hooks.compacted(&summary);
    Ok(summary)
}

/// A staged object read into memory (compressed) with its header.
struct Staged {
    key: String,
    bytes: Vec<u8>,
    header: StagedHeader,
}

fn compact_piece(
    p: &Pipeline,
    partition: &str,
    summary: &mut CompactSummary,
) -> Result<(), PipelineError> {
    let listed = retry(&p.retry, "list staged", || {
        p.data.list(&p.layout.staged_prefix(partition))
    })?;
    hit("compact.after_list")?;
    let (piece, more) = read_piece(p, partition, &listed)?;
    summary.more = more;
    if piece.is_empty() {
        return Ok(());
    }
    let seen = committed_digests(p, partition)?;
    let record = plan(p, partition, &piece, &seen);
    let json = serde_json::to_vec(&record)
        .map_err(|e| PipelineError::Permanent(format!("commit record: {e}")))?;
    let commit_key = p.layout.commit_key(partition, &record.commit);
    retry(&p.retry, "put commit record", || {
        p.data.put(&commit_key, &json)
    })?;
    hit("compact.after_commit_put")?;
    finish(p, &record, &piece, &commit_key, summary)
}

/// Reads staged objects in key order until `compactrows` rows, [`MAX_OBJECTS_PER_PIECE`] objects or
/// [`MAX_PIECE_BYTES`] (at least one object). Returns the piece and whether objects remain.
fn read_piece(
    p: &Pipeline,
    partition: &str,
    listed: &[super::store::ObjectInfo],
) -> Result<(Vec<Staged>, bool), PipelineError> {
    let mut piece = Vec::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for (i, obj) in listed.iter().enumerate() {
        let full = !piece.is_empty()
            && (rows >= p.settings.compactrows
                || piece.len() >= MAX_OBJECTS_PER_PIECE
                || bytes.saturating_add(obj.size) > MAX_PIECE_BYTES);
        if full {
            return Ok((piece, i < listed.len()));
        }
        let Some(staged) = get_staged(p, partition, &obj.key)? else {
            continue;
        };
        rows += staged.header.rows();
        bytes += staged.bytes.len() as u64;
        piece.push(staged);
    }
    Ok((piece, false))
}

fn get_staged(p: &Pipeline, partition: &str, key: &str) -> Result<Option<Staged>, PipelineError> {
    let Some(bytes) = retry(&p.retry, "get staged", || p.data.get(key))? else {
        return Ok(None);
    };
    let header = StagedReader::open(key, &bytes)?.header;
    if header.partition != partition {
        return Err(PipelineError::corrupt(
            key,
            format!("header says partition {}", header.partition),
        ));
    }
    Ok(Some(Staged {
        key: key.into(),
        bytes,
        header,
    }))
}

/// Every report digest committed in this partition so far.
fn committed_digests(p: &Pipeline, partition: &str) -> Result<HashSet<String>, PipelineError> {
    let prefix = p.layout.manifest_prefix(partition);
    let listed = retry(&p.retry, "list manifests", || p.data.list(&prefix))?;
    let mut seen = HashSet::new();
    for obj in listed {
        let Some(bytes) = retry(&p.retry, "get manifest", || p.data.get(&obj.key))? else {
            continue;
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| PipelineError::corrupt(&obj.key, e))?;
        seen.extend(m.digests);
    }
    Ok(seen)
}

/// The deterministic plan: reports in staged-key order, first occurrence wins, files filled to
/// `maxrecords * 1024` rows (a big report may span files).
fn plan(p: &Pipeline, partition: &str, piece: &[Staged], seen: &HashSet<String>) -> CommitRecord {
    let staged: Vec<String> = piece.iter().map(|s| s.key.clone()).collect();
    let per_file = p.settings.rows_per_file();
    let mut record = CommitRecord {
        v: 1,
        commit: String::new(),
        partition: partition.into(),
        staged,
        files: Vec::new(),
        digests: Vec::new(),
        duplicates: 0,
        duplicate_rows: 0,
        mails: Vec::new(),
    };
    let mut taken: HashSet<&str> = HashSet::new();
    let mut mails = BTreeSet::new();
    let mut current: Option<PlannedFile> = None;
    for (si, s) in piece.iter().enumerate() {
        for (ri, report) in s.header.reports.iter().enumerate() {
            if seen.contains(&report.digest) || !taken.insert(&report.digest) {
                tracing::info!(partition, report = %report.identity, "duplicate report skipped");
                record.duplicates += 1;
                record.duplicate_rows += report.rows;
                continue;
            }
            record.digests.push(report.digest.clone());
            mails.insert(report.mail.clone());
            let mut first_row = 0;
            while first_row < report.rows {
                let file = current.get_or_insert_with(|| PlannedFile {
                    key: String::new(),
                    rows: 0,
                    segments: Vec::new(),
                });
                let n = (report.rows - first_row).min(per_file - file.rows);
                file.segments.push(Segment {
                    staged: si,
                    report: ri,
                    first_row,
                    rows: n,
                });
                file.rows += n;
                first_row += n;
                if file.rows == per_file {
                    record.files.extend(current.take());
                }
            }
        }
    }
    record.files.extend(current.take());
    // The commit id covers what is committed, not only which objects: the same staged keys
    // rewritten with other reports (a redelivered batch parsed by a newer version) get their own
    // manifest instead of replacing the earlier one.
    let commit = hash_parts(record.staged.iter().chain(&record.digests), 16);
    record.commit = commit.clone();
    for (i, f) in record.files.iter_mut().enumerate() {
        let name = hash_parts([commit.as_str(), partition, &i.to_string()], 8);
        f.key = p.layout.output_key(partition, &name);
    }
    record.mails = mails.into_iter().collect();
    record
}

fn resume(
    p: &Pipeline,
    commit_key: &str,
    summary: &mut CompactSummary,
) -> Result<(), PipelineError> {
    let Some(bytes) = retry(&p.retry, "get commit record", || p.data.get(commit_key))? else {
        return Ok(());
    };
    let record: CommitRecord =
        serde_json::from_slice(&bytes).map_err(|e| PipelineError::corrupt(commit_key, e))?;
    tracing::info!(partition = %record.partition, commit = %record.commit, "finishing an interrupted compaction");
    let manifest_key = p.layout.manifest_key(&record.partition, &record.commit);
    if retry(&p.retry, "check manifest", || p.data.exists(&manifest_key))? {
        // Outputs and manifest are written: only the deletes remain.
        return delete_consumed(p, &record, commit_key, summary);
    }
    let mut piece = Vec::new();
    for key in &record.staged {
        match get_staged(p, &record.partition, key)? {
            Some(s) => piece.push(s),
            None => return roll_back(p, &record, commit_key),
        }
    }
    finish(p, &record, &piece, commit_key, summary)
}

/// A commit whose staged input vanished before its manifest was written cannot be rebuilt (only
/// possible if something outside the pipeline deleted staged objects). Its outputs are removed so
/// no row is left uncommitted, and the next call plans afresh.
fn roll_back(p: &Pipeline, record: &CommitRecord, commit_key: &str) -> Result<(), PipelineError> {
    tracing::error!(commit = %record.commit, "staged input of an unfinished compaction is gone: rolling it back");
    for f in &record.files {
        retry(&p.retry, "delete output", || p.data.delete(&f.key))?;
    }
    retry(&p.retry, "delete commit record", || {
        p.data.delete(commit_key)
    })?;
    Ok(())
}

/// Outputs, manifest, then the deletes.
fn finish(
    p: &Pipeline,
    record: &CommitRecord,
    piece: &[Staged],
    commit_key: &str,
    summary: &mut CompactSummary,
) -> Result<(), PipelineError> {
    let mut rows = RowCursor::new(piece);
    for file in &record.files {
        let body = build_output(p.settings.format, file, &mut rows)?;
        retry(&p.retry, "put output", || p.data.put(&file.key, &body))?;
        hit("compact.after_output_put")?;
    }
    if !record.digests.is_empty() || !record.files.is_empty() {
        let manifest = Manifest {
            v: 1,
            commit: record.commit.clone(),
            partition: record.partition.clone(),
            digests: record.digests.clone(),
            outputs: record.files.iter().map(|f| f.key.clone()).collect(),
            mails: record.mails.clone(),
        };
        let json = serde_json::to_vec(&manifest)
            .map_err(|e| PipelineError::Permanent(format!("manifest: {e}")))?;
        let key = p.layout.manifest_key(&record.partition, &record.commit);
        retry(&p.retry, "put manifest", || p.data.put(&key, &json))?;
        hit("compact.after_manifest_put")?;
    }
    delete_consumed(p, record, commit_key, summary)
}

fn delete_consumed(
    p: &Pipeline,
    record: &CommitRecord,
    commit_key: &str,
    summary: &mut CompactSummary,
) -> Result<(), PipelineError> {
    for key in &record.staged {
        retry(&p.retry, "delete staged", || p.data.delete(key))?;
        hit("compact.after_staged_delete")?;
    }
    retry(&p.retry, "delete commit record", || {
        p.data.delete(commit_key)
    })?;
    hit("compact.after_commit_delete")?;
    summary.files += record.files.len() as u64;
    summary.rows += record.files.iter().map(|f| f.rows).sum::<u64>();
    summary.reports += record.digests.len() as u64;
    summary.duplicates += record.duplicates;
    summary.duplicate_rows += record.duplicate_rows;
    summary.staged_objects += record.staged.len() as u64;
    summary
        .outputs
        .extend(record.files.iter().map(|f| f.key.clone()));
    Ok(())
}

fn build_output(
    format: Format,
    file: &PlannedFile,
    rows: &mut RowCursor<'_>,
) -> Result<Vec<u8>, PipelineError> {
    let io = |e: std::io::Error| PipelineError::Permanent(format!("writing {}: {e}", file.key));
    // Buffered: writers emit one small write per field, which the gzip encoder handles slowly.
    let gz = BufWriter::with_capacity(WRITE_BUFFER, deterministic_gzip());
    let buffered = match format {
        // Staged rows are already tab-separated in column order: copied line by line.
        Format::Tsv => copy_rows_as_tsv(file, rows, gz)?,
        Format::Csv => {
            let mut w = CsvWriter::new(gz).map_err(io)?;
            copy_rows(file, rows, &mut w)?;
            w.into_inner().map_err(io)?
        }
    };
    let encoder = buffered.into_inner().map_err(|e| io(e.into_error()))?;
    encoder.finish().map_err(io)
}

fn copy_rows_as_tsv<W: std::io::Write>(
    file: &PlannedFile,
    rows: &mut RowCursor<'_>,
    mut out: W,
) -> Result<W, PipelineError> {
    let mut line = Vec::with_capacity(1024);
    for seg in &file.segments {
        rows.seek(seg)?;
        for _ in 0..seg.rows {
            line.clear();
            rows.next_as_tsv(&mut line)?;
            out.write_all(&line)
                .map_err(|e| PipelineError::Permanent(format!("writing {}: {e}", file.key)))?;
        }
    }
    Ok(out)
}

fn copy_rows(
    file: &PlannedFile,
    rows: &mut RowCursor<'_>,
    w: &mut impl RowWriter,
) -> Result<(), PipelineError> {
    for seg in &file.segments {
        rows.seek(seg)?;
        for _ in 0..seg.rows {
            let fields = rows.next()?;
            w.write_fields(fields.iter().map(|f| f.as_ref()))
                .map_err(|e| PipelineError::Permanent(format!("writing {}: {e}", file.key)))?;
        }
    }
    Ok(())
}

/// Walks the rows of a piece forward only: segments come in (staged, report, row) order.
struct RowCursor<'a> {
    piece: &'a [Staged],
    reader: Option<(usize, StagedReader<&'a [u8]>)>,
    /// Position of the next row: report index and row within it.
    report: usize,
    row: u64,
}

impl<'a> RowCursor<'a> {
    fn new(piece: &'a [Staged]) -> Self {
        RowCursor {
            piece,
            reader: None,
            report: 0,
            row: 0,
        }
    }

    fn seek(&mut self, seg: &Segment) -> Result<(), PipelineError> {
        let staged = self.piece.get(seg.staged).ok_or_else(|| {
            PipelineError::BadInput(format!("commit plan names staged object #{}", seg.staged))
        })?;
        if self.reader.as_ref().map(|(i, _)| *i) != Some(seg.staged) {
            self.reader = Some((seg.staged, StagedReader::open(&staged.key, &staged.bytes)?));
            self.report = 0;
            self.row = 0;
        }
        let Some((_, reader)) = self.reader.as_mut() else {
            return Ok(());
        };
        if (seg.report, seg.first_row) < (self.report, self.row)
            || seg.report >= reader.header.reports.len()
        {
            return Err(PipelineError::corrupt(
                &staged.key,
                "commit plan out of order",
            ));
        }
        while (self.report, self.row) < (seg.report, seg.first_row) {
            if self.row >= reader.header.reports[self.report].rows {
                self.report += 1;
                self.row = 0;
                continue;
            }
            reader.skip_row()?;
            self.row += 1;
        }
        Ok(())
    }

    fn next_as_tsv(&mut self, out: &mut Vec<u8>) -> Result<(), PipelineError> {
        let Some((_, reader)) = self.reader.as_mut() else {
            return Err(PipelineError::BadInput("row read before seek".into()));
        };
        self.row += 1;
        reader.next_row_as_tsv(out)
    }

    fn next(&mut self) -> Result<Vec<Cow<'_, str>>, PipelineError> {
        let Some((_, reader)) = self.reader.as_mut() else {
            return Err(PipelineError::BadInput("row read before seek".into()));
        };
        self.row += 1;
        reader.next_row()
    }
}

/// Manifests of a partition, for tools and tests.
pub fn manifests(
    p: &Pipeline,
    partition: &str,
) -> Result<BTreeMap<String, Manifest>, PipelineError> {
    let prefix = p.layout.manifest_prefix(partition);
    let mut out = BTreeMap::new();
    for obj in retry(&p.retry, "list manifests", || p.data.list(&prefix))? {
        if let Some(bytes) = retry(&p.retry, "get manifest", || p.data.get(&obj.key))? {
            let m: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| PipelineError::corrupt(&obj.key, e))?;
            out.insert(obj.key, m);
        }
    }
    Ok(out)
}
