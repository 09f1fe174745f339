//! Archive: once every staged object of a batch has been compacted (consumed), archive the batch's
//! mails under the `-move` prefix, then drop the ledger. Two formats (`-archiveformat`):
//!
//! - `mail` (the seed's): each mail copied to `<move>/<YYYYMMDD>/<key>` (UTC run date), then
//!   deleted. Copy first, delete second: a missing source with the target present means the move
//!   was already done. One S3 COPY per mail.
//! - `mbox`: the batch's mails GET and written as ONE gzipped mbox,
//!   `<move>/<YYYYMMDD>/<batch>.mbox.gz` (the day the batch was staged, from its ledger), then
//!   deleted. One GET per mail and one PUT per batch instead of a COPY per mail.
//!
//! Bundles are crash-safe the same way: the bundle is written only if it does not exist yet (if it
//! does, an earlier attempt died after writing it: go straight to the deletes), and a mail is
//! deleted only after a bundle holding it exists. So a mail missing while bundling was archived by
//! a bundle already (another ledger naming the same mail, after an SQS redelivery): it is logged
//! and left out. A bundle whose gzip output passes [`Pipeline::bundle_part_bytes`] is split into
//! `<batch>.part1.mbox.gz`, `<batch>.part2.mbox.gz`, … and `<batch>.mbox.gz` holding the last
//! mails; that one is written last, so its presence means the whole bundle is there.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Pipeline;
use super::error::PipelineError;
use super::events::MailRef;
use super::failpoint::hit;
use super::layout::{archive_key, hash_parts, yyyymmdd};
use super::mbox::MboxWriter;
use super::retry::{retry, retry_after};
use super::settings::ArchiveFormat;
use super::stage::{Ledger, MailFate};
use super::store::ObjectStore;
use super::summary::ArchiveSummary;

/// Ledgers handled by one call (each may move up to `stagebatch` mails).
pub const MAX_LEDGERS_PER_CALL: usize = 200;

/// Default gzip size at which a bundle starts a new part: bounds what a worker holds in memory
/// (one part plus one fetch of mails) whatever the batch size.
pub const BUNDLE_PART_BYTES: u64 = 64 << 20;

/// Mails fetched at once (concurrently on S3) while bundling, and the bytes they may announce.
const BUNDLE_FETCH_MAILS: usize = 16;
const BUNDLE_FETCH_BYTES: u64 = 64 << 20;

/// Handles finished batches until done, [`MAX_LEDGERS_PER_CALL`], or `should_stop` (then `more`).
pub fn archive(
    p: &Pipeline,
    should_stop: &dyn Fn() -> bool,
) -> Result<ArchiveSummary, PipelineError> {
    let prefix = p.layout.ledger_prefix();
    let ledgers = retry(&p.retry, "list ledgers", || p.data.list(&prefix))?;
    let mut summary = ArchiveSummary::default();
    let mut ready = Vec::new();
    for obj in &ledgers {
        if ready.len() >= MAX_LEDGERS_PER_CALL || should_stop() {
            summary.more = true;
            break;
        }
        if let Some(ledger) = read_ready_ledger(p, &obj.key, &mut summary)? {
            ready.push((obj.key.as_str(), ledger));
        }
    }
    let mut jobs = Vec::new();
    for (key, ledger) in ready {
        match plan_ledger(p, key, ledger)? {
            Some(job) => jobs.push(job),
            None => summary.unreadable += 1,
        }
    }
    // Ledgers whose bundle is already written go first: their mails may have been staged again
    // under another ledger (local mode finds the unmoved inputs again; SQS may redeliver), and
    // deleting them now keeps that other ledger from bundling them a second time.
    jobs.sort_by_key(|job| !job.resumes());
    for job in jobs {
        if should_stop() {
            summary.more = true;
            break;
        }
        job.run(p, &mut summary)?;
    }
    p.hooks.archived(&summary);
    Ok(summary)
}

/// The ledger at `key` if all its staged objects are consumed; counts unreadable and waiting ones.
fn read_ready_ledger(
    p: &Pipeline,
    key: &str,
    summary: &mut ArchiveSummary,
) -> Result<Option<Ledger>, PipelineError> {
    let Some(bytes) = retry(&p.retry, "get ledger", || p.data.get(key))? else {
        return Ok(None);
    };
    // An unreadable ledger only delays archiving of its mails: report it, go on with others.
    let ledger: Ledger = match serde_json::from_slice(&bytes) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(key = %key, "unreadable ledger left in place: {e}");
            summary.unreadable += 1;
            return Ok(None);
        }
    };
    if !all_consumed(p, &ledger)? {
        summary.waiting += 1;
        return Ok(None);
    }
    Ok(Some(ledger))
}

