//! Stage (ingest): receive messages, read their mails, write staged rows per partition, then a
//! batch ledger, and only then delete the messages. A crash anywhere means a redo that rewrites
//! the same keys (the batch id is a hash of the batch's mails); repeats are removed at compaction.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::Pipeline;
use super::error::PipelineError;
use super::events::{Body, MailRef, parse_body};
use super::failpoint::hit;
use super::layout::{hash_parts, is_partition, yyyymmdd};
use super::queue::{Message, Queue, ReceiveOptions};
use super::retry::{retry, retry_after};
use flate2::Compression;

use super::staged::StagedBuilder;
use super::store::{ObjectStore, StoreError};
use super::summary::StageSummary;
use crate::columns::COLUMNS;
use crate::error::{SkipReason, Skipped};
use crate::mail::{ReportSink, parse_mail};
use crate::model::{ReportIdentity, ReportMeta, ReportSummary, RowView};

/// What became of one mail, as recorded in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailFate {
    Staged,
    Quarantined,
    /// Not found: already archived or quarantined by an earlier run.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMail {
    pub mail: MailRef,
    pub fate: MailFate,
    pub reports: u64,
    pub rows: u64,
    pub skipped: Vec<Skipped>,
}

/// `staging/ledger/<batch>.json`: what a batch staged, so archive knows when its mails may move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub v: u32,
    pub batch: String,
    /// UTC day the batch was staged (`YYYYMMDD`): names the folder of its archive bundle, so a
    /// rerun on a later day writes the same key. Absent in ledgers of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub staged: Vec<String>,
    pub mails: Vec<LedgerMail>,
}

/// The quarantine sidecar `<mail>.reason.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineReason {
    pub mail: MailRef,
    pub quarantined_at: String,
    /// Stable code of the first reason (what the summary counts).
    pub code: String,
    pub reasons: Vec<Skipped>,
}

/// Receives and ingests batches until `emptypolls` consecutive empty polls, or until
/// `should_stop` says so (a Lambda passes its deadline minus a margin; `more` is then true).
pub fn drain(
    p: &Pipeline,
    queue: &dyn Queue,
    should_stop: &dyn Fn() -> bool,
) -> Result<StageSummary, PipelineError> {
    let opts = ReceiveOptions {
        max_messages: p.settings.pollmessages,
        wait_seconds: p.settings.polltimeout,
        visibility_timeout_seconds: p.settings.sqsprocessingtime,
    };
    let mut total = StageSummary::default();
    let mut empty_polls = 0;
    let mut gathered = Gathered::default();
    // Messages are invisible for `sqsprocessingtime` from their receipt: gathering must end well
    // before that, or SQS hands them out again while they are still in hand.
    let max_gathering = Duration::from_secs(u64::from(p.settings.sqsprocessingtime) / 4);
    loop {
        if should_stop() {
            total.more = true;
            break;
        }
        let messages = retry(&p.retry, "receive", || queue.receive(&opts))?;
        hit("stage.after_receive")?;
        let empty = messages.is_empty();
        gathered.add(messages);
        // Stage once enough messages are gathered, as soon as the queue runs dry, or before their
        // invisibility runs out: one staged object per partition per batch, so a larger batch
        // means fewer PUTs and fuller compaction pieces.
        if !gathered.is_empty()
            && (empty
                || gathered.len() >= p.settings.stagebatch as usize
                || gathered.age() >= max_gathering)
        {
            let batch = ingest_batch(p, queue, &gathered.take())?;
            total.add(&batch);
            p.hooks.batch_done(&total);
        }
        if empty {
            empty_polls += 1;
            if empty_polls >= p.settings.emptypolls {
                break;
            }
        } else {
            empty_polls = 0;
        }
    }
    if !gathered.is_empty() {
        // Stopped (deadline) with messages in hand: stage them rather than let them time out.
        let batch = ingest_batch(p, queue, &gathered.take())?;
        total.add(&batch);
        p.hooks.batch_done(&total);
    }
    Ok(total)
}

/// Messages received over several polls, waiting to be staged together. A message received
/// again (redelivered) is kept once, with its newest receipt: only that one can delete it.
#[derive(Default)]
struct Gathered {
    messages: Vec<Message>,
    position: HashMap<String, usize>,
    since: Option<Instant>,
}

