//! What each stage did, as counters. Lambdas return parts of these as their JSON output and emit
//! them as metrics ([`RunSummary::metrics`] and friends give flat name/value pairs for EMF).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSummary {
    /// Mails read from storage (staged + quarantined).
    pub mails: u64,
    /// Reports staged.
    pub reports: u64,
    /// Rows staged.
    pub rows: u64,
    /// Mails quarantined (no usable report).
    pub quarantined: u64,
    /// Quarantined mails by their first reason's code.
    pub quarantined_by_reason: BTreeMap<String, u64>,
    /// Parts of usable mails not used, by reason code.
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// Messages that named no mail (test events, setup notifications): deleted.
    pub ignored: u64,
    /// Messages not understood: left on the queue for redelivery / the DLQ.
    pub foreign: u64,
    /// Mails already gone (archived by an earlier run): their messages were done.
    pub gone: u64,
    /// Messages left on the queue because of a transient or access error.
    pub left_for_retry: u64,
    /// Messages deleted from the queue.
    pub deleted_messages: u64,
    /// Staged objects written.
    pub staged_objects: u64,
    pub batches: u64,
    /// The drain stopped because it was told to (deadline), not because the queue ran dry.
    pub more: bool,
}

impl StageSummary {
    pub fn add(&mut self, o: &StageSummary) {
        self.mails += o.mails;
        self.reports += o.reports;
        self.rows += o.rows;
        self.quarantined += o.quarantined;
        merge(&mut self.quarantined_by_reason, &o.quarantined_by_reason);
        merge(&mut self.skipped_by_reason, &o.skipped_by_reason);
        self.ignored += o.ignored;
        self.foreign += o.foreign;
        self.gone += o.gone;
        self.left_for_retry += o.left_for_retry;
        self.deleted_messages += o.deleted_messages;
        self.staged_objects += o.staged_objects;
        self.batches += o.batches;
        self.more |= o.more;
    }

    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m = vec![
            ("Mails".to_string(), self.mails as f64),
            ("Reports".into(), self.reports as f64),
            ("RowsStaged".into(), self.rows as f64),
            ("Quarantined".into(), self.quarantined as f64),
            (
                "IgnoredMessages".into(),
                (self.ignored + self.foreign) as f64,
            ),
            ("LeftForRetry".into(), self.left_for_retry as f64),
        ];
        for (code, n) in &self.quarantined_by_reason {
            m.push((format!("Quarantined_{code}"), *n as f64));
        }
        for (code, n) in &self.skipped_by_reason {
            m.push((format!("Skipped_{code}"), *n as f64));
        }
        m
    }
}

fn merge(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Partitions with staged rows or an unfinished compaction (`YYYY-MM-DD`), at most 500.
    pub partitions: Vec<String>,
    pub more: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactSummary {
    pub partition: String,
    /// Output files written.
    pub files: u64,
    /// Rows written.
    pub rows: u64,
    /// Reports committed.
    pub reports: u64,
    /// Reports skipped because already committed (or repeated in the piece).
    pub duplicates: u64,
    /// Rows of those duplicate reports.
    pub duplicate_rows: u64,
    /// Staged objects consumed.
    pub staged_objects: u64,
    /// An interrupted compaction was finished.
    pub resumed: bool,
    /// Staged rows remain in this partition: call again.
    pub more: bool,
    /// Output keys written.
    pub outputs: Vec<String>,
}

impl CompactSummary {
    pub fn metrics(&self) -> Vec<(String, f64)> {
        vec![
            ("FilesWritten".into(), self.files as f64),
            ("RowsWritten".into(), self.rows as f64),
            ("DuplicateReports".into(), self.duplicates as f64),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSummary {
    /// Mails moved to the archive prefix (copied one by one, or written into a bundle).
    pub moved: u64,
    /// Bundle objects written (`-archiveformat mbox`; a bundle over the part size counts its parts).
    #[serde(default)]
    pub bundles: u64,
    /// Quarantined mails accounted for by the ledgers handled.
    pub quarantined: u64,
    /// Ledgers finished (deleted).
    pub ledgers: u64,
    /// Ledgers waiting for their partitions to be compacted.
    pub waiting: u64,
    /// Ledgers that could not be read (left in place, logged as errors).
    pub unreadable: u64,
    /// Stopped early: call again.
    pub more: bool,
}

impl ArchiveSummary {
    pub fn add(&mut self, o: &ArchiveSummary) {
        self.moved += o.moved;
        self.bundles += o.bundles;
        self.quarantined += o.quarantined;
        self.ledgers += o.ledgers;
        self.waiting = o.waiting;
        self.unreadable = o.unreadable;
        self.more = o.more;
    }
}

/// A whole run: drain, compact everything, archive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub stage: StageSummary,
    pub partitions: u64,
    pub files: u64,
    pub rows_written: u64,
    pub reports_committed: u64,
    pub duplicates: u64,
    pub duplicate_rows: u64,
    pub archive: ArchiveSummary,
    pub elapsed: Duration,
    /// Output keys written by this run, sorted.
    pub outputs: Vec<String>,
    /// The run stopped early (deadline): work remains.
    pub more: bool,
}

impl RunSummary {
    pub fn add_compaction(&mut self, c: &CompactSummary) {
        self.files += c.files;
        self.rows_written += c.rows;
        self.reports_committed += c.reports;
        self.duplicates += c.duplicates;
        self.duplicate_rows += c.duplicate_rows;
        self.outputs.extend(c.outputs.iter().cloned());
    }

    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut m = self.stage.metrics();
        m.extend([
            ("FilesWritten".to_string(), self.files as f64),
            ("RowsWritten".into(), self.rows_written as f64),
            ("DuplicateReports".into(), self.duplicates as f64),
            ("MailsMoved".into(), self.archive.moved as f64),
            ("Seconds".into(), self.elapsed.as_secs_f64()),
        ]);
        m
    }
}