/// One ledger to archive, with its bundles planned (mbox) and whether they were written already.
struct LedgerJob<'a> {
    key: &'a str,
    ledger: Ledger,
    bundles: Vec<PlannedBundle>,
}

struct PlannedBundle {
    bundle: Bundle,
    source: Arc<dyn ObjectStore>,
    mails: Vec<MailRef>,
    /// The final part exists: an earlier attempt wrote the bundle; only the deletes remain.
    written: bool,
}

/// Plans a ledger's archiving; `None` when its bundle day is unusable (left in place, reported).
fn plan_ledger<'a>(
    p: &Pipeline,
    key: &'a str,
    ledger: Ledger,
) -> Result<Option<LedgerJob<'a>>, PipelineError> {
    let mut bundles = Vec::new();
    if p.moves_mails() && p.settings.archiveformat == ArchiveFormat::Mbox {
        let Some(day) = bundle_day(p, key, &ledger)? else {
            return Ok(None);
        };
        bundles = plan_bundles(p, &ledger, &day)?;
    }
    Ok(Some(LedgerJob {
        key,
        ledger,
        bundles,
    }))
}

impl LedgerJob<'_> {
    fn resumes(&self) -> bool {
        self.bundles.iter().any(|b| b.written)
    }

    fn run(self, p: &Pipeline, summary: &mut ArchiveSummary) -> Result<(), PipelineError> {
        summary.quarantined += self
            .ledger
            .mails
            .iter()
            .filter(|m| m.fate == MailFate::Quarantined)
            .count() as u64;
        if p.moves_mails() {
            match p.settings.archiveformat {
                ArchiveFormat::Mail => move_mails(p, &self.ledger, summary)?,
                ArchiveFormat::Mbox => {
                    for planned in &self.bundles {
                        planned.run(p, summary)?;
                    }
                }
            }
        }
        retry(&p.retry, "delete ledger", || p.data.delete(self.key))?;
        hit("archive.after_ledger_delete")?;
        summary.ledgers += 1;
        Ok(())
    }
}

fn all_consumed(p: &Pipeline, ledger: &Ledger) -> Result<bool, PipelineError> {
    for key in &ledger.staged {
        if retry(&p.retry, "check staged", || p.data.exists(key))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The mails of a ledger that reached staging (quarantined ones were moved at stage time).
fn staged_mails(ledger: &Ledger) -> impl Iterator<Item = &MailRef> {
    ledger
        .mails
        .iter()
        .filter(|m| m.fate == MailFate::Staged)
        .map(|m| &m.mail)
}

fn move_mails(
    p: &Pipeline,
    ledger: &Ledger,
    summary: &mut ArchiveSummary,
) -> Result<(), PipelineError> {
    for mail in staged_mails(ledger) {
        if move_mail(p, mail)? {
            summary.moved += 1;
        }
    }
    Ok(())
}

/// Moves one mail; `Ok(false)` when it was already moved (or is gone).
fn move_mail(p: &Pipeline, mail: &MailRef) -> Result<bool, PipelineError> {
    let source = p.mail_store(&mail.bucket)?;
    let target = archive_key(&p.settings.move_prefix, &yyyymmdd(p.now()), &mail.key);
    let copied = match &p.move_store {
        // Another store (local `--move DIR`): read and write.
        Some(dest) => match retry(&p.retry, "get mail to move", || source.get(&mail.key))? {
            Some(bytes) => {
                retry(&p.retry, "put moved mail", || dest.put(&target, &bytes))?;
                true
            }
            None => false,
        },
        None => retry(&p.retry, "copy mail", || source.copy(&mail.key, &target))?,
    };
    if !copied {
        let dest = p.move_store.clone().unwrap_or_else(|| source.clone());
        if !retry(&p.retry, "check moved mail", || dest.exists(&target))? {
            tracing::warn!(key = %mail.key, "mail to archive is gone and not in the archive");
        }
        return Ok(false);
    }
    hit("archive.after_copy")?;
    retry(&p.retry, "delete moved mail", || source.delete(&mail.key))?;
    hit("archive.after_source_delete")?;
    tracing::info!(key = %mail.key, to = %target, "mail archived");
    Ok(true)
}

/// The `YYYYMMDD` folder of a ledger's bundle: the day it was staged. A ledger of an older version
/// has none: today is written into it first, so every later attempt names the same bundle even
/// after midnight. `None` for a day that is not `YYYYMMDD` (the ledger is left and reported).
fn bundle_day(
    p: &Pipeline,
    ledger_key: &str,
    ledger: &Ledger,
) -> Result<Option<String>, PipelineError> {
    if let Some(day) = &ledger.day {
        if day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Some(day.clone()));
        }
        tracing::error!(key = %ledger_key, day = %day, "ledger with a bad day left in place");
        return Ok(None);
    }
    let day = yyyymmdd(p.now());
    let pinned = Ledger {
        day: Some(day.clone()),
        ..ledger.clone()
    };
    let json = serde_json::to_vec(&pinned)
        .map_err(|e| PipelineError::Permanent(format!("ledger {ledger_key}: {e}")))?;
    retry(&p.retry, "pin ledger day", || p.data.put(ledger_key, &json))?;
    Ok(Some(day))
}