impl Gathered {
    fn add(&mut self, messages: Vec<Message>) {
        for m in messages {
            self.since.get_or_insert_with(Instant::now);
            match self.position.get(&m.id) {
                Some(&i) => self.messages[i] = m,
                None => {
                    self.position.insert(m.id.clone(), self.messages.len());
                    self.messages.push(m);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn age(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn take(&mut self) -> Vec<Message> {
        self.position.clear();
        self.since = None;
        std::mem::take(&mut self.messages)
    }
}

/// Ingests one batch of received messages (see the module docs for the order of writes).
pub fn ingest_batch(
    p: &Pipeline,
    queue: &dyn Queue,
    messages: &[Message],
) -> Result<StageSummary, PipelineError> {
    let mut summary = StageSummary {
        batches: 1,
        ..StageSummary::default()
    };
    let mut batch = Batch::default();
    let mut done_receipts = Vec::new();
    // A receive's worth of messages at a time: their mails are fetched together (concurrently on
    // S3), then handled one by one exactly as if each had been fetched alone.
    for chunk in messages.chunks(p.settings.pollmessages.max(1) as usize) {
        let bodies: Vec<Body> = chunk.iter().map(|m| parse_body(&m.body)).collect();
        batch.prefetched = prefetch(p, &bodies, &batch.handled);
        for (message, body) in chunk.iter().zip(bodies) {
            match ingest_message(p, message, body, &mut batch, &mut summary)? {
                MessageFate::Done => done_receipts.push(message.receipt.clone()),
                MessageFate::Foreign => summary.foreign += 1,
                MessageFate::Left => summary.left_for_retry += 1,
            }
        }
        batch.prefetched.clear();
    }
    write_batch(p, &mut batch, &mut summary)?;
    if p.settings.deletesqs && !done_receipts.is_empty() {
        retry(&p.retry, "delete messages", || queue.delete(&done_receipts))?;
        hit("stage.after_queue_delete")?;
        summary.deleted_messages = done_receipts.len() as u64;
    }
    Ok(summary)
}

/// Bytes of mail fetched ahead at once (by the sizes the events announce; a mail of unknown size
/// counts as `maxmailbytes`). At least one mail is always fetched, so this only bounds batching.
pub const PREFETCH_BYTES: u64 = 64 << 20;

/// First tries of the GETs of the mails `bodies` name, at most `pollmessages` of them and
/// [`PREFETCH_BYTES`], skipping mails already handled in this batch or too big to be read at all.
/// Mails left out are fetched one by one when handled.
fn prefetch(p: &Pipeline, bodies: &[Body], handled: &BTreeMap<MailId, MailFate>) -> Prefetched {
    let mut wanted: Vec<&MailRef> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut bytes = 0u64;
    let refs = bodies.iter().flat_map(|b| match b {
        Body::Mails(refs) => refs.as_slice(),
        Body::Ignore(_) | Body::Foreign(_) => &[],
    });
    for mail in refs {
        let id = mail_id(mail);
        let size = mail.size.unwrap_or(p.settings.maxmailbytes);
        if handled.contains_key(&id) || size > p.settings.maxmailbytes || !seen.insert(id) {
            continue;
        }
        if wanted.len() >= p.settings.pollmessages as usize
            || (!wanted.is_empty() && bytes + size > PREFETCH_BYTES)
        {
            break;
        }
        bytes += size;
        wanted.push(mail);
    }
    let mut by_bucket: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for mail in wanted {
        by_bucket.entry(&mail.bucket).or_default().push(&mail.key);
    }
    let mut prefetched = Prefetched::new();
    for (bucket, keys) in by_bucket {
        // A bucket that cannot be resolved is reported when its mails are handled.
        let Ok(store) = p.mail_store(bucket) else {
            continue;
        };
        for (key, result) in keys.iter().zip(store.get_many(&keys)) {
            prefetched.insert((bucket.to_string(), key.to_string()), result);
        }
    }
    prefetched
}

/// (bucket, key) of a mail.
type MailId = (String, String);

fn mail_id(mail: &MailRef) -> MailId {
    (mail.bucket.clone(), mail.key.clone())
}

/// First GET results of mails fetched ahead, by mail.
type Prefetched = HashMap<MailId, Result<Option<Vec<u8>>, StoreError>>;

/// Everything one batch accumulates before it is written.
#[derive(Default)]
struct Batch {
    /// Staged rows per partition, compressed as they arrive.
    partitions: BTreeMap<String, StagedBuilder>,
    mails: Vec<LedgerMail>,
    /// Fate of each mail already handled in this batch (a message delivered twice in one batch).
    handled: BTreeMap<MailId, MailFate>,
    /// Mails fetched ahead for the messages being handled.
    prefetched: Prefetched,
}

/// What to do with a message once its mails were handled.
enum MessageFate {
    /// Its mails are staged, quarantined or gone (or it named none): delete it.
    Done,
    /// Not understood: leave it for redelivery and, in the end, the DLQ.
    Foreign,
    /// A mail could not be read: leave it for redelivery.
    Left,
}

/// Handles every mail a message names.
fn ingest_message(
    p: &Pipeline,
    message: &Message,
    body: Body,
    batch: &mut Batch,
    summary: &mut StageSummary,
) -> Result<MessageFate, PipelineError> {
    let refs = match body {
        Body::Mails(refs) => refs,
        Body::Ignore(why) => {
            tracing::info!(message = %message.id, "ignoring message: {why}");
            summary.ignored += 1;
            return Ok(MessageFate::Done);
        }
        Body::Foreign(why) => {
            tracing::warn!(message = %message.id, receive_count = message.receive_count,
                "foreign message left for redelivery/DLQ: {why}");
            return Ok(MessageFate::Foreign);
        }
    };
    let mut fate = MessageFate::Done;
    for mail in refs {
        let id = mail_id(&mail);
        if batch.handled.contains_key(&id) {
            continue;
        }
        match ingest_mail(p, &mail, batch, summary) {
            Ok(mail_fate) => {
                batch.handled.insert(id, mail_fate);
            }
            // The mail's storage failing (after retries) leaves the message; others go on.
            Err(MailFailure::Leave(e)) => {
                tracing::warn!(bucket = %mail.bucket, key = %mail.key, "mail left for retry: {e}");
                fate = MessageFate::Left;
            }
            Err(MailFailure::Batch(e)) => return Err(e),
        }
    }
    Ok(fate)
}

/// Why a mail was not handled: `Leave` its message for redelivery, or fail the whole `Batch`
/// (its staged rows may be incomplete).
enum MailFailure {
    Leave(PipelineError),
    Batch(PipelineError),
}

impl From<PipelineError> for MailFailure {
    fn from(e: PipelineError) -> Self {
        MailFailure::Leave(e)
    }
}

impl From<super::failpoint::FailpointError> for MailFailure {
    fn from(e: super::failpoint::FailpointError) -> Self {
        MailFailure::Leave(e.into())
    }
}

impl From<super::store::StoreError> for MailFailure {
    fn from(e: super::store::StoreError) -> Self {
        MailFailure::Leave(e.into())
    }
}

fn ingest_mail(
    p: &Pipeline,
    mail: &MailRef,
    batch: &mut Batch,
    summary: &mut StageSummary,
) -> Result<MailFate, MailFailure> {
    let store = p.mail_store(&mail.bucket)?;
    if let Some(size) = mail.size.filter(|s| *s > p.settings.maxmailbytes) {
        // Never read: only the reason is quarantined, the mail stays where it is.
        let reasons = [Skipped {
            location: String::new(),
            reason: SkipReason::LimitExceeded {
                limit: "max_mail_bytes".into(),
                value: size,
                max: p.settings.maxmailbytes,
            },
        }];
        summary.mails += 1;
        quarantine(p, &*store, mail, None, &reasons, summary)?;
        record(batch, mail, MailFate::Quarantined, 0, 0, reasons.to_vec());
        return Ok(MailFate::Quarantined);
    }
    let bytes = match batch.prefetched.remove(&mail_id(mail)) {
        Some(first) => retry_after(&p.retry, "get mail", first, || store.get(&mail.key))?,
        None => retry(&p.retry, "get mail", || store.get(&mail.key))?,
    };
    hit("stage.after_get_mail")?;
    let Some(bytes) = bytes else {
        tracing::info!(bucket = %mail.bucket, key = %mail.key, "mail already gone (archived earlier)");
        summary.gone += 1;
        record(batch, mail, MailFate::Gone, 0, 0, Vec::new());
        return Ok(MailFate::Gone);
    };
    summary.mails += 1;
    // Rows go straight into the batch's partitions (one compressor per partition, not per mail).
    let mut sink = MailSink::new(mail, &mut batch.partitions, p.settings.stagecompression);
    let outcome =
        parse_mail(&bytes, &mail.key, &p.settings.parse_options(), &mut sink).map_err(|e| {
            MailFailure::Batch(PipelineError::Transient(format!(
                "staging rows of {}: {e}",
                mail.key
            )))
        })?;
    let (reports, rows) = (sink.reports, sink.rows);
    let mut skipped = outcome.skipped;
    skipped.extend(sink.refused);
    if reports == 0 {
        quarantine(p, &*store, mail, Some(&bytes), &skipped, summary)?;
        record(batch, mail, MailFate::Quarantined, 0, 0, skipped);
        return Ok(MailFate::Quarantined);
    }
    for s in skipped
        .iter()
        .chain(outcome.reports.iter().flat_map(|r| &r.problems))
    {
        tracing::info!(key = %mail.key, code = s.reason.code(), "skipped: {s}");
        *summary
            .skipped_by_reason
            .entry(s.reason.code().into())
            .or_default() += 1;
        p.hooks.skipped(mail, s);
    }
    summary.reports += reports;
    summary.rows += rows;
    record(batch, mail, MailFate::Staged, reports, rows, skipped);
    Ok(MailFate::Staged)
}

fn record(
    batch: &mut Batch,
    mail: &MailRef,
    fate: MailFate,
    reports: u64,
    rows: u64,
    skipped: Vec<Skipped>,
) {
    batch.mails.push(LedgerMail {
        mail: mail.clone(),
        fate,
        reports,
        rows,
        skipped,
    });
}

/// Sidecar first, then the mail's bytes, then (AWS) the original: a crash leaves at worst a copy.
/// Without bytes (a mail too big to read) only the sidecar is written and the original stays.
fn quarantine(
    p: &Pipeline,
    store: &dyn ObjectStore,
    mail: &MailRef,
    bytes: Option<&[u8]>,
    reasons: &[Skipped],
    summary: &mut StageSummary,
) -> Result<(), PipelineError> {
    let now = p.now();
    let day = yyyymmdd(now);
    let code = reasons
        .first()
        .map(|s| s.reason.code().to_string())
        .unwrap_or_else(|| "no_report".into());
    let sidecar = QuarantineReason {
        mail: mail.clone(),
        quarantined_at: crate::model::utc_datetime(now),
        code: code.clone(),
        reasons: reasons.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&sidecar)
        .map_err(|e| PipelineError::Permanent(format!("quarantine sidecar: {e}")))?;
    let reason_key = p.layout.quarantine_reason_key(&day, &mail.key);
    retry(&p.retry, "put quarantine reason", || {
        p.data.put(&reason_key, &json)
    })?;
    hit("stage.after_quarantine_reason_put")?;
    let key = p.layout.quarantine_key(&day, &mail.key);
    if let Some(bytes) = bytes {
        retry(&p.retry, "put quarantined mail", || p.data.put(&key, bytes))?;
        hit("stage.after_quarantine_mail_put")?;
    }
    if p.quarantine_removes_source && bytes.is_some() {
        retry(&p.retry, "delete quarantined source", || {
            store.delete(&mail.key)
        })?;
        hit("stage.after_quarantine_source_delete")?;
    }
    let reasons_text: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    tracing::info!(key = %mail.key, quarantine = %key, code = %code,
        "quarantined: {}", reasons_text.join("; "));
    summary.quarantined += 1;
    *summary.quarantined_by_reason.entry(code).or_default() += 1;
    p.hooks.quarantined(mail, reasons);
    Ok(())
}

/// Staged objects (one per partition), then the ledger.
fn write_batch(
    p: &Pipeline,
    batch: &mut Batch,
    summary: &mut StageSummary,
) -> Result<(), PipelineError> {
    let recorded: BTreeSet<&MailRef> = batch
        .mails
        .iter()
        .filter(|m| m.fate != MailFate::Gone)
        .map(|m| &m.mail)
        .collect();
    if recorded.is_empty() {
        return Ok(());
    }
    let id = batch_id(recorded);
    let mut staged_keys = Vec::new();
    for (partition, builder) in std::mem::take(&mut batch.partitions) {
        let key = p.layout.staged_key(&partition, &id);
        let body = builder
            .finish(&id, &partition)
            .map_err(|e| PipelineError::Permanent(format!("building {key}: {e}")))?;
        retry(&p.retry, "put staged rows", || p.data.put(&key, &body))?;
        hit("stage.after_staged_put")?;
        summary.staged_objects += 1;
        staged_keys.push(key);
    }
    let ledger = Ledger {
        v: 1,
        batch: id.clone(),
        day: Some(yyyymmdd(p.now())),
        staged: staged_keys,
        mails: std::mem::take(&mut batch.mails),
    };
    let json = serde_json::to_vec(&ledger)
        .map_err(|e| PipelineError::Permanent(format!("ledger: {e}")))?;
    let key = p.layout.ledger_key(&id);
    retry(&p.retry, "put ledger", || p.data.put(&key, &json))?;
    hit("stage.after_ledger_put")?;
    Ok(())
}

/// Hash of the batch's mails (bucket, key, etag, size), sorted: a retried identical batch
/// overwrites its own staged objects instead of adding new ones.
fn batch_id<'a>(mails: impl IntoIterator<Item = &'a MailRef>) -> String {
    let parts = mails.into_iter().flat_map(|m| {
        [
            m.bucket.clone(),
            m.key.clone(),
            m.etag.clone().unwrap_or_default(),
            m.size.map(|s| s.to_string()).unwrap_or_default(),
        ]
    });
    hash_parts(parts, 16)
}

/// Puts one mail's rows into the batch's partitions (report begin date), counting them.
struct MailSink<'a> {
    mail: MailRef,
    parts: &'a mut BTreeMap<String, StagedBuilder>,
    /// gzip level of new staged objects (`-stagecompression`).
    compression: u32,
    current: Current,
    /// Reports staged (a report with zero rows counts: it must still be deduplicated).
    reports: u64,
    rows: u64,
    /// Reports refused here (a begin date no partition can hold), with why.
    refused: Vec<Skipped>,
}

/// The report whose rows are arriving.
enum Current {
    None,
    Staged(String),
    /// Its rows are dropped (the refusal is recorded once).
    Refused,
}

impl<'a> MailSink<'a> {
    fn new(
        mail: &MailRef,
        parts: &'a mut BTreeMap<String, StagedBuilder>,
        compression: u32,
    ) -> Self {
        MailSink {
            mail: MailRef {
                bucket: mail.bucket.clone(),
                key: mail.key.clone(),
                etag: None,
                size: None,
            },
            parts,
            compression,
            current: Current::None,
            reports: 0,
            rows: 0,
            refused: Vec::new(),
        }
    }

    /// Starts staging a report, unless its begin date gives no `YYYY-MM-DD` partition (years
    /// before 0 or after 9999: hostile or broken input that would otherwise stay in staging).
    fn start(&mut self, location: &str, identity: ReportIdentity) -> Current {
        let partition = identity.partition();
        if !is_partition(&partition) {
            self.refused.push(Skipped {
                location: location.to_string(),
                reason: SkipReason::ReportUnusable {
                    detail: format!("begin date {} is out of range", identity.begin),
                },
            });
            return Current::Refused;
        }
        self.parts
            .entry(partition.clone())
            .or_insert_with(|| StagedBuilder::with_level(Compression::new(self.compression)))
            .begin_report(identity, self.mail.clone());
        self.reports += 1;
        Current::Staged(partition)
    }
}

impl ReportSink for MailSink<'_> {
    fn begin_report(&mut self, location: &str, meta: &ReportMeta) {
        self.current = self.start(location, ReportIdentity::of(meta));
    }

    fn row(&mut self, row: &RowView<'_>) -> std::io::Result<()> {
        if matches!(self.current, Current::None) {
            self.current = self.start("", ReportIdentity::of(row.meta));
        }
        let Current::Staged(partition) = &self.current else {
            return Ok(());
        };
        let builder = self
            .parts
            .get_mut(partition)
            .ok_or_else(|| std::io::Error::other("row of an unknown partition"))?;
        builder.push_row(COLUMNS.iter().map(|c| (c.value)(row)))?;
        self.rows += 1;
        Ok(())
    }

    fn end_report(&mut self, summary: &ReportSummary) {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::Staged(partition) => {
                // The parser's final identity, unless it would belong to another partition.
                if summary.identity.partition() == partition
                    && let Some(builder) = self.parts.get_mut(&partition)
                {
                    builder.set_identity(summary.identity.clone());
                }
            }
            Current::Refused => {}
            // A report announced only at its end (no rows): still staged, so it is deduplicated.
            Current::None => {
                self.start(&summary.location, summary.identity.clone());
            }
        }
    }
}