/// Where one bundle's parts go.
struct Bundle {
    store: Arc<dyn ObjectStore>,
    move_prefix: String,
    day: String,
    name: String,
}

impl Bundle {
    /// The final part (`None`: `<name>.mbox.gz`) or part `n` of a split bundle.
    fn key(&self, part: Option<u32>) -> String {
        let file = match part {
            None => format!("{}.mbox.gz", self.name),
            Some(n) => format!("{}.part{n}.mbox.gz", self.name),
        };
        archive_key(&self.move_prefix, &self.day, &file)
    }
}

/// The ledger's bundles (one per mail bucket; one bucket is the usual case), each with whether it
/// was written already.
fn plan_bundles(
    p: &Pipeline,
    ledger: &Ledger,
    day: &str,
) -> Result<Vec<PlannedBundle>, PipelineError> {
    let mut by_bucket: BTreeMap<&str, Vec<MailRef>> = BTreeMap::new();
    for mail in staged_mails(ledger) {
        by_bucket
            .entry(&mail.bucket)
            .or_default()
            .push(mail.clone());
    }
    let several = by_bucket.len() > 1;
    let mut planned = Vec::new();
    for (bucket, mails) in by_bucket {
        let source = p.mail_store(bucket)?;
        // Names only depend on the ledger, so every attempt targets the same keys.
        let name = if several {
            format!("{}-{}", ledger.batch, hash_parts([bucket], 4))
        } else {
            ledger.batch.clone()
        };
        let bundle = Bundle {
            store: p.move_store.clone().unwrap_or_else(|| source.clone()),
            move_prefix: p.settings.move_prefix.clone(),
            day: day.to_string(),
            name,
        };
        let complete = bundle.key(None);
        let written = retry(&p.retry, "check bundle", || bundle.store.exists(&complete))?;
        planned.push(PlannedBundle {
            bundle,
            source,
            mails,
            written,
        });
    }
    Ok(planned)
}

impl PlannedBundle {
    /// Writes the bundle unless it was written already, then deletes its mails.
    fn run(&self, p: &Pipeline, summary: &mut ArchiveSummary) -> Result<(), PipelineError> {
        if self.written {
            tracing::info!(bundle = %self.bundle.key(None), "bundle already written: deleting its mails");
        } else {
            let mails: Vec<&MailRef> = self.mails.iter().collect();
            write_bundle(p, &*self.source, &self.bundle, &mails, summary)?;
        }
        for mail in &self.mails {
            retry(&p.retry, "delete archived mail", || {
                self.source.delete(&mail.key)
            })?;
            hit("archive.after_source_delete")?;
        }
        Ok(())
    }
}

/// GETs the mails (a bounded group at a time) into the bundle's parts and writes them, the final
/// part last. A mail already gone is left out (an earlier bundle holds it).
fn write_bundle(
    p: &Pipeline,
    source: &dyn ObjectStore,
    bundle: &Bundle,
    mails: &[&MailRef],
    summary: &mut ArchiveSummary,
) -> Result<(), PipelineError> {
    let mut writer = MboxWriter::new();
    let mut parts = 0u32;
    let mut bundled = 0u64;
    for group in fetch_groups(mails, p.settings.maxmailbytes) {
        let keys: Vec<&str> = group.iter().map(|m| m.key.as_str()).collect();
        for (mail, first) in group.iter().zip(source.get_many(&keys)) {
            let got = retry_after(&p.retry, "get mail to archive", first, || {
                source.get(&mail.key)
            })?;
            let Some(bytes) = got else {
                tracing::warn!(key = %mail.key,
                    "mail to archive is gone: an earlier bundle holds it, left out of this one");
                continue;
            };
            writer.append(&bytes).map_err(bundle_error)?;
            bundled += 1;
            // The bundle keeps the bytes, not the key: this line is where a mail can be found again.
            tracing::info!(key = %mail.key, bundle = %bundle.key(None), "mail archived");
            if writer.compressed_len() >= p.bundle_part_bytes {
                parts += 1;
                let body = std::mem::take(&mut writer).finish().map_err(bundle_error)?;
                put_part(p, bundle, Some(parts), &body)?;
                summary.bundles += 1;
            }
        }
    }
    // Parts an earlier attempt wrote beyond ours hold mails twice; with no mail left at all, every
    // part it wrote does (its mails were bundled under another ledger since).
    drop_stale_parts(p, bundle, parts + 1)?;
    if bundled == 0 {
        tracing::warn!(bundle = %bundle.key(None), "every mail of the bundle is gone: none written");
        return Ok(());
    }
    let body = writer.finish().map_err(bundle_error)?;
    put_part(p, bundle, None, &body)?;
    summary.bundles += 1;
    summary.moved += bundled;
    tracing::info!(bundle = %bundle.key(None), mails = bundled, parts = parts + 1, "mails archived");
    Ok(())
}

fn put_part(
    p: &Pipeline,
    bundle: &Bundle,
    part: Option<u32>,
    body: &[u8],
) -> Result<(), PipelineError> {
    let key = bundle.key(part);
    retry(&p.retry, "put bundle", || bundle.store.put(&key, body))?;
    hit("archive.after_bundle_put")?;
    Ok(())
}

/// Parts numbered from `first` on, left by an attempt that died before its final part and that
/// had more mails to split (some mails went missing since): they would hold mails twice. Deleted
/// before the final part is written, since that one marks the bundle complete.
fn drop_stale_parts(p: &Pipeline, bundle: &Bundle, first: u32) -> Result<(), PipelineError> {
    let mut part = first;
    loop {
        let key = bundle.key(Some(part));
        if !retry(&p.retry, "check stale part", || bundle.store.exists(&key))? {
            return Ok(());
        }
        tracing::warn!(key = %key, "stale bundle part of an earlier attempt deleted");
        retry(&p.retry, "delete stale part", || bundle.store.delete(&key))?;
        part += 1;
    }
}

/// Groups of at most [`BUNDLE_FETCH_MAILS`] mails announcing at most [`BUNDLE_FETCH_BYTES`] (a
/// mail of unknown size counts as `max_mail_bytes`); never empty.
fn fetch_groups<'a>(mails: &[&'a MailRef], max_mail_bytes: u64) -> Vec<Vec<&'a MailRef>> {
    let mut groups: Vec<Vec<&MailRef>> = Vec::new();
    let mut current: Vec<&MailRef> = Vec::new();
    let mut bytes = 0u64;
    for mail in mails {
        let size = mail.size.unwrap_or(max_mail_bytes);
        if !current.is_empty()
            && (current.len() >= BUNDLE_FETCH_MAILS || bytes + size > BUNDLE_FETCH_BYTES)
        {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(mail);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn bundle_error(e: std::io::Error) -> PipelineError {
    // Compressing into memory only fails when memory does: retrying elsewhere may succeed.
    PipelineError::Transient(format!("writing an archive bundle: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(key: &str, size: Option<u64>) -> MailRef {
        MailRef {
            bucket: "b".into(),
            key: key.into(),
            etag: None,
            size,
        }
    }

    #[test]
    fn fetch_groups_bound_count_and_announced_bytes() {
        let many: Vec<MailRef> = (0..40).map(|i| mail(&i.to_string(), Some(10))).collect();
        let refs: Vec<&MailRef> = many.iter().collect();
        let sizes: Vec<usize> = fetch_groups(&refs, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![16, 16, 8]);
        let big: Vec<MailRef> = vec![
            mail("a", Some(40 << 20)),
            mail("b", Some(40 << 20)),
            mail("c", None),
            mail("d", Some(1)),
        ];
        let refs: Vec<&MailRef> = big.iter().collect();
        let sizes: Vec<usize> = fetch_groups(&refs, 64 << 20).iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            vec![1, 1, 1, 1],
            "unknown size counts as the largest mail"
        );
    }
}
